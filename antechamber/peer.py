"""A headless participant of a call, for tests and benchmarks: one process per person.

``python -m antechamber.peer '<json config>'`` joins one media node as a browser does behind
signaling (the first offer carries what it publishes; after that it answers the node's
offers as others come and go), publishes synthetic media, receives everyone else's, and
reports one JSON object a line on stdout (errors go to stderr):

- ``ready``: the node's answer to the first offer is applied;
- ``connection_state``: the peer connection's state changed (``state``);
- ``track``: a remote track appeared (``mid``, ``kind``, ``participant_id``), or its mid now
  carries someone else (its counts start again);
- ``first_frame``: its first decoded frame, or its first keyframe when not decoding:
  ``after_s`` the track appeared and ``since_join_s`` the first offer was made;
- ``stats`` every ``report_every_s``, and ``done`` at the end (with ``ended``: ``node``,
  ``signal`` or ``duration``):

  - ``tracks`` by mid, each with ``kind`` and ``participant_id``, and

    - frames: ``frames`` (decoded, or complete encoded frames when not decoding),
      ``keyframes`` (null for video it decodes: aiortc's decoders do not mark keyframes),
      ``first_frame_s`` and ``last_frame_s_ago`` (null before the first frame: a track whose
      frames stopped shows it growing);
    - RTP as it reached aiortc's receiver, before its jitter buffer: ``packets`` (on the
      media SSRCs, so plain retransmissions but not RTX; not those dropped on purpose),
      ``gaps`` (forward jumps in a media SSRC's sequence numbers that skip more than the
      packets dropped on purpose: a stream paused and resumed without renumbering shows
      one), ``audio_level`` (audio: the latest ssrc-audio-level, ``[voice_activity,
      level]``; null when none came);
    - RTCP sender reports: ``sender_reports`` (how many) and ``last_sr`` (``ssrc``,
      ``ntp_timestamp``, ``rtp_timestamp``, ``packet_count``, ``octet_count`` as sent, and
      ``arrived``, this process's ``time.monotonic()`` when it came; null before the first);
    - loss and repair (video): ``dropped_on_purpose``, ``nacks_sent`` (RTCP generic NACK
      packets aiortc sent), ``retransmissions_received`` (RTX packets aiortc restored),
      ``rtx_discarded`` (RTX packets it could not: an SSRC the node did not announce) and
      ``recovered`` (dropped sequence numbers that came again, as RTX or as themselves);

  - ``published`` by kind: what the node said back about each track this peer sends:
    ``receiver_reports`` (report blocks about it), ``fraction_lost`` and ``jitter`` (the
    latest), ``remb_bps`` (the latest bitrate the node asked for, null before any);
  - ``dropped_on_purpose``, ``nacks_sent``, ``retransmissions_received`` and ``recovered``
    over all tracks, ``decode_errors``, ``renegotiations``, ``failed_renegotiations``,
    ``connection_state``;
- ``refused`` (``reason``, ``message``; exit code 3): the node refused the first offer;
- ``bye`` (``reason``, ``message``): the node ended the connection; ``done`` follows, and
  exit code 0.

It leaves on SIGTERM or SIGINT, or after ``duration_s``: a ``bye`` to the node, then ``done``
and exit code 0.

With ``follow_moves`` it reads orders from stdin, one JSON object a line, ``{"node_id": ...,
"participant_token": ...}``, as a browser follows a fresh ``admitted`` frame (its call moved
to another node): it closes its peer connection without a word to the old node, says
``moved`` (``node_id``), and joins the new node with a new peer connection, sending the same
tracks; the events after ``moved`` are the new connection's.

With ``vanish`` it sends nothing and exits at once after ``done``: a publisher whose machine
died.

What it sends (``source``): ``live`` encodes a moving picture and a 440 Hz tone with aiortc's
own encoders; ``loop`` encodes four seconds of them once at start and sends those packets
over and over (aiortc only packetizes, so a publisher costs little CPU), a keyframe on request
and at every restart; ``big`` loops noise at ``video_bitrate`` (8 Mbit/s unless set), far
above what a node should forward.

Video is VP8, or H.264 with ``video_codec: "h264"`` (a loop: libx264, constrained baseline,
Annex B; live: aiortc's encoder); the first offer carries only that codec (H.264 with
packetization-mode=1) and its RTX. With ``rtx: false`` it leaves RTX out of the first offer
and of every answer, so a lost packet can only come again as itself.

Audio is Opus, and every audio packet carries the ssrc-audio-level header extension (RFC
6464), whichever the source. While the person speaks (``speaking``: ``[start_s, end_s)``
intervals since joining; null, the default, is all the time) it says voice activity at
``voice_level`` (-dBov, 0 the loudest; 20 unless set); in between, no voice activity at 127
(silence), and the audio is silence: libopus's 3-byte silence frames for a loop, silent
samples live.

With ``drop_video_every: N`` it throws away every N-th new packet of each received video
stream (from its second packet on; never a retransmission, nor RTX) as it comes off the
network, before SRTP as a lossy network would: aiortc NACKs the gap, and the node should send
the packet again (as RTX when negotiated).

With ``drop_sent_video_every: N`` it throws away every N-th new packet of the video it sends,
after SRTP, as a lossy uplink would (``dropped_sent_on_purpose`` counts them): the node sees
the gap, NACKs it, and gets it again as RTX.
"""

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import av
import nats
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_APP,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    is_rtcp,
    unpack_remb_fci,
)
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from antechamber.peer_hooks import (
    Arrival,
    EncodedFrame,
    check_aiortc,
    filter_datagrams,
    filter_sent,
    leave_out_rtx,
    on_keyframe_request,
    stamp_audio_level,
    start_encoder_at,
    tap_receiver,
    watch_receiver,
    watch_sender,
)
from antechamber.peer_media import (
    LOOP_SECONDS,
    VIDEO_MIME_TYPES,
    EncodedLoop,
    Kind,
    LoopTrack,
    Picture,
    PictureTrack,
    ScreenPicture,
    Speech,
    ToneTrack,
    VideoCodec,
    audio_loop,
    video_loop,
)
from contracts.media import (
    MediaSignal,
    MediaSignalReply,
    MediaStream,
    SignalKind,
    participant_subject,
    signal_subject,
)
from runtime.nats_auth import identity_options
from runtime.settings import nats_servers

