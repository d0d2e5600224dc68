"""One media node: the seats of the rooms it owns, and the way to the owner of the others.

Any node answers ``SEAT_SUBJECT`` and ``RELEASE_SUBJECT`` (one queue group). It reads who owns
the room (placing it if nobody does); if that is itself, it answers from its ledger, otherwise
it forwards the request to the owner's own subject (:func:`node_subject`) and relays the
answer. An owner that does not answer and whose heartbeat is stale is dead: its room is
placed again with compare-and-set, and answered by the new owner.
"""

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal
from uuid import UUID

import structlog
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from contracts.media import (
    LiveNodes,
    MediaSignal,
    MediaSignalReply,
    MuteCommand,
    MuteReply,
    NodesQuery,
    RecordingCommand,
    RecordingReply,
    RoomPlaced,
    RoomQuality,
    ScreenShareAction,
    ScreenShareCommand,
    ScreenShareReply,
    SeatAnswer,
    SeatRefusal,
    SeatRefused,
    SeatRelease,
    SeatReleased,
    SeatRequest,
    SignalKind,
    node_subject,
    participant_subject,
    quality_subject,
)
from runtime.clock import Clock, system_clock
from runtime.context import ServiceContext
from runtime.participant_tokens import ParticipantKeySettings, ParticipantTokenError, verify
from runtime.retry import retry
from runtime.rpc import error_reply
from services.media import ice, metrics, quality
from services.media.aiortc_hooks import check_aiortc
from services.media.config import MediaSettings
from services.media.journal import Journal
from services.media.placement import Owner, Placed, Placement
from services.media.recordings import Recordings, download_key
from services.media.seats import MAX_SEATS, Granted, SeatLedger
from services.media.sfu import Sfu, SignalRefused

log = structlog.get_logger(__name__)
Action = Literal["seat", "release"]

NOT_OWNER = "not_owner"
"""The error a node answers on its own subject for a room it does not own (media only)."""
ATTEMPTS = 4
"""Reads of a room's owner per request; more only when the placement keeps moving."""
ROOM_FULL = "This room is full: it holds at most {cap} people."
NO_CAPACITY = "No video server can open this room right now; please try again in a minute."


def stream_of(room_id: UUID) -> str:
    return f"room-{room_id}"


class OwnerGone(Exception):
    """The owner did not answer; ``dead`` if its heartbeat is stale too."""

    def __init__(self, dead: bool) -> None:
        self.dead = dead


