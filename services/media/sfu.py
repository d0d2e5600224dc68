"""The selective forwarding unit: one WebRTC connection per participant, frames fanned out.

Each participant's browser connects once (its offer carries what it publishes) and gets, on
the same connection, one sending transceiver per track of every other participant. The node
never decodes on this path: complete encoded frames are tapped from each receiver (see
:mod:`services.media.passthrough`) and pushed into one :class:`ForwardedTrack` per
subscriber, which aiortc packs into RTP again.

Negotiation after the first offer is the node's: when the tracks a participant should
receive change, the node offers (on ``participant_subject``) once that participant's
connection is up and no offer of its is pending, and applies the answer that comes back.
Keyframe requests from subscribers reach the publisher, at most one per
``keyframe_interval_s`` per track; a new subscriber gets nothing until a keyframe.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from uuid import UUID

import structlog
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from contracts.media import MediaSignal, MediaStream, SignalKind
from contracts.signaling import CallRole
from services.media.config import MediaSettings
from services.media.offers import Terms
from services.media.passthrough import (
    EncodedFrame,
    ForwardedTrack,
    on_keyframe_request,
    request_keyframe,
    tap_receiver,
)

if TYPE_CHECKING:
    from services.media.recorder import Recorder

log = structlog.get_logger(__name__)
Kind = Literal["audio", "video"]
Send = Callable[[UUID, MediaSignal], Awaitable[None]]

FORWARDED = {"audio/opus", "video/vp8", "video/h264"}
CODECS_REFUSED = (
    "Your browser offered no codec this server forwards (audio: Opus; video: VP8 or H.264)."
)


class SignalRefused(Exception):
    """A negotiation message the node cannot act on; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class Publication:
    """One track a participant publishes, and its copies for every subscriber."""

    owner: "Member"
    kind: Kind
    mime_type: str
    receiver: RTCRtpReceiver
    track: MediaStreamTrack
    copies: dict[UUID, MediaStreamTrack] = field(default_factory=dict)
    last_keyframe_request: float = 0.0
    keyframe_pending: asyncio.TimerHandle | None = None
    frames: int = 0
    last_frame_at: float = field(default_factory=time.monotonic)

    def want_keyframe(self, interval: float) -> None:
        """Ask the publisher for a keyframe now, or at the end of the throttle interval."""
        now = time.monotonic()
        wait = self.last_keyframe_request + interval - now
        if wait <= 0:
            self._send_request()
        elif self.keyframe_pending is None:
            loop = asyncio.get_running_loop()
            self.keyframe_pending = loop.call_later(wait, self._send_request)

    def _send_request(self) -> None:
        self.keyframe_pending = None
        self.last_keyframe_request = time.monotonic()
        request_keyframe(self.receiver)

    def close(self) -> None:
        if self.keyframe_pending is not None:
            self.keyframe_pending.cancel()
        for copy in self.copies.values():
            copy.stop()
        self.copies.clear()


@dataclass(eq=False)
class Outgoing:
    """A transceiver sending one publication to one subscriber."""

    publication: Publication
    transceiver: RTCRtpTransceiver