logger = logging.getLogger(__name__)

REFUSED_EXIT = 3
BIG_LOOP_SECONDS = 1  # libvpx takes ~50 ms to encode a frame of noise; a second is enough
DEFAULT_BITRATE = {"loop": 300_000, "big": 8_000_000}
SIGNAL_TIMEOUT_S = 10.0
BYE_TIMEOUT_S = 2.0
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
LIVE_ENCODERS: dict[VideoCodec, type[Vp8Encoder] | type[H264Encoder]] = {
    "vp8": Vp8Encoder,
    "h264": H264Encoder,
}


class PeerConfig(BaseModel):
    """The one command-line argument, as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nats_url: str
    node_id: str
    room_id: UUID
    participant_id: UUID
    participant_token: str
    publish: list[Kind] = ["audio", "video"]
    source: Literal["live", "loop", "big"] = "live"
    video_codec: VideoCodec = "vp8"
    rtx: bool = Field(
        default=True,
        description="Offer (and answer) RTX for video; without it a lost packet can only be "
        "sent again as itself.",
    )
    decode: bool = True
    width: int = Field(default=320, ge=16, le=3840)
    height: int = Field(default=240, ge=16, le=2160)
    fps: int = Field(default=15, ge=1, le=60)
    video_bitrate: int | None = Field(
        default=None,
        gt=0,
        description="Bits per second: live starts aiortc's encoder there (it keeps VP8 within "
        "250 kbit/s and 1.5 Mbit/s and H.264 within 500 kbit/s and 3 Mbit/s, and follows the "
        "node's REMB); loop defaults to 300 kbit/s and big to 8 Mbit/s.",
    )
    speaking: list[tuple[float, float]] | None = Field(
        default=None,
        description="When the person speaks: [start_s, end_s) intervals since joining; None "
        "is all the time. In between, its audio is silence, marked so.",
    )
    voice_level: int = Field(
        default=20,
        ge=0,
        le=127,
        description="The ssrc-audio-level while speaking, in -dBov (0 the loudest).",
    )
    drop_video_every: int | None = Field(
        default=None,
        ge=2,
        description="Throw away every N-th new packet of each received video stream as it "
        "comes off the network, so that aiortc NACKs it.",
    )
    drop_sent_video_every: int | None = Field(
        default=None,
        ge=2,
        description="Throw away every N-th new packet of the video it sends as it leaves for "
        "the network, so that the node NACKs it.",
    )
    duration_s: float | None = Field(default=None, gt=0)
    follow_moves: bool = Field(
        default=False, description="Read orders to join another node from stdin."
    )
    report_every_s: float = Field(default=1.0, gt=0)
    vanish: bool = False
    share_screen: bool = Field(
        default=False,
        description="When the node offers a mid for a screen share (signaling granted one), "
        "send a screen there: a flat magenta picture (ScreenPicture) of screen_width x "
        "screen_height; says screen_offered.",
    )
    screen_width: int = Field(default=640, ge=16, le=3840)
    screen_height: int = Field(default=360, ge=16, le=2160)
    extra_video: bool = Field(
        default=False,
        description="Publish a second video (the screen picture) in the first offer, as a "
        "browser claiming a screen share it was never granted would.",
    )

    @model_validator(mode="after")
    def _check(self) -> "PeerConfig":
        if self.width % 2 or self.height % 2 or self.screen_width % 2 or self.screen_height % 2:
            raise ValueError("width and height must be even (4:2:0 video)")
        if len(set(self.publish)) != len(self.publish):
            raise ValueError("publish lists a kind twice")
        for start, end in self.speaking or []:
            if not 0 <= start < end:
                raise ValueError(f"speaking interval [{start}, {end}) is empty or negative")
        return self

    @property
    def loop_bitrate(self) -> int:
        return self.video_bitrate or DEFAULT_BITRATE.get(self.source, 0)


# --- What it publishes ----------------------------------------------------------------------


def synthetic_tracks(
    config: PeerConfig, speech: Speech, loops: dict[str, EncodedLoop] | None = None
) -> dict[str, MediaStreamTrack]:
    """The tracks ``config`` publishes, by kind (a loop is encoded here, before joining, or
    taken from ``loops``, where it is kept for the next tracks: one per peer connection, as
    a closed connection ends its tracks)."""
    loops = {} if loops is None else loops
    tracks: dict[str, MediaStreamTrack] = {}
    picture = Picture(config.width, config.height, noise_only=config.source == "big")
    for kind in config.publish:
        if config.source == "live":
            tracks[kind] = (
                PictureTrack(picture, config.fps) if kind == "video" else ToneTrack(speech)
            )
        elif kind == "video":
            seconds = BIG_LOOP_SECONDS if config.source == "big" else LOOP_SECONDS
            if kind not in loops:
                loops[kind] = video_loop(
                    picture, config.fps, config.loop_bitrate, seconds, config.video_codec
                )
            tracks[kind] = LoopTrack(loops[kind])
        else:
            if kind not in loops:
                loops[kind] = audio_loop()
            tracks[kind] = LoopTrack(loops[kind], speech)
    return tracks


def screen_track(config: PeerConfig, loops: dict[str, EncodedLoop]) -> MediaStreamTrack:
    """The screen it shares (or publishes as an extra video): live, or a loop like its
    camera's."""
    picture = ScreenPicture(config.screen_width, config.screen_height)
    if config.source == "live":
        return PictureTrack(picture, config.fps)
    if "screen" not in loops:
        loops["screen"] = video_loop(
            picture, config.fps, config.loop_bitrate, LOOP_SECONDS, config.video_codec
        )
    return LoopTrack(loops["screen"])


