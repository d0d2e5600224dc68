"""Composition root of the media service."""

from contracts.events import EventRegistry
from runtime.service import ServiceDefinition

definition = ServiceDefinition(
    name="media",
    default_port=8104,
    events=EventRegistry("media"),
    description="SFU nodes, room placement, the seat cap and recordings.",
)
