"""The selective forwarding unit: one WebRTC connection per participant, RTP packets fanned out.

Each participant's browser connects once (its offer carries what it publishes) and gets, on
the same connection, one sending transceiver per track of every other participant. aiortc
runs ICE, DTLS and SRTP; the node forwards the packets itself (:mod:`services.media.forwarding`):
each publisher's decrypted RTP goes straight from its socket to an :class:`Upstream`, which
writes one rewritten, protected copy per subscriber's :class:`Downstream`. Nothing is decoded
here; a recording gets the packets in its own process.

Negotiation after the first offer is the node's: when the tracks a participant should
receive change, the node offers (on ``participant_subject``) once that participant's
connection is up and no offer of its is pending, and applies the answer that comes back.
Keyframe requests from subscribers reach the publisher, at most one per
``keyframe_interval_s`` per track; a new subscriber gets no video until a keyframe. A
subscriber's m-line for a person's audio or video stays the same stream when that person
reconnects: it is bound to their new track without a new offer. A connection lost while its
seat is still the person's (a page reload, a network change) leaves their m-lines on the
others' connections, silent (``MediaRoom.away``), until they come back or the seat is released.
"""

import asyncio
import contextlib
import functools
import time
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
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from contracts.media import MediaSignal, MediaStream, SignalKind
from contracts.signaling import CallRole
from services.media import aiortc_hooks, metrics
from services.media.aiortc_hooks import RtcpHandler, Wire
from services.media.config import MediaSettings
from services.media.forwarding import NTP_EPOCH_OFFSET, Downstream, Upstream, ntp_now
from services.media.keyframes import keyframe_test
from services.media.offers import Terms, with_opus_dtx
from services.media.quality import LinkMeter
from services.media.recorder import SCREEN_SUFFIX, screen_source
from services.media.reports import send_reports
from services.media.rtp import AUDIO_LEVEL, HEADER, MalformedRtp, RtpView, parse
from services.media.speakers import LoudestSpeakers, Voice

if TYPE_CHECKING:
    from services.media.recorder import Recorder

log = structlog.get_logger(__name__)
Kind = Literal["audio", "video"]
Source = Literal["audio", "video", "screen"]
"""What a publication is: a person's microphone, camera, or the call's screen share."""
Send = Callable[[UUID, MediaSignal], Awaitable[None]]

FORWARDED = {"audio/opus", "video/vp8", "video/h264"}
CODECS_REFUSED = (
    "Your browser offered no codec this server forwards (audio: Opus; video: VP8 or H.264)."
)
NACK_EVERY_S = 0.05
"""How often missing packets are asked for again (each at most three times)."""


class SignalRefused(Exception):
    """A negotiation message the node cannot act on; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class Publication:
    """One track a participant publishes."""

    owner: "Member"
    kind: Kind
    mime_type: str
    receiver: RTCRtpReceiver
    track: MediaStreamTrack
    screen: bool = False
    """The call's screen share (a second video of its sharer's)."""
    upstream: Upstream | None = None
    """The packet path (None when transcoding, the benchmark's comparison)."""
    voice: Voice | None = None
    last_keyframe_request: float = 0.0
    keyframe_pending: asyncio.TimerHandle | None = None
    copies: dict[UUID, MediaStreamTrack] = field(default_factory=dict)
    """Transcoding only: one re-encoding track per subscriber."""

    @property
    def source(self) -> Source:
        return "screen" if self.screen else self.kind

    @property
    def key(self) -> tuple[UUID, Source]:
        return self.owner.participant_id, self.source

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
        upstream = self.upstream
        if upstream is not None and upstream.ssrc is not None:
            self.owner.send_feedback(
                bytes(RtcpPsfbPacket(RTCP_PSFB_PLI, self.owner.rtcp_ssrc, upstream.ssrc))
            )

    def close(self) -> None:
        if self.keyframe_pending is not None:
            self.keyframe_pending.cancel()
        if self.upstream is not None:
            for downstream in list(self.upstream.downstreams):
                downstream.bind(None)
            self.upstream.record = None
        for copy in self.copies.values():
            copy.stop()
        self.copies.clear()


@dataclass(eq=False)
class Outgoing:
    """A transceiver sending one person's audio or video to one subscriber."""

    publication: Publication
    transceiver: RTCRtpTransceiver
    downstream: Downstream | None = None

    @property
    def key(self) -> tuple[UUID, Source]:
        return self.publication.key


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
    wire: Wire | None = None
    """The connection's sockets, once it is up (packet path only)."""
    by_payload_type: dict[int, Upstream] = field(default_factory=dict)
    by_ssrc: dict[int, Upstream] = field(default_factory=dict)
    rtcp_ssrc: int = 0
    ntp_offset: float | None = None
    """Our NTP clock minus the publisher's (smallest seen: least delayed), in seconds."""
    bytes_received: int = 0
    rate_mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))
    malformed: int = 0
    nacked: int = 0
    """Sequence numbers asked of this publisher again."""
    repaired: int = 0
    """Retransmissions (RTX) that came back from this publisher."""
    over_since: float | None = None
    closed: bool = False
    link: LinkMeter = field(default_factory=LinkMeter)
    """What their RTCP and packets say of their network (see ``quality.py``)."""
    screen_slot: RTCRtpTransceiver | None = None
    """The m-line the node receives their screen share on, while signaling grants it."""
    screen_ssrcs: tuple[int | None, int | None] = (None, None)
    """The SSRCs (media, RTX) their answer announced for ``screen_slot``."""
    pinned: bool = False
    """They send (or may send) a second video of the camera's payload type (a screen, or an
    extra track not forwarded): an unknown SSRC is never taken for a known stream's."""

    def rate_kbps(self, now: float) -> float:
        """What arrived since the last call, per second."""
        since, before = self.rate_mark
        self.rate_mark = (now, self.bytes_received)
        return 0.0 if now <= since else (self.bytes_received - before) * 8 / 1000 / (now - since)

    def send_feedback(self, packet: bytes) -> None:
        if self.wire is not None:
            self.wire.send_rtcp(packet)