def live_encoder(codec: VideoCodec, bitrate: int) -> Encoder:
    """aiortc's own encoder for ``codec``, to start at ``bitrate`` rather than its default
    (500 kbit/s for VP8, 1 Mbit/s for H.264)."""
    encoder = LIVE_ENCODERS[codec]()
    encoder.target_bitrate = bitrate
    return encoder


def prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str, rtx: bool = True) -> None:
    """Offer only ``mime_type`` (H.264 only with packetization-mode=1) on ``transceiver``, and
    its retransmissions unless not ``rtx``."""
    wanted = mime_type.lower()
    rtx_type = f"{transceiver.kind}/rtx"

    def offered(mime: str, parameters: dict[str, Any]) -> bool:
        if mime == rtx_type:
            return rtx
        if mime != wanted:
            return False
        return mime != "video/h264" or str(parameters.get("packetization-mode")) == "1"

    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences(
        [c for c in capabilities if offered(c.mimeType.lower(), c.parameters)]
    )


def without_rtx(transceiver: RTCRtpTransceiver) -> None:
    """Offer every codec on ``transceiver`` but RTX (until ``setCodecPreferences([])``)."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    rtx_type = f"{transceiver.kind}/rtx"
    transceiver.setCodecPreferences([c for c in capabilities if c.mimeType.lower() != rtx_type])


# --- What it receives -----------------------------------------------------------------------

LOSS_FIELDS = ("dropped_on_purpose", "nacks_sent", "retransmissions_received", "recovered")
DROPPED_KEPT = 1024  # dropped sequence numbers remembered for ``recovered``


def ahead(sequence_number: int, of: int) -> int:
    """How far ``sequence_number`` is past ``of`` (RFC 3550 numbers wrap at 2**16): 0 for the
    same, negative for one behind."""
    distance = (sequence_number - of) & 0xFFFF
    return distance - 0x10000 if distance >= 0x8000 else distance


@dataclass
class Feedback:
    """What the node said about one track this peer sends."""

    receiver_reports: int = 0
    fraction_lost: int | None = None
    jitter: int | None = None
    remb_bps: int | None = None

    def heard(self, sender: RTCRtpSender, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    self.receiver_reports += 1
                    self.fraction_lost = report.fraction_lost
                    self.jitter = report.jitter
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if sender._ssrc in ssrcs:
                    self.remb_bps = bitrate


@dataclass
class Wire:
    """What reached one receiving transceiver as RTP and RTCP, before aiortc's jitter buffer,
    and what it asked for again; ``drop_every`` throws away every N-th new media packet."""

    drop_every: int | None = None
    packets: int = 0
    gaps: int = 0
    audio_level: tuple[bool, int] | None = None
    sender_reports: int = 0
    last_sr: dict[str, int | float] | None = None
    dropped_on_purpose: int = 0
    nacks_sent: int = 0
    retransmissions_received: int = 0
    rtx_discarded: int = 0
    recovered: int = 0
    _highest: dict[int, int] = field(default_factory=dict)
    """By media SSRC: the sequence number furthest ahead that reached the receiver."""
    _newest: dict[int, int] = field(default_factory=dict)
    """By media SSRC: the sequence number furthest ahead off the network (drops included)."""
    _new: int = 0
    _dropped: dict[tuple[int, int], None] = field(default_factory=dict)
    """(SSRC, sequence number) dropped and not seen again, oldest first."""

    def drop(self, ssrc: int, sequence_number: int) -> bool:
        """Whether to throw away this packet as it comes off the network: every N-th new one
        (never one behind: a retransmission)."""
        if self.drop_every is None:
            return False
        newest = self._newest.get(ssrc)
        if newest is not None and ahead(sequence_number, newest) <= 0:
            return False
        self._newest[ssrc] = sequence_number
        self._new += 1
        if self._new % self.drop_every:
            return False
        self.dropped_on_purpose += 1
        self._dropped[ssrc, sequence_number] = None
        if len(self._dropped) > DROPPED_KEPT:
            del self._dropped[next(iter(self._dropped))]
        return True

    def rtp(self, arrival: Arrival) -> None:
        """A packet reached the receiver (after SRTP, and after the drops)."""
        packet = arrival.packet
        if arrival.rtx:
            original = arrival.original_sequence_number
            if arrival.repairs is None or original is None:
                self.rtx_discarded += 1
            else:
                self.retransmissions_received += 1
                self._came_again(arrival.repairs, original)
            return
        self.packets += 1
        if packet.extensions.audio_level is not None:
            self.audio_level = packet.extensions.audio_level
        ssrc, sequence_number = packet.ssrc, packet.sequence_number
        highest = self._highest.get(ssrc)
        if highest is not None:
            distance = ahead(sequence_number, highest)
            if distance <= 0:  # a duplicate, late, or sent again
                self._came_again(ssrc, sequence_number)
                return
            if distance > 1 and not self._all_dropped(ssrc, highest, distance):
                self.gaps += 1
        self._highest[ssrc] = sequence_number

    def _all_dropped(self, ssrc: int, highest: int, distance: int) -> bool:
        """Whether the packets between ``highest`` and ``distance`` past it were all dropped
        here on purpose (then the sender left no gap)."""
        if distance - 1 > len(self._dropped):
            return False
        return all((ssrc, (highest + i) & 0xFFFF) in self._dropped for i in range(1, distance))

    def _came_again(self, ssrc: int, sequence_number: int) -> None:
        if (ssrc, sequence_number) in self._dropped:
            del self._dropped[ssrc, sequence_number]
            self.recovered += 1

    def rtcp(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.sender_reports += 1
            self.last_sr = {
                "ssrc": packet.ssrc,
                "ntp_timestamp": info.ntp_timestamp,
                "rtp_timestamp": info.rtp_timestamp,
                "packet_count": info.packet_count,
                "octet_count": info.octet_count,
                "arrived": time.monotonic(),
            }

    def nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.nacks_sent += 1

    def summary(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "gaps": self.gaps,
            "audio_level": self.audio_level,
            "sender_reports": self.sender_reports,
            "last_sr": self.last_sr,
            "dropped_on_purpose": self.dropped_on_purpose,
            "nacks_sent": self.nacks_sent,
            "retransmissions_received": self.retransmissions_received,
            "rtx_discarded": self.rtx_discarded,
            "recovered": self.recovered,
        }


class LossInjector:
    """Throws away packets of the received video streams as they come off the network, each
    stream's :class:`Wire` deciding which (see :func:`filter_datagrams` for why there).

    A stream is followed from its first packet that reached its receiver: only the receiver
    knows which transceiver an SSRC belongs to. RTX streams are never followed.
    """

    def __init__(self) -> None:
        self._streams: dict[int, Reception] = {}
        self._transports: set[int] = set()

    def install(self, transport: RTCDtlsTransport) -> None:
        """Filter what ``transport`` receives (once: transceivers share it under BUNDLE)."""
        if id(transport) not in self._transports:
            self._transports.add(id(transport))
            filter_datagrams(transport, self._keep)

    def follow(self, ssrc: int, reception: "Reception") -> None:
        self._streams[ssrc] = reception

    def _keep(self, data: bytes) -> bool:
        # SRTP leaves the RTP header in the clear (RFC 3711 3.1).
        if len(data) < 12 or not 128 <= data[0] < 192 or is_rtcp(data):
            return True
        ssrc = int.from_bytes(data[8:12], "big")
        reception = self._streams.get(ssrc)
        return reception is None or not reception.wire.drop(ssrc, int.from_bytes(data[2:4], "big"))


@dataclass
class Reception:
    """What has arrived on one receiving transceiver from its current publisher."""

    mid: str
    kind: str
    participant_id: UUID | None
    appeared: float
    source: str | None = None
    """What the node said the mid carries: audio, video, or screen."""
    size: tuple[int, int] | None = None
    """The latest decoded picture's width and height."""
    frames: int = 0
    keyframes: int | None = 0
    """None when unknown: aiortc's decoders do not mark the frames they decode."""
    first_frame_s: float | None = None
    last_frame_at: float | None = None
    wire: Wire = field(default_factory=Wire)
    losses: LossInjector | None = None
    """Where this transceiver's media streams are followed, to drop some of their packets."""

    def restart(self, participant_id: UUID, now: float) -> None:
        """The node gave this mid to someone else."""
        self.participant_id = participant_id
        self.appeared = now
        self.frames = 0
        self.keyframes = None if self.keyframes is None else 0
        self.first_frame_s = None
        self.last_frame_at = None
        self.wire = Wire(drop_every=self.wire.drop_every)

    # What watch_receiver tells, for the current publisher's counts.

    def rtp(self, arrival: Arrival) -> None:
        if self.losses is not None and not arrival.rtx:
            self.losses.follow(arrival.packet.ssrc, self)
        self.wire.rtp(arrival)

    def rtcp(self, packet: AnyRtcpPacket) -> None:
        self.wire.rtcp(packet)

    def nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.wire.nack(media_ssrc, lost)

    def summary(self, now: float) -> dict[str, Any]:
        last = self.last_frame_at
        return {
            "kind": self.kind,
            "source": self.source,
            "participant_id": self.participant_id and str(self.participant_id),
            "size": self.size,
            "frames": self.frames,
            "keyframes": self.keyframes,
            "first_frame_s": self.first_frame_s,
            "last_frame_s_ago": None if last is None else round(now - last, 3),
            **self.wire.summary(),
        }


