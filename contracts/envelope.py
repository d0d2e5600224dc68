"""What travels on NATS: an event with the facts every consumer needs around it."""

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.ids import ClinicId, ServiceName

SUBJECT_ROOT = "antechamber"
P = TypeVar("P")


class EventEnvelope(BaseModel, Generic[P]):
    """One event as published to ``antechamber.<clinic_id>.<service>.<type>``.

    The W3C trace context travels in the NATS headers (``traceparent``), and the header
    ``Nats-Msg-Id`` equals ``event_id``, so a republished event is recognised as a duplicate.
    """

    model_config = ConfigDict(frozen=True)

    event_id: UUID = Field(description="Unique id of this event; also the Nats-Msg-Id header.")
    type: str = Field(
        description="Event type, e.g. SessionScheduled.", examples=["SessionScheduled"]
    )
    schema_version: int = Field(ge=1, description="Version of the payload's schema.")
    service: ServiceName = Field(description="Service whose store holds the event.")
    clinic_id: ClinicId
    stream_id: str = Field(description="Aggregate the event belongs to, e.g. session-<uuid>.")
    version: int = Field(ge=1, description="Position of the event within its stream.")
    position: int = Field(
        ge=1, description="Position in the owning service's store (commit order)."
    )
    occurred_at: datetime = Field(description="When the event was recorded (UTC).")
    correlation_id: UUID = Field(description="Shared by every event that one user action caused.")
    causation_id: UUID | None = Field(
        default=None, description="The event (or request) that directly caused this one."
    )
    data: P = Field(description="The event's payload, shaped by `type` and `schema_version`.")


RawEnvelope = EventEnvelope[dict[str, Any]]


def event_subject(clinic_id: str, service: str, event_type: str) -> str:
    return f"{SUBJECT_ROOT}.{clinic_id}.{service}.{event_type}"


def service_subjects(service: str) -> str:
    """The wildcard that one service's stream captures."""
    return f"{SUBJECT_ROOT}.*.{service}.>"
