"""The JetStream consumers made for integrators: one durable pull consumer per event stream and
credential, named after the credential and filtered to its clinic's events.

Integrators may not create consumers: a consumer's deliver subject is in the body of the create
request, which no NATS permission can check, so a push consumer of theirs could deliver their
clinic's events into another clinic's subjects. Scheduling makes them instead, with no deliver
subject, and the integrator binds to them (it may read, pull from and acknowledge a consumer
named after itself, nothing more).

- At issuance, on every stream that exists then; a stream that does not exist yet (its service
  has not started) gets its consumer at the next sync. Scheduling does not declare another
  service's stream: it would have to know that service's stream settings, and would need the
  right to change them.
- At revocation they are deleted; an expired credential's at the next sync. A suspended
  clinic's are kept, so that reinstating it restores their positions.
- Every sync (:func:`converge`) makes what is missing, deletes what belongs to no credential
  that keeps consumers, and replaces a consumer that delivers to a subject or reads more than
  its clinic's events (one an integrator made itself before it lost the right). It reads NATS
  before Postgres, so that a consumer another replica has just made belongs to a credential
  it reads; a credential revoked meanwhile may get a consumer back, deleted at the next sync.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.envelope import SUBJECT_ROOT
from contracts.scheduling import ConsumerStart
from runtime.streams import EVENT_STREAMS

log = structlog.get_logger(__name__)

MAX_ACK_PENDING = 1000
"""Messages delivered and not yet acknowledged, at most, per consumer: an integrator that stops
acknowledging stops receiving, instead of the server tracking its whole backlog."""

_INTEGRATOR = re.compile(r"int_[0-9a-f]{32}")
"""An integrator credential's NATS user name (``contracts.scheduling.integrator_name``): the
consumers of no other name are ever touched here."""


@dataclass(frozen=True)
class ConsumerOwner:
    """A credential that keeps consumers, and what they are."""

    nats_user: str
    clinic_id: str
    start: ConsumerStart
    issued_at: datetime

    @property
    def filter_subject(self) -> str:
        return f"{SUBJECT_ROOT}.{self.clinic_id}.>"

    def config(self) -> ConsumerConfig:
        """The same from every replica, so that two making it at once agree."""
        since_issuance = self.start is ConsumerStart.NEW
        return ConsumerConfig(
            name=self.nats_user,
            durable_name=self.nats_user,
            description=f"Clinic {self.clinic_id}'s events for integrator {self.nats_user}",
            deliver_policy=DeliverPolicy.BY_START_TIME if since_issuance else DeliverPolicy.ALL,
            opt_start_time=self.issued_at.replace(microsecond=0) if since_issuance else None,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=self.filter_subject,
            max_ack_pending=MAX_ACK_PENDING,
        )

    def reads_only_its_clinic(self, config: ConsumerConfig) -> bool:
        """A pull consumer of its clinic's events alone (whatever its other settings)."""
        return (
            config.deliver_subject is None
            and config.filter_subject == self.filter_subject
            and not config.filter_subjects
        )


async def make(js: JetStreamContext, owner: ConsumerOwner) -> None:
    """Its consumer on every stream that exists."""
    for stream in EVENT_STREAMS:
        await _make(js, stream, owner)


async def remove(js: JetStreamContext, nats_user: str) -> None:
    """Its consumers, wherever they are (none: nothing to do)."""
    for stream in EVENT_STREAMS:
        await _delete(js, stream, nats_user)


async def converge(
    js: JetStreamContext, owners_now: Callable[[], Awaitable[list[ConsumerOwner]]]
) -> tuple[int, int]:
    """Make the missing consumers of the credentials ``owners_now`` reads, and delete every
    integrator's consumer that is not one of them as it should be; how many (made, deleted)."""
    existing = await _integrator_consumers(js)
    owners = {owner.nats_user: owner for owner in await owners_now()}  # after: see above
    made = deleted = 0
    for stream, consumers in existing.items():
        kept = set()
        for name, info in consumers.items():
            owner = owners.get(name)
            if owner is not None and owner.reads_only_its_clinic(info.config):
                kept.add(name)
                continue
            if owner is not None:
                log.warning(
                    "an integrator's consumer reads or delivers more than its clinic's events "
                    "(made by the integrator before it lost the right): replaced",
                    stream=stream,
                    consumer=name,
                    deliver_subject=info.config.deliver_subject,
                    filter_subject=info.config.filter_subject,
                )
            deleted += await _delete(js, stream, name)
        for owner in owners.values():
            if owner.nats_user not in kept:
                made += await _make(js, stream, owner)
    if made or deleted:
        log.info("integrators' consumers brought in step", made=made, deleted=deleted)
    return made, deleted


async def _integrator_consumers(js: JetStreamContext) -> dict[str, dict[str, ConsumerInfo]]:
    """The integrators' consumers of each stream that exists, by name."""
    found: dict[str, dict[str, ConsumerInfo]] = {}
    for stream in EVENT_STREAMS:
        try:
            found[stream] = {
                info.name: info
                for info in await _every_consumer(js, stream)
                if _INTEGRATOR.fullmatch(info.name)
            }
        except NotFoundError:
            continue  # no stream yet
    return found


async def _every_consumer(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    consumers: list[ConsumerInfo] = []
    while page := await js.consumers_info(stream, offset=len(consumers)):
        consumers += page
    return consumers


async def _make(js: JetStreamContext, stream: str, owner: ConsumerOwner) -> bool:
    """Whether it was made (False: the stream does not exist yet)."""
    try:
        await js.add_consumer(stream, owner.config())
    except NotFoundError:
        log.info("no stream yet: its consumer is made at a later sync", stream=stream)
        return False
    return True


async def _delete(js: JetStreamContext, stream: str, name: str) -> bool:
    """Whether there was one to delete."""
    try:
        await js.delete_consumer(stream, name)
    except NotFoundError:
        return False
    return True