class DecodeErrors(logging.Handler):
    """Counts aiortc's "failed to decode" warnings, its only report of a frame it could not
    decode (logged from the decoder threads; ``Handler.handle`` serializes ``emit``)."""

    LOGGER = "aiortc.rtcrtpreceiver"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1

    @contextlib.contextmanager
    def attached(self) -> Iterator["DecodeErrors"]:
        receiver_logger = logging.getLogger(self.LOGGER)
        if not receiver_logger.isEnabledFor(logging.WARNING):
            receiver_logger.setLevel(logging.WARNING)
        receiver_logger.addHandler(self)
        try:
            yield self
        finally:
            receiver_logger.removeHandler(self)


# --- Taking part ----------------------------------------------------------------------------


def say(event: str, **fields: Any) -> None:
    """One line of the report on stdout."""
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Ending:
    by: Literal["node", "signal", "duration", "moved"]
    reason: str | None = None
    message: str | None = None


class Participant:
    """One person in one room on one node, from the first offer to the last report."""

    def __init__(
        self,
        config: PeerConfig,
        nc: NATS,
        tracks: dict[str, MediaStreamTrack],
        speech: Speech,
        moves: "asyncio.Queue[MoveOrder] | None" = None,
    ) -> None:
        """``speech`` is the one the audio track follows, for the levels sent with it;
        ``moves`` the orders to join another node, if it follows them."""
        self.config = config
        self.moves = moves
        self.moved_to: MoveOrder | None = None
        self._nc = nc
        self._tracks = tracks
        self._speech = speech
        # No ICE servers: aiortc's default asks a public STUN server and waits 5 s without one.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc.on("track", self._track_arrived)
        self._pc.on("connectionstatechange", self._connection_changed)
        self._inbox: asyncio.Queue[MediaSignal] = asyncio.Queue()
        self._ending: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._publishers: dict[str, UUID] = {}
        self._sources: dict[str, str] = {}
        self._screen: MediaStreamTrack | None = None
        self._screen_loops: dict[str, EncodedLoop] = {}
        self._receptions: dict[str, Reception] = {}
        self._published: dict[str, Feedback] = {}
        self._decoders: set[asyncio.Task[None]] = set()
        self._decode_errors = DecodeErrors()
        self._losses = LossInjector()
        self._sent_losses = Wire(drop_every=config.drop_sent_video_every)
        self._joined_at = time.monotonic()
        self._renegotiations = 0
        self._failed_renegotiations = 0

    async def attend(self) -> int:
        """Join, take part until stopped or sent away, leave; the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._end, Ending(by="signal"))
        if self.config.duration_s is not None:
            loop.call_later(self.config.duration_s, self._end, Ending(by="duration"))
        if self.config.share_screen:
            # Ready before joining: encoding a loop here would hold the connection up later.
            self._screen = screen_track(self.config, self._screen_loops)
        # Before the offer: the node may offer again as soon as it has answered.
        subscription = await self._nc.subscribe(
            participant_subject(self.config.participant_id), cb=self._received
        )
        await self._nc.flush()
        with self._decode_errors.attached():
            joining = asyncio.ensure_future(self._join())
            either: set[asyncio.Future[Any]] = {joining, self._ending}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not joining.done():
                joining.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await joining
            elif (refusal := joining.result()) is not None:
                say("refused", reason=refusal.reason, message=refusal.message)
                await self._pc.close()
                return REFUSED_EXIT
            workers = [
                asyncio.create_task(self._answer_offers()),
                asyncio.create_task(self._report_every()),
            ]
            if self.moves is not None:
                workers.append(asyncio.create_task(self._follow(self.moves)))
            try:
                await self._leave(await self._ending)
            finally:
                for task in [*workers, *self._decoders]:
                    task.cancel()
                await subscription.unsubscribe()
        return 0

    async def _follow(self, moves: "asyncio.Queue[MoveOrder]") -> None:
        self.moved_to = await moves.get()
        self._end(Ending(by="moved"))

    def _end(self, ending: Ending) -> None:
        if not self._ending.done():
            self._ending.set_result(ending)

    async def _join(self) -> MediaSignalReply | None:
        """The first offer; the node's refusal, or None once its answer is applied."""
        offer = await self._offer()
        reply = await self._signal(SignalKind.offer, offer)
        if not reply.ok:
            return reply
        if reply.answer is None or reply.answer.sdp is None:
            raise RuntimeError(f"the node accepted the offer without an answer: {reply}")
        self._learn(reply.answer.streams)
        await self._pc.setRemoteDescription(RTCSessionDescription(reply.answer.sdp, "answer"))
        if self.config.drop_sent_video_every is not None and "video" in self._tracks:
            # After the answer: BUNDLE has settled which transport the video leaves on.
            video = next(t.sender for t in self._pc.getTransceivers() if t.kind == "video")
            filter_sent(video.transport, functools.partial(self._keep_sent, video._ssrc))
        if "audio" in self._tracks and AUDIO_LEVEL_URI not in reply.answer.sdp:
            logger.warning("the node's answer leaves out %s: no audio levels sent", AUDIO_LEVEL_URI)
        say("ready")
        return None

    async def _offer(self) -> str:
        """What it publishes (or receive-only transceivers), and the first offer for them."""
        for kind, track in self._tracks.items():
            sender = self._pc.addTrack(track)
            transceiver = next(t for t in self._pc.getTransceivers() if t.sender is sender)
            if kind == "video":
                prefer_codec(
                    transceiver, VIDEO_MIME_TYPES[self.config.video_codec], self.config.rtx
                )
            else:
                prefer_codec(transceiver, "audio/opus", self.config.rtx)
                stamp_audio_level(sender, self._speech.rfc6464)
            feedback = Feedback()
            self._published[kind] = feedback
            watch_sender(sender, functools.partial(feedback.heard, sender))
            if isinstance(track, LoopTrack):
                on_keyframe_request(sender, track.want_keyframe)
            elif kind == "video" and self.config.video_bitrate is not None:
                encoder = live_encoder(self.config.video_codec, self.config.video_bitrate)
                start_encoder_at(sender, encoder)
        if self.config.extra_video:
            extra = self._pc.addTrack(screen_track(self.config, self._screen_loops))
            extra_transceiver = next(t for t in self._pc.getTransceivers() if t.sender is extra)
            prefer_codec(
                extra_transceiver, VIDEO_MIME_TYPES[self.config.video_codec], self.config.rtx
            )
        receiving = []
        if not self._tracks:
            for kind in ("audio", "video"):
                receiving.append(self._pc.addTransceiver(kind, direction="recvonly"))
                if not self.config.rtx:
                    without_rtx(receiving[-1])
        self._joined_at = time.monotonic()
        self._speech.begin(self._joined_at)
        await self._pc.setLocalDescription(await self._pc.createOffer())
        offer: str = self._pc.localDescription.sdp
        for transceiver in receiving:
            # The answer can only hold what the offer did; kept, the preferences would also
            # refuse any codec whose fmtp the node words differently.
            transceiver.setCodecPreferences([])
        if "audio" in self._tracks and AUDIO_LEVEL_URI not in offer:
            raise RuntimeError(f"aiortc's offer has no {AUDIO_LEVEL_URI} any more")
        return offer

    async def _signal(
        self, kind: SignalKind, sdp: str | None = None, wait_s: float = SIGNAL_TIMEOUT_S
    ) -> MediaSignalReply:
        signal_ = MediaSignal(
            participant_token=self.config.participant_token,
            participant_id=self.config.participant_id,
            room_id=self.config.room_id,
            kind=kind,
            sdp=sdp,
        )
        reply = await self._nc.request(
            signal_subject(self.config.node_id),
            signal_.model_dump_json().encode(),
            timeout=wait_s,
        )
        return MediaSignalReply.model_validate_json(reply.data)

    async def _received(self, msg: Msg) -> None:
        try:
            self._inbox.put_nowait(MediaSignal.model_validate_json(msg.data))
        except ValidationError:
            logger.exception("unreadable signal from the node: %r", msg.data[:200])

    async def _answer_offers(self) -> None:
        """The node's signals, one at a time in order (it started after the first answer)."""
        while True:
            message = await self._inbox.get()
            if message.kind is SignalKind.bye:
                self._end(Ending(by="node", reason=message.reason, message=message.message))
                return
            if message.kind is not SignalKind.offer or message.sdp is None:
                continue  # aiortc's descriptions carry every candidate already
            try:
                await self._renegotiate(message.sdp, message.streams, message.screen_mid)
            except Exception:
                # Stay for the final report: the test reads the failure there and on stderr.
                self._failed_renegotiations += 1
                logger.exception("renegotiation failed")

    async def _renegotiate(
        self, sdp: str, streams: list[MediaStream], screen_mid: str | None = None
    ) -> None:
        self._learn(streams)
        reply = await self._signal(SignalKind.answer, await self._answer(sdp, screen_mid))
        if not reply.ok:
            raise RuntimeError(f"the node refused the answer: {reply.reason}: {reply.message}")
        self._renegotiations += 1

    async def _answer(self, offer: str, screen_mid: str | None = None) -> str:
        """Apply an offer; the answer, applied too."""
        await self._pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        if screen_mid is not None:
            self._share_on(screen_mid)
        if not self.config.rtx:
            for transceiver in self._pc.getTransceivers():
                leave_out_rtx(transceiver)
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        answer: str = self._pc.localDescription.sdp
        return answer

    def _share_on(self, mid: str) -> None:
        """The node offered ``mid`` for this peer's screen: send it there (when sharing)."""
        transceiver = next((t for t in self._pc.getTransceivers() if t.mid == mid), None)
        say("screen_offered", mid=mid)
        if transceiver is None or not self.config.share_screen:
            return
        if transceiver.sender.track is None:
            if self._screen is None:
                self._screen = screen_track(self.config, self._screen_loops)
            transceiver.sender.replaceTrack(self._screen)
            if isinstance(self._screen, LoopTrack):
                on_keyframe_request(transceiver.sender, self._screen.want_keyframe)
        transceiver.direction = "sendonly"

    def _learn(self, streams: list[MediaStream]) -> None:
        """Who each mid carries, from the node's latest description; a mid that now carries
        someone else starts its counts again."""
        now = time.monotonic()
        for stream in streams:
            self._publishers[stream.mid] = stream.participant_id
            self._sources[stream.mid] = stream.kind
            if (reception := self._receptions.get(stream.mid)) is not None:
                reception.source = stream.kind
            reception = self._receptions.get(stream.mid)
            if reception is None or reception.participant_id == stream.participant_id:
                continue
            if reception.participant_id is None:
                reception.participant_id = stream.participant_id
                continue
            reception.restart(stream.participant_id, now)
            say("track", mid=stream.mid, kind=reception.kind, participant_id=stream.participant_id)

    def _track_arrived(self, track: MediaStreamTrack) -> None:
        transceiver = next(t for t in self._pc.getTransceivers() if t.receiver.track is track)
        mid = transceiver.mid or ""
        reception = Reception(
            mid, track.kind, self._publishers.get(mid), time.monotonic(), self._sources.get(mid)
        )
        if track.kind == "video" and self.config.drop_video_every is not None:
            reception.wire.drop_every = self.config.drop_video_every
            reception.losses = self._losses
            self._losses.install(transceiver.receiver.transport)
        if self.config.decode and track.kind == "video":
            reception.keyframes = None
        self._receptions[mid] = reception
        watch_receiver(transceiver.receiver, reception)
        say(
            "track",
            mid=mid,
            kind=track.kind,
            source=reception.source,
            participant_id=reception.participant_id,
        )
        if self.config.decode:
            task = asyncio.create_task(self._decode(track, reception))
            self._decoders.add(task)
            task.add_done_callback(self._decoders.discard)
        else:

            def counted(frame: EncodedFrame) -> None:
                self._count(reception, frame.keyframe, first=frame.keyframe)

            tap_receiver(transceiver.receiver, counted)

    async def _decode(self, track: MediaStreamTrack, reception: Reception) -> None:
        while True:
            try:
                frame = await track.recv()  # a decoded frame: its arrival and size matter
            except MediaStreamError:
                return
            if isinstance(frame, av.VideoFrame):
                reception.size = (frame.width, frame.height)
            self._count(reception, keyframe=track.kind == "audio", first=True)

    def _count(self, reception: Reception, keyframe: bool, first: bool) -> None:
        """One frame arrived; ``first`` says whether it could be the one a person first sees."""
        now = time.monotonic()
        reception.frames += 1
        reception.last_frame_at = now
        if reception.keyframes is not None:
            reception.keyframes += keyframe
        if reception.first_frame_s is None and first:
            reception.first_frame_s = round(now - reception.appeared, 4)
            say(
                "first_frame",
                mid=reception.mid,
                kind=reception.kind,
                participant_id=reception.participant_id,
                after_s=reception.first_frame_s,
                since_join_s=round(now - self._joined_at, 4),
            )

    def _connection_changed(self) -> None:
        say("connection_state", state=self._pc.connectionState)

    def _keep_sent(self, ssrc: int, data: bytes) -> bool:
        """Whether a datagram leaving is sent: all but every N-th new packet of the video."""
        # SRTP leaves the RTP header in the clear (RFC 3711 3.1).
        if len(data) < 12 or not 128 <= data[0] < 192 or is_rtcp(data):
            return True
        if int.from_bytes(data[8:12], "big") != ssrc:
            return True  # audio, or RTX: a retransmission is never dropped
        return not self._sent_losses.drop(ssrc, int.from_bytes(data[2:4], "big"))

    def _summary(self) -> dict[str, Any]:
        now = time.monotonic()
        receptions = self._receptions.values()
        return {
            "tracks": {r.mid: r.summary(now) for r in receptions},
            "published": {kind: dataclasses.asdict(f) for kind, f in self._published.items()},
            **{name: sum(getattr(r.wire, name) for r in receptions) for name in LOSS_FIELDS},
            "dropped_sent_on_purpose": self._sent_losses.dropped_on_purpose,
            "decode_errors": self._decode_errors.count,
            "renegotiations": self._renegotiations,
            "failed_renegotiations": self._failed_renegotiations,
            "connection_state": self._pc.connectionState,
        }

    async def _report_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_every_s)
            say("stats", **self._summary())

    async def _leave(self, ending: Ending) -> None:
        if ending.by == "moved":  # the old node is gone: nothing to tell it
            await self._pc.close()
            return
        if ending.by == "node":
            say("bye", reason=ending.reason, message=ending.message)
        elif self.config.vanish:
            # No bye, no RTCP BYE, no DTLS close: the node has to notice on its own.
            say("done", ended=ending.by, **self._summary())
            os._exit(0)
        else:
            with contextlib.suppress(NatsError, TimeoutError):
                await self._signal(SignalKind.bye, wait_s=BYE_TIMEOUT_S)
        await self._pc.close()
        say("done", ended=ending.by, **self._summary())


