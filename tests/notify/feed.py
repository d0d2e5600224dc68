"""Scheduling's and links' events for notify, published as their relays would, without them.

``Feed`` registers a clinic with a practitioner, then schedules sessions with one client each
and a session link (video mode ``session_link``), so notify plans and mails one invitation per
session. It publishes in batches of concurrent publishes, enough to feed a thousand sessions
in a few seconds; each batch's clients are acknowledged before their sessions are published,
so notify knows a client's address when it writes the client's invitation.

Clients' names and addresses are sealed per client as scheduling seals them, and the feed
answers notify's requests to open them (``UNSEAL_SUBJECT``) as scheduling would, from the
keys it sealed with, for as long as its connection lives. ``erase`` forgets a client's key.
"""

import asyncio
import secrets
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts.events import Event
from contracts.links import LinkIssued, LinkKind, Role
from contracts.scheduling import (
    UNSEAL_SUBJECT,
    ClientAdded,
    ClinicRegistered,
    ClinicSettings,
    GuestAdmission,
    Plan,
    PractitionerAdded,
    SealedValues,
    SessionScheduled,
    SessionSource,
    VideoMode,
)
from runtime.personal_data import new_person_key, seal_model
from runtime.sealing import Sealer
from runtime.streams import ensure_stream, service_stream
from services.scheduling.person_keys import answer
from tests.support import envelope_for, publish_envelope

BATCH = 100
"""Publishes in flight at a time."""
SESSION_MINUTES = 50


@dataclass(frozen=True)
class Invited:
    """A client invited to a session, and the join URL their invitation must carry."""

    session_id: UUID
    client_id: UUID
    email: str
    url: str


