"""Composition root of the links service."""

from contracts.events import EventRegistry
from runtime.service import ServiceDefinition

definition = ServiceDefinition(
    name="links",
    default_port=8102,
    events=EventRegistry("links"),
    description=(
        "Every join link: token hashes, kinds, windows and states; decides who may join now."
    ),
)