class MoveOrder(BaseModel):
    """One line on stdin with ``follow_moves``: join this node now, with this token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str
    participant_token: str


async def read_moves(moves: "asyncio.Queue[MoveOrder]") -> None:
    """Put every order read from stdin in ``moves``, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async for line in reader:
        try:
            moves.put_nowait(MoveOrder.model_validate_json(line))
        except ValidationError as exc:
            sys.stderr.write(f"bad move order: {exc}\n")


async def take_part(config: PeerConfig) -> int:
    check_aiortc()
    speech = Speech(config.speaking, config.voice_level)
    loops: dict[str, EncodedLoop] = {}
    tracks = synthetic_tracks(config, speech, loops)
    nc = await nats.connect(nats_servers(config.nats_url), **identity_options())
    moves: asyncio.Queue[MoveOrder] | None = None
    reading = None
    if config.follow_moves:
        moves = asyncio.Queue()
        reading = asyncio.create_task(read_moves(moves))
    try:
        while True:
            participant = Participant(config, nc, tracks, speech, moves)
            code = await participant.attend()
            if participant.moved_to is None:
                return code
            config = config.model_copy(update=participant.moved_to.model_dump())
            tracks = synthetic_tracks(config, speech, loops)
            say("moved", node_id=config.node_id)
    finally:
        if reading is not None:
            reading.cancel()
        await nc.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m antechamber.peer '<json config>'\n")
        return 2
    try:
        config = PeerConfig.model_validate_json(args[0])
    except ValidationError as exc:
        sys.stderr.write(f"bad peer config: {exc}\n")
        return 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(take_part(config))


if __name__ == "__main__":
    raise SystemExit(main())
