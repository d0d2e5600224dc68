"""Composition root of the scheduling service."""

from contracts.events import EventRegistry
from runtime.service import ServiceDefinition

definition = ServiceDefinition(
    name="scheduling",
    default_port=8101,
    events=EventRegistry("scheduling"),
    description="Clinics, practitioners, clients, rooms, sessions and invitees: who and when.",
)
