"""JetStream streams: one per service, plus one for dead letters."""

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.deadletter import deadletter_subject
from contracts.envelope import service_subjects

DEADLETTER_STREAM = "ANTECHAMBER_DEADLETTER"
DUPLICATE_WINDOW_S = 120.0


def stream_name(service: str) -> str:
    return f"ANTECHAMBER_{service.upper()}"


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
