"""JetStream streams: one per service, plus one for dead letters."""

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.deadletter import deadletter_subject
from contracts.envelope import service_subjects
from contracts.links import links_events
from contracts.media import media_events
from contracts.notify import notify_events
from contracts.scheduling import scheduling_events
from contracts.signaling import signaling_events

DEADLETTER_STREAM = "ANTECHAMBER_DEADLETTER"
DUPLICATE_WINDOW_S = 120.0

PUBLISHERS = tuple(
    registry.service
    for registry in (scheduling_events, links_events, signaling_events, media_events, notify_events)
)
"""Every service that publishes events (its contracts have an event registry), each into a
stream of its own: what an integrator reads."""


def stream_name(service: str) -> str:
    return f"ANTECHAMBER_{service.upper()}"


EVENT_STREAMS = tuple(stream_name(service) for service in PUBLISHERS)
"""The streams of :data:`PUBLISHERS`, in the same order."""


def service_stream(service: str, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=stream_name(service),
        description=f"Events of the {service} service (re-fillable from its Postgres store).",
        subjects=[service_subjects(service)],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def deadletter_stream(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=DEADLETTER_STREAM,
        description="Messages consumers gave up on, with the reason.",
        subjects=[deadletter_subject("*")],
        storage=StorageType.FILE,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it to this config (idempotent, safe to race)."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except Exception:  # another process created it first
            await js.stream_info(config.name)
    await js.update_stream(config)
