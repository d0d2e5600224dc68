"""Composition root of the notify service."""

from contracts.events import EventRegistry
from runtime.service import ServiceDefinition

definition = ServiceDefinition(
    name="notify",
    default_port=8105,
    events=EventRegistry("notify"),
    description="Invitations, reminders, clinic templates and the delivery log.",
)
