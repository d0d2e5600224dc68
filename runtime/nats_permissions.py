"""What each service's NATS user may publish and subscribe to: least privilege, derived.

A service's allow-lists come from what its definition already declares: the events it
publishes (its own stream), the streams it consumes (its durable consumers by name), the RPC
subjects it serves (``rpc.<service>.>``) and the ones it calls, its KV buckets and the few core
subjects of its own (:class:`BusAccess`). Replies reach it on an inbox prefix of its own
(``_INBOX_<service>``), so no service can read another's replies; answering a request is
allowed by the server's response permission, not by a publish right to every inbox.

Nothing here is enforced by us: nats-server enforces the lists in the user JWT that
:mod:`runtime.nats_auth` signs from them.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts.deadletter import deadletter_subject
from contracts.envelope import service_subjects
from runtime.streams import DEADLETTER_STREAM, EVENT_STREAMS, stream_name

JS_API = "$JS.API"


def inbox_prefix(user: str) -> str:
    """Where replies to ``user``'s requests arrive: ``_INBOX_<user>``, readable by it alone."""
    return f"_INBOX_{user}"


@dataclass(frozen=True)
class BusAccess:
    """A service's NATS traffic beyond its events, consumers and served RPC endpoints."""

    calls: tuple[str, ...] = ()
    """RPC subjects it requests (``*`` for one token)."""
    publishes: tuple[str, ...] = ()
    """Core subjects it publishes to (not events: those go through its stream)."""
    subscribes: tuple[str, ...] = ()
    """Core subjects it subscribes to besides its inbox and its RPC subjects."""
    kv_buckets: tuple[str, ...] = ()
    """JetStream key-value buckets it creates, reads, writes and watches."""
    integrator_consumers: bool = False
    """Creates, lists, reads and deletes integrators' consumers on every event stream: any
    name, filtered to some clinic's events (see :func:`integrator_consumer_admin`)."""


@dataclass(frozen=True)
class ConsumedStream:
    source: str
    """The service whose stream it is."""
    durable: str
    """The durable consumer's name on that stream."""


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    respond: bool = False
    """May answer requests it received (publish once to their reply subject)."""
    inbox: str = "_INBOX"


@dataclass(frozen=True)
class ServiceBus:
    """What :func:`service_permissions` needs to know about one service."""

    name: str
    consumes: tuple[ConsumedStream, ...] = ()
    serves_rpc: bool = False
    access: BusAccess = field(default_factory=BusAccess)


def _stream_admin(stream: str) -> list[str]:
    """Declaring a stream (idempotently) and reading its state."""
    return [f"{JS_API}.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE", "UPDATE")]


def _consumer(stream: str, durable: str) -> list[str]:
    return [
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _bucket(bucket: str) -> list[str]:
    """A KV bucket: its stream, direct and stored reads, writes, and watchers (consumers
    named by the client, delivered to its inbox, with flow control)."""
    stream = f"KV_{bucket}"
    return [
        *_stream_admin(stream),
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
        f"$KV.{bucket}.>",
    ]


def integrator_consumer_admin(stream: str) -> list[str]:
    """Managing integrators' consumers on ``stream``, for the service that issues their
    credentials (integrators may not create consumers: a consumer's deliver subject cannot be
    limited by permissions). The create subject names the filter, and ``antechamber.*.>``
    keeps it to one clinic's events; token wildcards match one token each, so ``*`` is any
    consumer name and no other stream."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.*.antechamber.*.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"{JS_API}.CONSUMER.LIST.{stream}",
    ]


def _unique(subjects: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def service_permissions(service: ServiceBus) -> Permissions:
    own = stream_name(service.name)
    publish = [
        service_subjects(service.name),
        deadletter_subject(service.name),
        *_stream_admin(own),
        f"{JS_API}.STREAM.MSG.GET.{own}",
        *_stream_admin(DEADLETTER_STREAM),
        f"{JS_API}.INFO",
    ]
    for consumed in service.consumes:
        stream = stream_name(consumed.source)
        publish += [*_stream_admin(stream), *_consumer(stream, consumed.durable)]
    for bucket in service.access.kv_buckets:
        publish += _bucket(bucket)
    if service.access.integrator_consumers:
        for stream in EVENT_STREAMS:
            publish += integrator_consumer_admin(stream)
    publish += service.access.calls
    publish += service.access.publishes
    inbox = inbox_prefix(service.name)
    subscribe = [f"{inbox}.>", *service.access.subscribes]
    if service.serves_rpc:
        subscribe.append(f"rpc.{service.name}.>")
    return Permissions(
        publish=_unique(publish),
        subscribe=_unique(subscribe),
        respond=service.serves_rpc,
        inbox=inbox,
    )


INTEGRATOR_ROLE = "integrator"
CLINIC_TAG = "clinic"


def integrator_template() -> Permissions:
    """An integrator's rights, as the template of the account's scoped signing key for
    integrators: the server fills in ``{{name()}}`` (the credential's name, also the name of
    the consumers made for it and its inbox) and ``{{tag(clinic)}}`` (its clinic) on every
    connection, so a credential signed by that key can hold no other rights.

    - core subscriptions to its clinic's events, and its own inbox;
    - reading, pulling from and acknowledging the JetStream consumers named after it, which
      the issuing service makes (pull consumers filtered to its clinic's events). It creates
      and deletes none: a create request's body names the deliver subject, which no
      permission can check, so a push consumer of its own could deliver its clinic's events
      into any subject, another clinic's included.
    No publish, no RPC, no KV, no stream administration.
    """
    name = "{{name()}}"
    clinic = "{{tag(" + CLINIC_TAG + ")}}"
    return Permissions(
        publish=(
            f"{JS_API}.CONSUMER.INFO.*.{name}",
            f"{JS_API}.CONSUMER.MSG.NEXT.*.{name}",
            f"$JS.ACK.*.{name}.>",
        ),
        subscribe=(f"antechamber.{clinic}.>", f"_INBOX_{name}.>"),
        inbox=f"_INBOX_{name}",
    )