@dataclass
class Media:
    """What one media node's endpoints and tasks share, built once per process."""

    settings: MediaSettings = field(default_factory=MediaSettings)
    clock: Clock = system_clock
    journal: Journal = field(default_factory=Journal)
    key_source: Callable[[], str] = field(default=lambda: ParticipantKeySettings().key())
    owned: dict[UUID, int] = field(default_factory=dict)
    """Rooms this node owns, with the revision of their placement."""
    ledger: SeatLedger = field(init=False)
    sfu: Sfu = field(init=False)
    recordings: Recordings = field(init=False)
    _key: str | None = field(default=None, init=False, repr=False)
    _ctx: ServiceContext | None = field(default=None, init=False, repr=False)
    _leaving: dict[UUID, asyncio.Event] = field(default_factory=dict, init=False, repr=False)
    _placing: dict[UUID, "asyncio.Future[Placed | None]"] = field(
        default_factory=dict, init=False, repr=False
    )
    _placement: "asyncio.Future[Placement] | None" = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ledger = SeatLedger(timedelta(seconds=self.settings.reservation_s))
        self.sfu = Sfu(self.settings, self._send)
        self.recordings = Recordings(self.settings, self.sfu, self.journal, self.clock)

    async def _send(self, participant_id: UUID, signal: MediaSignal) -> None:
        """To one participant's browser, through whichever signaling replica holds it."""
        assert self._ctx is not None, "the media node has not started"
        subject = participant_subject(participant_id)
        await self._ctx.nats.publish(subject, signal.model_dump_json().encode())

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self.key_source()
        return self._key

    @functools.cached_property
    def download_key(self) -> bytes:
        """Signs recordings' download URLs (derived from the participant key)."""
        return download_key(self.key)

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def placement(self, ctx: ServiceContext) -> Placement:
        """The cluster view, opened (and this node announced) on first use."""
        opening = self._placement
        if opening is None or (
            opening.done() and (opening.cancelled() or opening.exception() is not None)
        ):
            self._placement = opening = asyncio.ensure_future(self._open(ctx))
        return await asyncio.shield(opening)

    async def _open(self, ctx: ServiceContext) -> Placement:
        placement = await Placement.open(
            ctx.nats.jetstream(), self.settings, self.clock, ctx.settings.stream_replicas
        )
        await placement.announce(rooms=0)
        return placement

    # -- any node: find the owner -------------------------------------------------------------

    async def seat(self, ctx: ServiceContext, request: SeatRequest) -> bytes:
        """Answer a :class:`SeatRequest` as the room's owner, or through it."""
        placement = await self.placement(ctx)
        room = request.room_id
        answer: SeatAnswer | bytes | None
        for _ in range(ATTEMPTS):
            owner = await placement.owner(room)
            if owner is None:
                placed = await self._place(placement, request.clinic_id, room, None)
                if placed is None:
                    return self._no_capacity(request).model_dump_json().encode()
                owner = placed.owner
            if owner.node_id == self.node_id:
                answer = await self.seat_here(placement, request)
            else:
                try:
                    answer = await self._forward(ctx, owner, "seat", request.model_dump_json())
                except OwnerGone as gone:
                    if not gone.dead:
                        return error_reply("the media node that holds this room did not answer")
                    placed = await self._place(placement, request.clinic_id, room, owner)
                    if placed is None:
                        return self._no_capacity(request).model_dump_json().encode()
                    continue  # the next read finds the new owner
            if answer is not None:
                return answer if isinstance(answer, bytes) else answer.model_dump_json().encode()
        return error_reply("the room's placement kept changing; try again")

    async def live_nodes(self, ctx: ServiceContext, query: NodesQuery) -> bytes:
        """Answer a :class:`NodesQuery`: which of those nodes live. A node this view holds
        for dead is read again from the bucket before it is said so (the view may lag)."""
        placement = await self.placement(ctx)
        now, ttl = self.clock(), placement.ttl
        live = []
        for node_id in dict.fromkeys(query.node_ids):
            card = placement.cards.get(node_id)
            seen = node_id == self.node_id or (card is not None and card.live(now, ttl))
            if seen or await placement.is_live(node_id):
                live.append(node_id)
        return LiveNodes(live=live).model_dump_json().encode()

    async def release(self, ctx: ServiceContext, request: SeatRelease) -> bytes:
        """Answer a :class:`SeatRelease`; a room nobody (live) owns has no seats to free."""
        placement = await self.placement(ctx)
        nothing = SeatReleased(released=0, taken=0).model_dump_json().encode()
        answer: SeatReleased | bytes | None
        for _ in range(ATTEMPTS):
            owner = await placement.owner(request.room_id)
            if owner is None:
                return nothing
            if owner.node_id == self.node_id:
                answer = await self.release_here(placement, request)
            else:
                try:
                    answer = await self._forward(ctx, owner, "release", request.model_dump_json())
                except OwnerGone as gone:
                    if gone.dead:  # its seats went with it
                        return nothing
                    return error_reply("the media node that holds this room did not answer")
            if answer is not None:
                return answer if isinstance(answer, bytes) else answer.model_dump_json().encode()
        return error_reply("the room's placement kept changing; try again")

    async def _place(
        self, placement: Placement, clinic_id: str, room: UUID, over: Owner | None
    ) -> Placed | None:
        # Concurrent requests for one new room on this node place it once.
        pending = self._placing.get(room)
        if pending is None:
            pending = asyncio.ensure_future(self._place_somewhere(placement, room, over))
            self._placing[room] = pending
            pending.add_done_callback(lambda _: self._placing.pop(room, None))
            placed = await asyncio.shield(pending)
            if placed is not None and placed.won:
                event = RoomPlaced(room_id=room, node_id=placed.owner.node_id)
                self.journal.record(stream_of(room), clinic_id, event)
            return placed
        return await asyncio.shield(pending)

    async def _place_somewhere(
        self, placement: Placement, room: UUID, over: Owner | None
    ) -> Placed | None:
        placed = await placement.place(room, over)
        if placed is None and len(self.owned) < self.settings.max_rooms:
            # This node is answering, so it lives, whatever its card says: a heartbeat that
            # could not be written while NATS failed over leaves it looking dead to itself.
            await placement.announce(rooms=len(self.owned))
            placed = await placement.place(room, over)
        return placed

    async def _forward(
        self, ctx: ServiceContext, owner: Owner, action: Action, body: str
    ) -> bytes | None:
        """The owner's answer; None if it says it is not the owner (any more)."""
        subject = node_subject(owner.node_id, action)
        try:
            data = body.encode()
            claim = ctx.identity.headers(action, data) if ctx.identity is not None else None
            reply = await ctx.nats.request(
                subject, data, timeout=self.settings.forward_wait_s, headers=claim
            )
        except (NoRespondersError, TimeoutError) as exc:
            placement = await self.placement(ctx)
            dead = not await placement.is_live(owner.node_id)
            log.warning("owner did not answer", node_id=owner.node_id, dead=dead, error=repr(exc))
            raise OwnerGone(dead) from exc
        with contextlib.suppress(ValueError):
            body = json.loads(reply.data)
            if isinstance(body, dict) and str(body.get("error", "")).startswith(NOT_OWNER):
                return None
        return reply.data

    # -- the owner ----------------------------------------------------------------------------

    async def seat_here(self, placement: Placement, request: SeatRequest) -> SeatAnswer | None:
        """The answer from this node's ledger; None if this node does not own the room."""
        if not await self._owns(placement, request.room_id):
            return None
        # From here to the answer: no await, so the count and the grant cannot interleave.
        now = self.clock()
        outcome = self.ledger.request(
            request.room_id, request.participant_id, request.role, request.cap, now
        )
        if isinstance(outcome, Granted):
            if request.loudest_speakers is not None:
                self.sfu.limit_voices(request.room_id, request.loudest_speakers)
            return SeatAnswer(
                granted=True,
                message="",
                node_id=self.node_id,
                media_url=self.settings.public_url,
                reserved_until=outcome.reserved_until,
                taken=outcome.taken,
                cap=outcome.cap,
                holders=self.ledger.holders(request.room_id, now),
            )
        self._refused(request, SeatRefusal.room_full, outcome.taken, outcome.cap)
        return SeatAnswer(
            granted=False,
            reason=SeatRefusal.room_full,
            message=ROOM_FULL.format(cap=outcome.cap),
            node_id=self.node_id,
            taken=outcome.taken,
            cap=outcome.cap,
        )

    async def release_here(self, placement: Placement, request: SeatRelease) -> SeatReleased | None:
        if not await self._owns(placement, request.room_id):
            return None
        # A reservation that lapsed is no seat to free, whether or not the heartbeat has
        # forgotten it yet: otherwise the count would depend on that timing.
        self.ledger.drop_lapsed(request.room_id, self.clock())
        released = self.ledger.release(request.room_id, request.participant_id)
        await self.sfu.release(request.room_id, request.participant_id, "seat_released")
        if self._ctx is not None and not self.ledger.taken(request.room_id, self.clock()):
            self.recordings.stop(self._ctx, request.room_id)  # nobody left to record
        return SeatReleased(
            released=released, taken=self.ledger.taken(request.room_id, self.clock())
        )

    # -- media negotiation ---------------------------------------------------------------------

    async def signal(self, ctx: ServiceContext, signal: MediaSignal) -> bytes:
        """``rpc.media.node.<id>.signal``: one negotiation message from a participant."""
        try:
            answer = await self._signal(ctx, signal)
        except SignalRefused as refused:
            reply = MediaSignalReply(ok=False, reason=refused.reason, message=refused.message)
        else:
            reply = MediaSignalReply(ok=True, answer=answer)
        return reply.model_dump_json().encode()

    async def _signal(self, ctx: ServiceContext, signal: MediaSignal) -> MediaSignal | None:
        pid = signal.participant_id
        if signal.participant_token is None or signal.room_id is None:
            raise SignalRefused("token_missing", "A participant token and its room are needed.")
        try:
            claims = verify(
                self.key,
                signal.participant_token,
                room_id=str(signal.room_id),
                node_id=self.node_id,
            )
        except ParticipantTokenError as exc:
            raise SignalRefused("token_invalid", f"Media refused: {exc}.") from exc
        if claims.sub != str(pid):
            raise SignalRefused("token_invalid", "Media refused: the token is someone else's.")
        match signal.kind:
            case SignalKind.offer:
                if not signal.sdp:
                    raise SignalRefused("sdp_missing", "An offer needs its session description.")
                if not await self._owns(await self.placement(ctx), signal.room_id):
                    raise SignalRefused(NOT_OWNER, "This media node does not hold the room.")
                if not self.ledger.claim(signal.room_id, pid, self.clock()):
                    raise SignalRefused(
                        "no_seat", "Your seat in this call has lapsed; join the call again."
                    )
                return await self.sfu.offer(
                    signal.room_id, claims.clinic, pid, claims.role, signal.sdp
                )
            case SignalKind.answer:
                if not signal.sdp:
                    raise SignalRefused("sdp_missing", "An answer needs its session description.")
                await self.sfu.answer(pid, signal.sdp)
            case SignalKind.candidate:
                await self.sfu.candidate(pid, signal)
            case SignalKind.bye:
                await self.sfu.bye(pid)
        return None

    async def record(self, ctx: ServiceContext, command: RecordingCommand) -> bytes:
        """``rpc.media.node.<id>.record``: a host started or stopped recording a room."""
        if not await self._owns(await self.placement(ctx), command.room_id):
            reply = RecordingReply(
                ok=False, reason=NOT_OWNER, message="This media node does not hold the room."
            )
        else:
            reply = await self.recordings.command(ctx, command)
        return reply.model_dump_json().encode()

    async def mute(self, ctx: ServiceContext, command: MuteCommand) -> bytes:
        """``rpc.media.node.<id>.mute``: a host muted a participant's audio, or it ended."""
        if not await self._owns(await self.placement(ctx), command.room_id):
            reply = MuteReply(
                ok=False, reason=NOT_OWNER, message="This media node does not hold the room."
            )
        else:
            self.sfu.mute(command.room_id, command.participant_id, command.muted)
            reply = MuteReply(ok=True)
        return reply.model_dump_json().encode()

    async def share(self, ctx: ServiceContext, command: ScreenShareCommand) -> bytes:
        """``rpc.media.node.<id>.share``: signaling granted a room's screen share, or ended it."""
        if not await self._owns(await self.placement(ctx), command.room_id):
            reply = ScreenShareReply(
                ok=False, reason=NOT_OWNER, message="This media node does not hold the room."
            )
        else:
            grant = command.action is ScreenShareAction.grant
            self.sfu.share(command.room_id, command.clinic_id, command.participant_id, grant)
            reply = ScreenShareReply(ok=True)
        return reply.model_dump_json().encode()

    async def run_sfu(self, ctx: ServiceContext) -> None:
        """Background task: the SFU's watchdog; on stop, recordings are finished and every
        connection is closed."""
        self._ctx = ctx
        _ = self.key  # no key: fail at start, with the way to set one
        check_aiortc()
        ice.install(self.settings)
        await self.recordings.recover(ctx)  # under way when this node last stopped
        try:
            await self.sfu.watch()
        finally:
            await self.recordings.stop_all(ctx)
            await self.sfu.close()

    async def publish_quality(self, ctx: ServiceContext) -> None:
        """Background task: every ``quality_interval_s``, each room's network quality to
        signaling (``quality_subject``, for the people of the room) and to the metrics."""
        while True:
            await asyncio.sleep(self.settings.quality_interval_s)
            now, at = time.monotonic(), self.clock()
            measured: list[quality.LinkQuality] = []
            for room in list(self.sfu.rooms.values()):
                links = quality.measure_room(room, now)
                if not links:
                    continue
                measured.extend(links.values())
                report = RoomQuality(
                    room_id=room.room_id,
                    clinic_id=room.clinic_id,
                    node_id=self.node_id,
                    measured_at=at,
                    participants=[quality.participant_quality(p, q) for p, q in links.items()],
                )
                try:
                    await ctx.nats.publish(
                        quality_subject(room.room_id), report.model_dump_json().encode()
                    )
                except NatsError:
                    # The next measurement goes out in a few seconds; nothing to catch up.
                    log.warning("network quality not published", room_id=str(room.room_id))
            metrics.observe_quality(self.node_id, measured)

    async def _owns(self, placement: Placement, room: UUID) -> bool:
        while True:
            leaving = self._leaving.get(room)
            if leaving is not None:  # being given up: wait, then look again
                await leaving.wait()
                continue
            if room in self.owned:
                return True
            owner = await placement.owner(room)
            if owner is None or owner.node_id != self.node_id:
                return False
            if room in self._leaving:  # given up while we read
                continue
            if room not in self.owned:
                self.ledger.forget(room)  # seats from an earlier time here are long gone
                self.owned[room] = owner.revision
            return True

    def _no_capacity(self, request: SeatRequest) -> SeatAnswer:
        cap = min(request.cap, MAX_SEATS)
        self._refused(request, SeatRefusal.no_capacity, 0, cap)
        return SeatAnswer(
            granted=False, reason=SeatRefusal.no_capacity, message=NO_CAPACITY, taken=0, cap=cap
        )

    def _refused(self, request: SeatRequest, reason: SeatRefusal, taken: int, cap: int) -> None:
        event = SeatRefused(
            room_id=request.room_id,
            participant_id=request.participant_id,
            taken=taken,
            cap=cap,
            reason=reason,
        )
        self.journal.record(stream_of(request.room_id), request.clinic_id, event)

    # -- the heartbeat ------------------------------------------------------------------------

    async def keep_alive(self, ctx: ServiceContext) -> None:
        """Background task: announce this node every ``heartbeat_s``, give up empty rooms,
        keep the view of the other nodes; leave the cluster when stopped."""
        placement = await retry(
            lambda: self.placement(ctx), errors=(NatsError, TimeoutError), what="media buckets"
        )
        watching = asyncio.create_task(placement.watch_nodes(), name="media-nodes-watch")
        try:
            while True:
                # Whatever fails, the loop goes on: a node that stops announcing itself
                # while it still serves would see its rooms taken over under it.
                try:
                    await self._give_up_empty_rooms(placement)
                    await placement.announce(rooms=len(self.owned))
                except Exception:
                    log.warning("heartbeat not sent", exc_info=True)
                await asyncio.sleep(self.settings.heartbeat_s)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.forward_wait_s):
                    await placement.leave()

    async def _give_up_empty_rooms(self, placement: Placement) -> None:
        now = self.clock()
        empty = [(r, rev) for r, rev in self.owned.items() if self.ledger.taken(r, now) == 0]
        # All at once, before any await: a room still counted empty after an await might
        # have granted a seat meanwhile. Requests for these rooms wait until their placement
        # is gone, then go wherever the next placement puts them.
        for room, _ in empty:
            self._leaving[room] = asyncio.Event()
            del self.owned[room]
            self.ledger.forget(room)
        try:
            outcomes = await asyncio.gather(
                *(placement.unplace(room, revision) for room, revision in empty),
                return_exceptions=True,
            )
        finally:
            for room, _ in empty:
                self._leaving.pop(room).set()
        for (room, _), outcome in zip(empty, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.warning("room placement not removed", room_id=str(room), error=repr(outcome))