@dataclass(eq=False)
class MediaRoom:
    room_id: UUID
    clinic_id: str
    speakers: LoudestSpeakers
    members: dict[UUID, Member] = field(default_factory=dict)
    recorder: "Recorder | None" = None
    away: set[UUID] = field(default_factory=set)
    """People whose connection was lost while their seat is theirs: the others keep their
    m-lines (silent) for when they come back, with no offer either way."""
    sharer: UUID | None = None
    """Whom signaling granted the screen share: the only one a screen is taken from."""

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
        self._voice_limits: dict[UUID, int] = {}
        self._muted: dict[UUID, set[UUID]] = {}
        """By room: whose audio a host muted (kept across their reconnections, until signaling
        says they turned it on, or their seat is released)."""
        """Rooms whose clinic says how many voices to forward (others: the node's default)."""
        self._closed_counts: dict[str, int] = {}
        """What connections that have closed counted (see :meth:`counters`)."""
        metrics.packet_path.sfus.add(self)

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

    def room(self, room_id: UUID, clinic_id: str) -> MediaRoom:
        room = self.rooms.get(room_id)
        if room is None:
            limit = self._voice_limits.get(room_id, self.settings.loudest_speakers)
            room = MediaRoom(room_id, clinic_id, LoudestSpeakers(limit))
            self.rooms[room_id] = room
        return room

    def limit_voices(self, room_id: UUID, limit: int) -> None:
        """The room's clinic forwards the ``limit`` loudest voices (0: all)."""
        self._voice_limits[room_id] = limit
        room = self.rooms.get(room_id)
        if room is not None and room.speakers.limit != limit:
            room.speakers.resize(limit, time.monotonic())

    def mute(self, room_id: UUID, participant_id: UUID, muted: bool) -> None:
        """A host muted ``participant_id`` (``muted``), or they turned their microphone on:
        their audio is forwarded (and recorded) or not, now and when they reconnect."""
        held = self._muted.setdefault(room_id, set())
        if muted:
            held.add(participant_id)
        else:
            held.discard(participant_id)
            if not held:
                del self._muted[room_id]
        room = self.rooms.get(room_id)
        member = room.members.get(participant_id) if room is not None else None
        for publication in member.publications if member is not None else []:
            upstream = publication.upstream
            if publication.kind != "audio" or upstream is None:
                continue
            if muted:
                upstream.mute()
            else:
                upstream.unmute()
        log.info("audio muted by a host" if muted else "audio unmuted", room_id=str(room_id))

    # -- negotiation --------------------------------------------------------------------------

    async def offer(
        self, room_id: UUID, clinic_id: str, participant_id: UUID, role: CallRole, sdp: str
    ) -> MediaSignal:
        """A participant's first offer (or a fresh start): a new connection, and its answer.

        A fresh start replaces the participant's connection, also while an offer of the node's
        to the old one is pending (it goes with the old connection); the others keep receiving
        them on the same m-lines (bound to the new tracks, no new offer), also when the old
        connection was lost before."""
        try:
            terms = Terms(sdp)
        except Exception as exc:  # aiortc's parser raises many kinds for text it cannot read
            raise SignalRefused(
                "sdp_invalid", f"The media offer could not be used: {_sentence(exc)}"
            ) from exc
        old = self.member(participant_id)
        room = self.room(room_id, clinic_id)
        pc = RTCPeerConnection(self.configuration())
        member = Member(participant_id, room, role, pc, terms)
        pc.on("track", lambda track: self._published(member, track))
        pc.on("connectionstatechange", lambda: self._state_changed(member))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self._check_codecs(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            if self.relay is None:
                # From here on the connection's RTP is ours, in the order it comes.
                receive = functools.partial(self._ingress, member)
                aiortc_hooks.on_rtp(pc, receive)
                member.wire = Wire(pc, receive)
        except SignalRefused:
            await self._abandon(member)
            raise
        except Exception as exc:  # aiortc raises many kinds for an offer it cannot use
            await self._abandon(member)
            log.info("offer refused", participant_id=str(participant_id), error=repr(exc))
            raise SignalRefused(
                "sdp_invalid", f"The media offer could not be used: {_sentence(exc)}"
            ) from exc
        if old is not None:
            await self.close_member(old, reason=None, successor=member)
        room.members[participant_id] = member
        if participant_id in room.away:
            room.away.discard(participant_id)
            self._come_back(member)
        member.stale = room.sharer == participant_id or any(
            p.owner is not member for p in room.publications()
        )
        self._spawn(self._connect_deadline(member))
        for publication in member.publications:
            self._spawn(self._fan_out(publication))
        return MediaSignal(participant_id=participant_id, kind=SignalKind.answer, sdp=_sdp(pc))

    async def _abandon(self, member: Member) -> None:
        """A connection whose offer failed: nothing of it stays."""
        self._unplug(member)
        await member.pc.close()
        if not member.room.members and member.room.recorder is None:
            self.rooms.pop(member.room.room_id, None)

    async def answer(self, participant_id: UUID, sdp: str) -> None:
        """The participant's answer to the node's last offer."""
        member = self.member(participant_id)
        if member is None or not member.offering:
            raise SignalRefused("no_offer", "There is no offer from the server to answer.")
        screens = [p for p in member.publications if p.screen]
        try:
            if member.screen_slot is not None:
                member.screen_ssrcs = _announced_ssrcs(sdp, member.screen_slot.mid)
            await member.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            log.info("answer refused", participant_id=str(participant_id), error=repr(exc))
            await self.close_member(
                member, "sdp_invalid", "The media answer could not be used.", away=True
            )
            raise SignalRefused(
                "sdp_invalid", f"The media answer could not be used: {_sentence(exc)}"
            ) from exc
        member.offering = False
        self._bind_outgoing(member)
        for publication in member.publications:
            if publication.screen and publication not in screens:
                self._spawn(self._fan_out(publication))  # a share began: offer it to everyone
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
            self._sync_screen_slot(member)
            self._sync_outgoing(member)
            try:
                made = await member.pc.createOffer()
                await member.pc.setLocalDescription(
                    RTCSessionDescription(sdp=member.terms.rewrite(made.sdp), type="offer")
                )
            except Exception:
                log.warning("offer not made", participant_id=str(member.participant_id))
                await self.close_member(
                    member, "server_error", "The media connection failed.", away=True
                )
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
                        kind=o.publication.source,
                    )
                    for o in member.outgoing
                    if o.transceiver.mid is not None
                ],
                screen_mid=member.screen_slot.mid if member.screen_slot is not None else None,
            )
        await self.send(member.participant_id, offer)

    # -- the screen share ---------------------------------------------------------------------

    def share(self, room_id: UUID, clinic_id: str, participant_id: UUID, grant: bool) -> None:
        """Signaling granted the room's screen share to ``participant_id`` (ending any other),
        or ended theirs. The sharer is offered an m-line to send it on (``screen_mid``); an
        ended share stops being forwarded at once, and everyone is offered the room without it."""
        room = self.rooms.get(room_id)
        if room is None:
            if not grant:
                return
            room = self.room(room_id, clinic_id)
        if grant:
            previous, room.sharer = room.sharer, participant_id
            if previous is not None and previous != participant_id:
                self._screen_changed(room, previous)
            self._screen_changed(room, participant_id)
        elif room.sharer == participant_id:
            room.sharer = None
            self._screen_changed(room, participant_id)
        if not room.members and room.recorder is None and room.sharer is None:
            self.rooms.pop(room_id, None)

    def _screen_changed(self, room: MediaRoom, participant_id: UUID) -> None:
        member = room.members.get(participant_id)
        if member is None:
            return  # offered (or not) when they connect
        if room.sharer != participant_id:
            self._end_screen(member)
        member.stale = True
        self._spawn(self._renegotiate(member))

    def _sync_screen_slot(self, member: Member) -> None:
        """Before an offer: an m-line to receive the sharer's screen on, and none for anyone
        else (a slot that is given up stays in the description, inactive)."""
        sharing = member.room.sharer == member.participant_id
        if sharing and member.screen_slot is None and self.relay is None:
            member.screen_slot = member.pc.addTransceiver("video", direction="recvonly")
            member.pinned = True
        elif not sharing and member.screen_slot is not None:
            member.screen_slot.direction = "inactive"
            member.screen_slot = None
            self._end_screen(member)

    def _end_screen(self, member: Member) -> None:
        """Stop forwarding ``member``'s screen: its copies stop now, its m-lines go in the
        next offers. Its SSRCs stay known (to a closed stream), so that packets still on
        their way are never taken for the camera's."""
        for publication in [p for p in member.publications if p.screen]:
            publication.close()
            member.publications.remove(publication)
            room = member.room
            if room.recorder is not None:
                room.recorder.remove(screen_source(member.participant_id))
            for other in room.members.values():
                if other is not member and any(o.key == publication.key for o in other.outgoing):
                    other.stale = True
                    self._spawn(self._renegotiate(other))

    def _sync_outgoing(self, member: Member) -> None:
        """One sending transceiver per person and kind ``member`` should receive: new ones for
        new publications, those of people who left stopped (their m-lines stay, inactive)."""
        wanted = {p.key: p for p in member.room.publications() if p.owner is not member}
        for outgoing in list(member.outgoing):
            publication = wanted.get(outgoing.key)
            if publication is None and outgoing.key[0] in member.room.away:
                continue  # kept, silent, for when they come back
            if publication is None:
                outgoing.transceiver.direction = "inactive"
                self._stop_outgoing(member, outgoing)
                member.outgoing.remove(outgoing)
            elif publication is not outgoing.publication:
                self._rebind(member, outgoing, publication)
        have = {o.key for o in member.outgoing}
        for key, publication in wanted.items():
            if key not in have:
                member.outgoing.append(self._add_outgoing(member, publication))

    def _add_outgoing(self, member: Member, publication: Publication) -> Outgoing:
        if self.relay is not None:  # decode once, encode per subscriber (comparison only)
            copy = self.relay.subscribe(publication.track)
            publication.copies[member.participant_id] = copy
            transceiver = member.pc.addTransceiver(copy, direction="sendonly")
        else:
            transceiver = member.pc.addTransceiver(publication.kind, direction="sendonly")
            aiortc_hooks.idle_sender(transceiver.sender)
        preferred = [
            c
            for c in RTCRtpSender.getCapabilities(publication.kind).codecs
            if c.mimeType.lower() in (publication.mime_type, f"{publication.kind}/rtx")
        ]
        transceiver.setCodecPreferences(preferred)
        return Outgoing(publication, transceiver)

    def _bind_outgoing(self, member: Member) -> None:
        """After an answer: every outgoing m-line's packet path, in the terms just agreed."""
        if self.relay is not None or member.wire is None:
            return
        for outgoing in member.outgoing:
            terms = aiortc_hooks.negotiated(outgoing.transceiver)
            if terms is None:
                continue
            payload_type = terms.payload_type(outgoing.publication.mime_type)
            if payload_type is None:
                continue
            downstream = outgoing.downstream
            if downstream is None:
                sender = outgoing.transceiver.sender
                ssrc, rtx_ssrc = aiortc_hooks.sender_ssrcs(sender)
                clock_rate = terms.codecs[payload_type].clockRate
                downstream = Downstream(
                    outgoing.publication.kind,
                    clock_rate,
                    ssrc=ssrc,
                    rtx_ssrc=rtx_ssrc,
                    wire=member.wire,
                )
                outgoing.downstream = downstream
                aiortc_hooks.on_sender_rtcp(sender, self._feedback_handler(member, outgoing))
            rtx = terms.rtx_for(payload_type)
            downstream.terms(terms.mid, payload_type, rtx, terms.extensions)
            downstream.bind(outgoing.publication.upstream)

    def _rebind(self, member: Member, outgoing: Outgoing, publication: Publication) -> None:
        """The person behind ``outgoing`` reconnected: carry their new track on the same m-line."""
        old = outgoing.publication
        copy = old.copies.pop(member.participant_id, None)
        if copy is not None:
            copy.stop()
        outgoing.publication = publication
        if outgoing.downstream is not None:
            outgoing.downstream.bind(publication.upstream)
        elif self.relay is not None:
            copy = self.relay.subscribe(publication.track)
            publication.copies[member.participant_id] = copy
            outgoing.transceiver.sender.replaceTrack(copy)

    def _stop_outgoing(self, member: Member, outgoing: Outgoing) -> None:
        copy = outgoing.publication.copies.pop(member.participant_id, None)
        if copy is not None:
            copy.stop()
        if outgoing.downstream is not None:
            outgoing.downstream.bind(None)

    # -- what arrives -------------------------------------------------------------------------

    def _published(self, member: Member, track: MediaStreamTrack) -> None:
        transceiver = next(t for t in member.pc.getTransceivers() if t.receiver.track is track)
        codecs = transceiver._codecs
        mime = codecs[0].mimeType.lower() if codecs else f"{track.kind}/unknown"
        kind: Kind = "audio" if track.kind == "audio" else "video"
        screen = transceiver is member.screen_slot
        if screen and member.room.sharer != member.participant_id:
            return  # the share ended while its offer was out: nothing is taken
        publication = Publication(member, kind, mime, transceiver.receiver, track, screen=screen)
        if any(p.key == publication.key for p in member.publications):
            # One microphone and one camera a person; a screen only on the m-line the node
            # offered the sharer. Anything else a browser sends is not forwarded.
            log.info("extra track not forwarded", participant_id=str(member.participant_id))
            member.pinned = True
            return
        member.publications.append(publication)
        if self.relay is not None:
            return  # aiortc receives and decodes; MediaRelay re-encodes per subscriber
        terms = aiortc_hooks.negotiated(transceiver)
        if terms is None or not codecs or codecs[0].payloadType is None:
            return
        payload_type = codecs[0].payloadType
        upstream = Upstream(
            kind=kind,
            mime_type=mime,
            clock_rate=codecs[0].clockRate,
            payload_type=payload_type,
            rtx_payload_type=terms.rtx_for(payload_type),
            level_id=terms.extensions.get(AUDIO_LEVEL) if kind == "audio" else None,
            keyframe_test=keyframe_test(mime),
            nack=terms.feedback(payload_type, "nack"),
        )
        interval = self.settings.keyframe_interval_s
        upstream.request_keyframe = lambda: publication.want_keyframe(interval)
        publication.upstream = upstream
        if screen:
            # The camera has the same payload type: the screen is told apart by the SSRCs
            # the sharer's answer announced for this m-line.
            self._route_screen(member, upstream)
        else:
            member.by_payload_type[payload_type] = upstream
            if upstream.rtx_payload_type is not None:
                member.by_payload_type[upstream.rtx_payload_type] = upstream
        if member.rtcp_ssrc == 0:
            member.rtcp_ssrc = aiortc_hooks.receiver_ssrc(transceiver.receiver) or 0
        aiortc_hooks.on_receiver_rtcp(transceiver.receiver, self._report_handler(member))
        if upstream.level_id is not None:
            speakers = member.room.speakers
            voice = Voice(
                host=member.role == CallRole.host,
                on_change=lambda on: upstream.resume() if on else upstream.hold(),
            )
            publication.voice = voice
            upstream.forwarding = False  # until the room's selection lets this voice through
            upstream.heard = lambda activity, level, now: speakers.heard(
                voice, activity, level, now
            )
            speakers.join(voice)
        if kind == "audio" and member.participant_id in self._muted.get(member.room.room_id, ()):
            upstream.mute()  # they reconnected while a host's mute holds
        recorder = member.room.recorder
        if recorder is not None:
            self._record(publication, recorder)

    def _ingress(self, member: Member, data: bytes, now: float) -> None:
        """Every decrypted RTP packet of ``member``'s: runs in the socket's callback."""
        member.bytes_received += len(data)
        try:
            view = parse(data)
        except MalformedRtp:
            member.malformed += 1
            return
        upstream = member.by_ssrc.get(view.ssrc)
        if upstream is None:
            upstream = member.by_payload_type.get(view.payload_type)
            if upstream is None:
                member.malformed += 1
                return
            rtx = view.payload_type == upstream.rtx_payload_type
            if member.pinned and (upstream.rtx_ssrc if rtx else upstream.ssrc) is not None:
                return  # another video's packet (a screen before its answer): not this one's
            if rtx:
                upstream.rtx_ssrc = view.ssrc
            else:
                upstream.ssrc = view.ssrc
            member.by_ssrc[view.ssrc] = upstream
        if view.ssrc == upstream.rtx_ssrc:
            if len(view.payload) < 2 or upstream.ssrc is None:
                return
            # RTX (RFC 4588): the original sequence number, then the original payload.
            view.sequence = int.from_bytes(view.payload[:2], "big")
            view.payload = view.payload[2:]
            view.payload_type = upstream.payload_type
            view.ssrc = upstream.ssrc
            member.repaired += 1
            upstream.repaired += 1
            if upstream.record is not None:
                data = _unwrapped(view)
        elif view.payload_type != upstream.payload_type:
            member.malformed += 1  # a codec the node did not agree to forward
            return
        if upstream.receive(view, data, now):
            self._nack(member, upstream, now)

    def _route_screen(self, member: Member, upstream: Upstream) -> None:
        """The screen's packets go to ``upstream`` by the SSRCs the answer announced (taken
        back from the camera if some came before the answer and were taken for its)."""
        for ssrc, rtx in zip(member.screen_ssrcs, (False, True), strict=True):
            if ssrc is None:
                continue
            taken = member.by_ssrc.get(ssrc)
            if taken is not None and taken is not upstream:
                if taken.ssrc == ssrc:
                    taken.ssrc = None
                if taken.rtx_ssrc == ssrc:
                    taken.rtx_ssrc = None
            if rtx:
                upstream.rtx_ssrc = ssrc
            else:
                upstream.ssrc = ssrc
            member.by_ssrc[ssrc] = upstream

    def _nack(self, member: Member, upstream: Upstream, now: float) -> None:
        lost = upstream.stats.due_nacks(now)
        if lost and upstream.ssrc is not None:
            packet = RtcpRtpfbPacket(RTCP_RTPFB_NACK, member.rtcp_ssrc, upstream.ssrc)
            packet.lost = lost
            member.nacked += len(lost)
            member.send_feedback(bytes(packet))

    def _report_handler(self, member: Member) -> RtcpHandler:
        """RTCP about a publisher's stream: its sender reports, for ours and for lip sync."""

        async def handle(packet: AnyRtcpPacket) -> None:
            if not isinstance(packet, RtcpSrPacket):
                return
            upstream = member.by_ssrc.get(packet.ssrc)
            if upstream is None:
                return
            ntp = packet.sender_info.ntp_timestamp
            upstream.sender_report = (ntp, packet.sender_info.rtp_timestamp, time.monotonic())
            offset = time.time() + NTP_EPOCH_OFFSET - ntp / (1 << 32)
            if member.ntp_offset is None or offset < member.ntp_offset:
                member.ntp_offset = offset

        return handle

    def _feedback_handler(self, member: Member, outgoing: Outgoing) -> RtcpHandler:
        """RTCP from a subscriber about one m-line: NACK, PLI/FIR, REMB, and receiver reports
        (for ``member``'s network quality)."""
        interval = self.settings.keyframe_interval_s

        async def handle(packet: AnyRtcpPacket) -> None:
            downstream = outgoing.downstream
            if downstream is None:
                return
            if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
                for block in packet.reports:
                    if block.ssrc == downstream.ssrc:
                        member.link.receiver_report(
                            block,
                            downstream.kind,
                            downstream.clock_rate,
                            downstream.upstream,
                            ntp_now(),
                            time.monotonic(),
                        )
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                downstream.resend(packet.lost, time.monotonic())
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
                RTCP_PSFB_PLI,
                RTCP_PSFB_FIR,
            ):
                outgoing.publication.want_keyframe(interval)
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                with contextlib.suppress(ValueError):
                    downstream.remb = unpack_remb_fci(packet.fci)[0]
                    member.link.bitrate_estimate(downstream.remb, time.monotonic())

        return handle

    async def _fan_out(self, publication: Publication) -> None:
        """A new publication: every other member of the room that has no m-line for this
        person's track yet must be offered it."""
        for other in list(publication.owner.room.members.values()):
            if other is publication.owner:
                continue
            if any(o.key == publication.key for o in other.outgoing):
                self._sync_outgoing(other)  # a reconnect: bound to the same m-line
                continue
            other.stale = True
            await self._renegotiate(other)

    def _state_changed(self, member: Member) -> None:
        state = member.pc.connectionState
        if state == "connected":
            if member.wire is not None:
                member.wire.refresh()
            member.connected.set()
            self._spawn(self._renegotiate(member))
        elif state == "closed" and not member.closed:
            # The browser closed it (a reload, a fresh start): it knows, and is not told.
            self._spawn(self.close_member(member, None, away=True))
        elif state == "failed" and not member.closed:
            self._spawn(
                self.close_member(
                    member, "connection_lost", "The media connection was lost.", away=True
                )
            )

    async def _connect_deadline(self, member: Member) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await member.connected.wait()
        except TimeoutError:
            await self.close_member(
                member,
                "connect_timeout",
                "The media connection could not be established.",
                away=True,
            )

    # -- leaving ------------------------------------------------------------------------------

    async def close_member(
        self,
        member: Member,
        reason: str | None,
        message: str = "",
        successor: Member | None = None,
        *,
        away: bool = False,
    ) -> None:
        """Close one participant's connection; the others stop receiving it, or receive
        ``successor`` (the same person's new connection) on the same m-lines, or, when the
        person is only ``away`` (the connection was lost, the seat is still theirs), keep
        those m-lines, silent, until they come back or the seat is released. ``reason`` is
        told to the participant (none when they asked for it themselves)."""
        if member.closed:
            return
        member.closed = True
        self._unplug(member)
        room = member.room
        if room.members.get(member.participant_id) is member:
            del room.members[member.participant_id]
        for outgoing in member.outgoing:
            self._stop_outgoing(member, outgoing)
        if successor is None and away:
            room.away.add(member.participant_id)
        elif room.recorder is not None and successor is None:
            room.recorder.remove(str(member.participant_id))
            room.recorder.remove(screen_source(member.participant_id))
        with contextlib.suppress(Exception):
            await member.pc.close()
        counts = _counts(member)
        for name, value in counts.items():
            self._closed_counts[name] = self._closed_counts.get(name, 0) + value
        log.info(
            "media connection closed",
            participant_id=str(member.participant_id),
            reason=reason,
            **counts,
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
        if successor is not None:
            self._come_back(successor, member)
        elif not away:
            self._gone(room, member.participant_id)
        if not room.members and room.recorder is None and successor is None:
            self.rooms.pop(room.room_id, None)

    def _come_back(self, member: Member, old: Member | None = None) -> None:
        """``member`` is the same person's new connection: the others receive it on the
        m-lines they had for the old one (or, while they were away, for the lost one); an
        m-line for something they no longer publish is offered away."""
        pid = member.participant_id
        successors = {p.key: p for p in member.publications}
        for other in list(member.room.members.values()):
            if other is member:
                continue
            for outgoing in other.outgoing:
                owner = outgoing.publication.owner
                was_theirs = owner is old if old is not None else owner.participant_id == pid
                if not was_theirs or owner is member:
                    continue
                successor_publication = successors.get(outgoing.key)
                if successor_publication is not None:
                    self._rebind(other, outgoing, successor_publication)
                else:
                    other.stale = True
            if other.stale:
                self._spawn(self._renegotiate(other))

    def _gone(self, room: MediaRoom, participant_id: UUID) -> None:
        """The person is gone from this node: everyone else is offered the room without them."""
        room.away.discard(participant_id)
        for other in list(room.members.values()):
            if any(o.key[0] == participant_id for o in other.outgoing):
                other.stale = True
            if other.stale:
                self._spawn(self._renegotiate(other))

    def _unplug(self, member: Member) -> None:
        """Take ``member``'s connection off the packet path: its sockets first (nothing is
        sent on or taken from it any more), then what it publishes."""
        if member.wire is not None:
            member.wire.close()
        for publication in member.publications:
            publication.close()
            if publication.voice is not None:
                member.room.speakers.leave(publication.voice)

    async def release(self, room_id: UUID, participant_id: UUID | None, reason: str) -> None:
        """Seats were released: close the connections that held them."""
        if participant_id is None:
            self._voice_limits.pop(room_id, None)
            self._muted.pop(room_id, None)
        elif room_id in self._muted:
            self.mute(room_id, participant_id, False)
        room = self.rooms.get(room_id)
        if room is None:
            return
        members = list(room.members.values())
        for member in members:
            if participant_id is None or member.participant_id == participant_id:
                await self.close_member(member, reason, "You are no longer in this call.")
        for gone in list(room.away):
            if participant_id is None or gone == participant_id:
                if room.recorder is not None:
                    room.recorder.remove(str(gone))
                    room.recorder.remove(screen_source(gone))
                self._gone(room, gone)
        if not room.members and room.recorder is None:
            self.rooms.pop(room.room_id, None)

    # -- the watchdog -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Background task: close connections that publish far above the allowed rate, or
        whose media stopped without a goodbye; ask again for missing packets; send the
        reports (see ``reports.py``)."""
        next_watch = next_report = time.monotonic()
        while True:
            await asyncio.sleep(NACK_EVERY_S)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                for member in list(room.members.values()):
                    for publication in member.publications:
                        upstream = publication.upstream
                        if upstream is not None and upstream.stats.missing and upstream.nack:
                            self._nack(member, upstream, now)
            if now >= next_report:
                next_report = now + self.settings.report_interval_s
                send_reports(self, now)
            if now >= next_watch:
                next_watch = now + 1.0
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
                    away=True,
                )
                return
        else:
            member.over_since = None
        upstreams = [p.upstream for p in member.publications if p.upstream is not None]
        if upstreams and member.connected.is_set():
            latest = max(u.last_packet_at for u in upstreams)
            if now - latest > self.settings.silence_timeout_s:
                await self.close_member(
                    member, "media_timeout", "No media arrived from you for too long.", away=True
                )

    # -- recording ----------------------------------------------------------------------------

    def start_recording(self, room_id: UUID, clinic_id: str, recorder: "Recorder") -> None:
        room = self.room(room_id, clinic_id)
        room.recorder = recorder
        for publication in room.publications():
            self._record(publication, recorder)
            if publication.kind == "video":
                publication.want_keyframe(self.settings.keyframe_interval_s)

    def _record(self, publication: Publication, recorder: "Recorder") -> None:
        upstream = publication.upstream
        if upstream is None:
            return
        owner = publication.owner.participant_id
        source = screen_source(owner) if publication.screen else str(owner)
        mime = publication.mime_type

        def record(packet: bytes, keyframe: bool, now: float) -> None:
            recorder.add_packet(source, mime, packet, keyframe, now)

        upstream.record = record

    def keyframe_for_recording(self, room_id: UUID, source: str) -> None:
        """The recorder lost a participant's picture: ask their camera (or screen) for a
        keyframe."""
        room = self.rooms.get(room_id)
        screen = source.endswith(SCREEN_SUFFIX)
        owner = UUID(source.removesuffix(SCREEN_SUFFIX))
        member = room.members.get(owner) if room is not None else None
        for publication in member.publications if member is not None else []:
            if publication.kind == "video" and publication.screen == screen:
                publication.want_keyframe(self.settings.keyframe_interval_s)

    def stop_recording(self, room_id: UUID) -> "Recorder | None":
        room = self.rooms.get(room_id)
        if room is None:
            return None
        recorder, room.recorder = room.recorder, None
        for publication in room.publications():
            if publication.upstream is not None:
                publication.upstream.record = None
        if not room.members:
            self.rooms.pop(room_id, None)
        return recorder

    # -- plumbing -----------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """What the packet path did since the node started (``forwards``: open now)."""
        totals = dict(self._closed_counts)
        for room in self.rooms.values():
            for member in room.members.values():
                for name, value in _counts(member).items():
                    totals[name] = totals.get(name, 0) + value
        totals["forwards"] = sum(
            len(p.upstream.downstreams)
            for room in self.rooms.values()
            for p in room.publications()
            if p.upstream is not None
        )
        return totals

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


def _counts(member: Member) -> dict[str, int]:
    """What one connection's packet path counted."""
    return {
        "received": sum(p.upstream.received for p in member.publications if p.upstream),
        "sent": member.wire.sent if member.wire is not None else 0,
        "resent": sum(o.downstream.resends for o in member.outgoing if o.downstream),
        "malformed": member.malformed,
        "nacked": member.nacked,
        "repaired": member.repaired,
        "unprotect_failures": member.wire.unprotect_failures if member.wire is not None else 0,
    }


def _announced_ssrcs(sdp: str, mid: str | None) -> tuple[int | None, int | None]:
    """The SSRCs (media, RTX) an answer announces for the m-line ``mid`` (``a=ssrc`` and
    ``a=ssrc-group:FID``); none where it announces nothing."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises many kinds; the answer is refused later
        return None, None
    media = next((m for m in parsed.media if m.rtp.muxId == mid), None)
    if media is None or not media.ssrc:
        return None, None
    fid = next((g.items for g in media.ssrc_group if g.semantic == "FID"), None)
    if fid is not None and len(fid) == 2:
        return int(fid[0]), int(fid[1])
    return media.ssrc[0].ssrc, None


def _unwrapped(view: RtpView) -> bytes:
    """An unwrapped retransmission as the original packet (for the recorder)."""
    header = HEADER.pack(
        view.first, view.marker | view.payload_type, view.sequence, view.timestamp, view.ssrc
    )
    return header + view.csrc + view.payload


def _sdp(pc: RTCPeerConnection) -> str:
    description = pc.localDescription
    assert description is not None
    return with_opus_dtx(description.sdp)


def _sentence(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
