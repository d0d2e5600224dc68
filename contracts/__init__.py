"""Models that cross a service boundary: events, their envelope, and NATS subjects.

Integrators depend on these shapes; change them only by adding a schema version and an
upcaster (see :class:`contracts.events.EventRegistry`).
"""

from contracts.deadletter import DeadLetter
from contracts.envelope import EventEnvelope, event_subject, service_subjects
from contracts.events import Event, EventRegistry, UnknownEventError
from contracts.ids import ClinicId
from contracts.personal import PERSONAL_DATA_KEY, personal_data, personal_fields

__all__ = [
    "PERSONAL_DATA_KEY",
    "ClinicId",
    "DeadLetter",
    "Event",
    "EventEnvelope",
    "EventRegistry",
    "UnknownEventError",
    "event_subject",
    "personal_data",
    "personal_fields",
    "service_subjects",
]