@dataclass(eq=False)
class Member:
    """One participant's media connection to this node."""

    participant_id: UUID
    room: "MediaRoom"
    role: CallRole
    pc: RTCPeerConnection
    terms: Terms
    """What the participant's first offer called each codec and extension; the node's own
    offers use the same (see ``offers.py``)."""
    publications: list[Publication] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    offering: bool = False
    """An offer of the node's waits for this participant's answer."""
    stale: bool = False
    """What this participant receives changed since the last offer."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    window: deque[tuple[float, int]] = field(default_factory=deque)
    """(arrival, bytes) of received frames over the last second: the publishing rate."""
    over_since: float | None = None
    closed: bool = False

    def rate_kbps(self, now: float) -> float:
        while self.window and self.window[0][0] < now - 1.0:
            self.window.popleft()
        return sum(size for _, size in self.window) * 8 / 1000


@dataclass(eq=False)
class MediaRoom:
    room_id: UUID
    clinic_id: str
    members: dict[UUID, Member] = field(default_factory=dict)
    recorder: "Recorder | None" = None

    def publications(self) -> list[Publication]:
        return [p for m in self.members.values() for p in m.publications]


class Sfu:
    """The rooms whose media runs through this process."""

    def __init__(self, settings: MediaSettings, send: Send) -> None:
        self.settings = settings
        self.send = send
        self.rooms: dict[UUID, MediaRoom] = {}
        self.relay = MediaRelay() if settings.forwarding == "transcode" else None
        self._tasks: set[asyncio.Task[None]] = set()

    def configuration(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in self.settings.ice_servers
        ]
        # One transport per connection: the node's own offers add transceivers all the time.
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    def member(self, participant_id: UUID) -> Member | None:
        for room in self.rooms.values():
            if participant_id in room.members:
                return room.members[participant_id]
        return None

    # -- negotiation --------------------------------------------------------------------------

    async def offer(
        self, room_id: UUID, clinic_id: str, participant_id: UUID, role: CallRole, sdp: str
    ) -> MediaSignal:
        """A participant's first offer (or a fresh start): a new connection, and its answer."""
        try:
            terms = Terms(sdp)
        except Exception as exc:  # aiortc's parser raises many kinds for text it cannot read
            raise SignalRefused(
                "sdp_invalid", f"The media offer could not be used: {_sentence(exc)}"
            ) from exc
        old = self.member(participant_id)
        if old is not None:
            if old.offering:
                raise SignalRefused(
                    "renegotiating", "Answer the server's offer first, then offer again."
                )
            await self.close_member(old, reason=None)
        room = self.rooms.setdefault(room_id, MediaRoom(room_id, clinic_id))
        pc = RTCPeerConnection(self.configuration())
        member = Member(participant_id, room, role, pc, terms)
        pc.on("track", lambda track: self._published(member, track))
        pc.on("connectionstatechange", lambda: self._state_changed(member))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self._check_codecs(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except SignalRefused:
            await pc.close()
            raise
        except Exception as exc:  # aiortc raises many kinds for an offer it cannot use
            await pc.close()
            log.info("offer refused", participant_id=str(participant_id), error=repr(exc))
            raise SignalRefused(
                "sdp_invalid", f"The media offer could not be used: {_sentence(exc)}"
            ) from exc
        room.members[participant_id] = member
        member.stale = any(p.owner is not member for p in room.publications())
        self._spawn(self._connect_deadline(member))
        for publication in member.publications:
            self._spawn(self._fan_out(publication))
        return MediaSignal(participant_id=participant_id, kind=SignalKind.answer, sdp=_sdp(pc))

    async def answer(self, participant_id: UUID, sdp: str) -> None:
        """The participant's answer to the node's last offer."""
        member = self.member(participant_id)
        if member is None or not member.offering:
            raise SignalRefused("no_offer", "There is no offer from the server to answer.")
        try:
            await member.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            log.info("answer refused", participant_id=str(participant_id), error=repr(exc))
            await self.close_member(member, "sdp_invalid", "The media answer could not be used.")
            raise SignalRefused(
                "sdp_invalid", f"The media answer could not be used: {_sentence(exc)}"
            ) from exc
        member.offering = False
        if member.stale:
            self._spawn(self._renegotiate(member))

    async def candidate(self, participant_id: UUID, signal: MediaSignal) -> None:
        member = self.member(participant_id)
        if member is None:
            raise SignalRefused("not_connected", "Send an offer before candidates.")
        if not signal.candidate:
            return  # end of candidates
        try:
            parsed = candidate_from_sdp(signal.candidate.removeprefix("candidate:"))
        except Exception as exc:
            raise SignalRefused("candidate_invalid", "This ICE candidate cannot be read.") from exc
        parsed.sdpMid = signal.sdp_mid
        parsed.sdpMLineIndex = signal.sdp_mline_index
        try:
            await member.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise SignalRefused("candidate_invalid", _sentence(exc)) from exc

    async def bye(self, participant_id: UUID) -> None:
        member = self.member(participant_id)
        if member is not None:
            await self.close_member(member, reason=None)

    def _check_codecs(self, pc: RTCPeerConnection) -> None:
        if not pc.getTransceivers():
            raise SignalRefused("sdp_invalid", "The media offer has no audio or video in it.")
        for transceiver in pc.getTransceivers():
            codecs = transceiver._codecs
            if codecs and codecs[0].mimeType.lower() not in FORWARDED:
                raise SignalRefused("codec_unsupported", CODECS_REFUSED)

    async def _renegotiate(self, member: Member) -> None:
        """Offer this participant the tracks it should receive now; one offer at a time."""
        async with member.lock:
            if member.closed or member.offering or not member.stale:
                return
            if not member.connected.is_set():
                return  # offered once connected (see _state_changed)
            member.stale = False
            self._sync_outgoing(member)
            try:
                made = await member.pc.createOffer()
                await member.pc.setLocalDescription(
                    RTCSessionDescription(sdp=member.terms.rewrite(made.sdp), type="offer")
                )
            except Exception:
                log.warning("offer not made", participant_id=str(member.participant_id))
                await self.close_member(member, "server_error", "The media connection failed.")
                return
            member.offering = True
            offer = MediaSignal(
                participant_id=member.participant_id,
                kind=SignalKind.offer,
                sdp=_sdp(member.pc),
                streams=[
                    MediaStream(
                        mid=o.transceiver.mid,
                        participant_id=o.publication.owner.participant_id,
                        kind=o.publication.kind,
                    )
                    for o in member.outgoing
                    if o.transceiver.mid is not None
                ],
            )
        await self.send(member.participant_id, offer)

    def _sync_outgoing(self, member: Member) -> None:
        """Add a sending transceiver for every publication not yet sent to ``member``; stop
        those of publications that ended (their m-lines stay, inactive)."""
        wanted = [p for p in member.room.publications() if p.owner is not member]
        have = {id(o.publication) for o in member.outgoing}
        for outgoing in [o for o in member.outgoing if o.publication not in wanted]:
            outgoing.transceiver.direction = "inactive"
            copy = outgoing.publication.copies.pop(member.participant_id, None)
            if copy is not None:
                copy.stop()
            member.outgoing.remove(outgoing)
        for publication in wanted:
            if id(publication) in have:
                continue
            copy = self._copy(publication, member)
            transceiver = member.pc.addTransceiver(copy, direction="sendonly")
            preferred = [
                c
                for c in RTCRtpSender.getCapabilities(publication.kind).codecs
                if c.mimeType.lower() in (publication.mime_type, "video/rtx")
            ]
            transceiver.setCodecPreferences(preferred)
            if self.relay is None:  # (re-encoding senders make their own keyframes)
                on_keyframe_request(transceiver.sender, self._keyframe_for(publication))
            member.outgoing.append(Outgoing(publication, transceiver))

    def _keyframe_for(self, publication: Publication) -> Callable[[], None]:
        interval = self.settings.keyframe_interval_s
        return lambda: publication.want_keyframe(interval)

    def _copy(self, publication: Publication, subscriber: Member) -> MediaStreamTrack:
        copy: MediaStreamTrack
        if self.relay is not None:  # decode once, encode per subscriber (comparison only)
            copy = self.relay.subscribe(publication.track)
        else:
            interval = self.settings.keyframe_interval_s
            copy = ForwardedTrack(publication.kind, lambda: publication.want_keyframe(interval))
            publication.want_keyframe(interval)
        publication.copies[subscriber.participant_id] = copy
        return copy

    # -- what arrives -------------------------------------------------------------------------

    def _published(self, member: Member, track: MediaStreamTrack) -> None:
        transceiver = next(t for t in member.pc.getTransceivers() if t.receiver.track is track)
        codecs = transceiver._codecs
        mime = codecs[0].mimeType.lower() if codecs else f"{track.kind}/unknown"
        kind: Kind = "audio" if track.kind == "audio" else "video"
        publication = Publication(member, kind, mime, transceiver.receiver, track)
        member.publications.append(publication)
        # Transcoding (the comparison) decodes as well; the tap still watches the rates.
        decode = self.relay is not None
        tap_receiver(transceiver.receiver, lambda f: self._arrived(publication, f), decode=decode)

    def _arrived(self, publication: Publication, frame: EncodedFrame) -> None:
        """Runs in aiortc's packet handling for every complete frame: keep it short."""
        publication.frames += 1
        publication.last_frame_at = frame.arrived
        member = publication.owner
        member.window.append((frame.arrived, len(frame.data)))
        if self.relay is None:
            for copy in publication.copies.values():
                copy.push(frame)  # type: ignore[attr-defined]
        recorder = member.room.recorder
        if recorder is not None:
            recorder.add(str(member.participant_id), frame)

    async def _fan_out(self, publication: Publication) -> None:
        """A new publication: every other member of the room must be offered it."""
        for other in list(publication.owner.room.members.values()):
            if other is not publication.owner:
                other.stale = True
                await self._renegotiate(other)

    def _state_changed(self, member: Member) -> None:
        state = member.pc.connectionState
        if state == "connected":
            member.connected.set()
            self._spawn(self._renegotiate(member))
        elif state in ("failed", "closed") and not member.closed:
            self._spawn(
                self.close_member(member, "connection_lost", "The media connection was lost.")
            )

    async def _connect_deadline(self, member: Member) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await member.connected.wait()
        except TimeoutError:
            await self.close_member(
                member, "connect_timeout", "The media connection could not be established."
            )

    # -- leaving ------------------------------------------------------------------------------

    async def close_member(self, member: Member, reason: str | None, message: str = "") -> None:
        """Close one participant's connection; the others stop receiving it. ``reason`` is
        told to the participant (none when they asked for it themselves)."""
        if member.closed:
            return
        member.closed = True
        room = member.room
        if room.members.get(member.participant_id) is member:
            del room.members[member.participant_id]
        for publication in member.publications:
            publication.close()
        for outgoing in member.outgoing:
            copy = outgoing.publication.copies.pop(member.participant_id, None)
            if copy is not None:
                copy.stop()
        if room.recorder is not None:
            room.recorder.remove(str(member.participant_id))
        with contextlib.suppress(Exception):
            await member.pc.close()
        log.info(
            "media connection closed", participant_id=str(member.participant_id), reason=reason
        )
        if reason is not None:
            bye = MediaSignal(
                participant_id=member.participant_id,
                kind=SignalKind.bye,
                reason=reason,
                message=message,
            )
            with contextlib.suppress(Exception):
                await self.send(member.participant_id, bye)
        for other in list(room.members.values()):
            if any(o.publication.owner is member for o in other.outgoing):
                other.stale = True
                self._spawn(self._renegotiate(other))
        if not room.members and room.recorder is None:
            self.rooms.pop(room.room_id, None)

    async def release(self, room_id: UUID, participant_id: UUID | None, reason: str) -> None:
        """Seats were released: close the connections that held them."""
        room = self.rooms.get(room_id)
        if room is None:
            return
        members = list(room.members.values())
        for member in members:
            if participant_id is None or member.participant_id == participant_id:
                await self.close_member(member, reason, "You are no longer in this call.")

    # -- the watchdog -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Background task: close connections that publish far above the allowed rate, or
        whose media stopped without a goodbye."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                for member in list(room.members.values()):
                    await self._police(member, now)

    async def _police(self, member: Member, now: float) -> None:
        limit = self.settings.max_publish_kbps
        if member.rate_kbps(now) > 2 * limit:
            member.over_since = member.over_since or now
            if now - member.over_since >= self.settings.over_bitrate_s:
                await self.close_member(
                    member,
                    "bitrate_exceeded",
                    f"Your connection sent far more than {limit} kbit/s; lower your video "
                    "quality and join again.",
                )
                return
        else:
            member.over_since = None
        if member.publications and member.connected.is_set():
            latest = max(p.last_frame_at for p in member.publications)
            if now - latest > self.settings.silence_timeout_s:
                await self.close_member(
                    member, "media_timeout", "No media arrived from you for too long."
                )

    # -- recording ----------------------------------------------------------------------------

    def start_recording(self, room_id: UUID, clinic_id: str, recorder: "Recorder") -> None:
        room = self.rooms.setdefault(room_id, MediaRoom(room_id, clinic_id))
        room.recorder = recorder
        for publication in room.publications():
            if publication.kind == "video":
                publication.want_keyframe(self.settings.keyframe_interval_s)

    def keyframe_for_recording(self, room_id: UUID, source: str) -> None:
        """The recorder lost a participant's picture: ask their camera for a keyframe."""
        room = self.rooms.get(room_id)
        member = room.members.get(UUID(source)) if room is not None else None
        for publication in member.publications if member is not None else []:
            if publication.kind == "video":
                publication.want_keyframe(self.settings.keyframe_interval_s)

    def stop_recording(self, room_id: UUID) -> "Recorder | None":
        room = self.rooms.get(room_id)
        if room is None:
            return None
        recorder, room.recorder = room.recorder, None
        if not room.members:
            self.rooms.pop(room_id, None)
        return recorder

    # -- plumbing -----------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("media task failed", error=repr(task.exception()))

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for member in list(room.members.values()):
                await self.close_member(member, "node_stopping", "The video server is restarting.")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _sdp(pc: RTCPeerConnection) -> str:
    description = pc.localDescription
    assert description is not None
    return description.sdp


def _sentence(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
