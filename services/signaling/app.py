"""Composition root of the signaling service."""

from contracts.events import EventRegistry
from runtime.service import ServiceDefinition

definition = ServiceDefinition(
    name="signaling",
    default_port=8103,
    events=EventRegistry("signaling"),
    description=(
        "WebSocket endpoint for browsers: waiting rooms, admissions, presence, host controls."
    ),
)