@dataclass
class Feed:
    """One clinic's traffic. Call :meth:`clinic` once, then :meth:`sessions` as often as needed."""

    nc: NATS
    sealer: Sealer
    clinic_id: str = field(default_factory=lambda: f"c_{secrets.token_hex(8)}")
    practitioner_id: UUID | None = field(default=None, init=False)
    time_zone: str = field(default="UTC", init=False)
    _clients: int = field(default=0, init=False)
    _streams_ready: bool = field(default=False, init=False)
    keys: dict[UUID, bytes] = field(default_factory=dict, init=False)
    erased: set[UUID] = field(default_factory=set, init=False)
    unseal_requests: int = field(default=0, init=False)
    """Requests notify sent to open clients' details (one per claimed batch, not per mail)."""
    _answering: Subscription | None = field(default=None, init=False)
    _plain: dict[UUID, ClientAdded] = field(default_factory=dict, init=False)

    async def clinic(
        self,
        time_zone: str = "Europe/Berlin",
        reminder_offsets_minutes: tuple[int, ...] = (1440, 60),
        name: str = "Riverside Therapy",
    ) -> None:
        """ClinicRegistered (plan professional, which includes session links) and its
        practitioner's PractitionerAdded."""
        await self._ensure_streams()
        await self._answer_unseal()
        settings = ClinicSettings(
            plan=Plan.professional,
            time_zone=time_zone,
            reminder_offsets_minutes=reminder_offsets_minutes,
        )
        practitioner_id = uuid4()
        await self._publish(
            "scheduling",
            [ClinicRegistered(name=name, slug=f"c{secrets.token_hex(6)}", settings=settings)],
        )
        await self._publish(
            "scheduling",
            [
                PractitionerAdded(
                    practitioner_id=practitioner_id,
                    display_name="Dr Ada Lovelace",
                    room_id=uuid4(),
                    room_slug=f"p{secrets.token_hex(6)}",
                )
            ],
        )
        self.practitioner_id = practitioner_id
        self.time_zone = settings.time_zone

    async def sessions(
        self,
        count: int,
        starts_in: timedelta = timedelta(days=3),
        starts_at: datetime | None = None,
    ) -> list[Invited]:
        """``count`` sessions ``starts_in`` from now (or at ``starts_at``), each with a client
        of its own and the client's session link; returns who should get which URL."""
        if self.practitioner_id is None:
            raise RuntimeError("call Feed.clinic() before Feed.sessions()")
        if starts_at is None:
            starts_at = datetime.now(UTC).replace(second=0, microsecond=0) + starts_in
        invited: list[Invited] = []
        for first in range(0, count, BATCH):
            size = min(BATCH, count - first)
            clients = [self._client() for _ in range(size)]
            batch = [self._session(client, starts_at) for client in clients]
            await self._publish("scheduling", clients)
            await self._publish("scheduling", [scheduled for scheduled, _, _ in batch])
            await self._publish("links", [issued for _, issued, _ in batch])
            invited += [person for _, _, person in batch]
        return invited

    # -- events ----------------------------------------------------------------------------

    def _client(self) -> ClientAdded:
        """A new client as scheduling publishes one, sealed; ``plain_client`` opens it."""
        self._clients += 1
        n = self._clients
        client_id = uuid4()
        self.keys[client_id] = new_person_key()
        plain = ClientAdded(
            client_id=client_id,
            display_name=f"Client {n}",
            email=f"client-{n}-{secrets.token_hex(3)}@example.org",
        )
        self._plain[client_id] = plain
        return seal_model(plain, self.keys[client_id], self.clinic_id, client_id)

    def plain_client(self, client: ClientAdded) -> ClientAdded:
        return self._plain[client.client_id]

    def erase(self, client_id: UUID) -> None:
        """As scheduling erases a client: their key is gone (no ClientErased is published)."""
        del self.keys[client_id]
        self.erased.add(client_id)

    async def _answer_unseal(self) -> None:
        if self._answering is not None:
            return

        async def on_request(msg: Msg) -> None:
            self.unseal_requests += 1
            request = SealedValues.model_validate_json(msg.data)
            keys = self.keys if request.clinic_id == self.clinic_id else {}
            await msg.respond(answer(request, keys, self.erased).model_dump_json().encode())

        self._answering = await self.nc.subscribe(UNSEAL_SUBJECT, queue="scheduling", cb=on_request)

    def _session(
        self, client: ClientAdded, starts_at: datetime
    ) -> tuple[SessionScheduled, LinkIssued, Invited]:
        assert self.practitioner_id is not None
        email = self.plain_client(client).email
        assert email is not None
        session_id = uuid4()
        scheduled = SessionScheduled(
            session_id=session_id,
            practitioner_id=self.practitioner_id,
            client_ids=(client.client_id,),
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=SESSION_MINUTES),
            time_zone=self.time_zone,
            video_mode=VideoMode.session_link,
            link_sharing=False,
            guest_admission=GuestAdmission.waiting_room,
            source=SessionSource.api,
        )
        url = f"https://video.example.test/j/{secrets.token_urlsafe(24)}"
        issued = LinkIssued(
            link_id=uuid4(),
            kind=LinkKind.session,
            role=Role.client,
            url_sealed=self.sealer.seal(url),
            session_id=session_id,
            practitioner_id=self.practitioner_id,
        )
        return scheduled, issued, Invited(session_id, client.client_id, email, url)

    # -- publishing ------------------------------------------------------------------------

    async def _ensure_streams(self) -> None:
        if not self._streams_ready:
            js = self.nc.jetstream()
            for service in ("scheduling", "links"):
                await ensure_stream(js, service_stream(service))
            self._streams_ready = True

    async def _publish(self, service: str, events: Iterable[Event]) -> None:
        """All of ``events`` acknowledged by JetStream, ``BATCH`` publishes in flight."""
        await self._ensure_streams()
        js = self.nc.jetstream()
        pending: list[Awaitable[None]] = []
        for event in events:
            envelope = envelope_for(event, service=service, clinic_id=self.clinic_id)
            pending.append(publish_envelope(js, envelope))
            if len(pending) == BATCH:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
