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
  ``signal`` or ``duration``): ``tracks`` by mid (``kind``, ``participant_id``, ``frames``,
  ``keyframes`` (null for video it decodes: aiortc's VP8 decoder does not mark keyframes),
  ``first_frame_s``), ``decode_errors``, ``renegotiations``, ``failed_renegotiations``,
  ``connection_state``;
- ``refused`` (``reason``, ``message``; exit code 3): the node refused the first offer;
- ``bye`` (``reason``, ``message``): the node ended the connection; ``done`` follows, and
  exit code 0.

It leaves on SIGTERM or SIGINT, or after ``duration_s``: a ``bye`` to the node, then ``done``
and exit code 0. With ``vanish`` it sends nothing and exits at once after ``done``: a
publisher whose machine died.

What it sends (``source``): ``live`` encodes a moving picture and a 440 Hz tone with aiortc's
own encoders; ``loop`` encodes four seconds of them once at start and sends those packets
over and over (aiortc only packetizes, so a publisher costs little CPU), a keyframe on request
and at every restart; ``big`` loops noise at ``video_bitrate`` (8 Mbit/s unless set), far
above what a node should forward.
"""

import array
import asyncio
import contextlib
import fractions
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import av
import nats
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import (
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    AudioStreamTrack,
    MediaStreamError,
    VideoStreamTrack,
)
from av.stream import Stream
from av.video.frame import PictureType
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.media import (
    MediaSignal,
    MediaSignalReply,
    MediaStream,
    SignalKind,
    participant_subject,
    signal_subject,
)
from runtime.settings import nats_servers
from services.media.passthrough import EncodedFrame, on_keyframe_request, tap_receiver

logger = logging.getLogger(__name__)

Kind = Literal["audio", "video"]
REFUSED_EXIT = 3
LOOP_SECONDS = 4
BIG_LOOP_SECONDS = 1  # libvpx takes ~50 ms to encode a frame of noise; a second is enough
SAMPLE_RATE = 48_000
SAMPLES_PER_FRAME = 960  # 20 ms, as aiortc packetizes Opus
DEFAULT_BITRATE = {"loop": 300_000, "big": 8_000_000}
SIGNAL_TIMEOUT_S = 10.0
BYE_TIMEOUT_S = 2.0


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
    decode: bool = True
    width: int = Field(default=320, ge=16, le=3840)
    height: int = Field(default=240, ge=16, le=2160)
    fps: int = Field(default=15, ge=1, le=60)
    video_bitrate: int | None = Field(
        default=None,
        gt=0,
        description="Bits per second: live starts aiortc's encoder there (it keeps it within "
        "250 kbit/s and 1.5 Mbit/s, and follows the node's REMB); loop defaults to 300 kbit/s "
        "and big to 8 Mbit/s.",
    )
    duration_s: float | None = Field(default=None, gt=0)
    report_every_s: float = Field(default=1.0, gt=0)
    vanish: bool = False

    @model_validator(mode="after")
    def _check(self) -> "PeerConfig":
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (4:2:0 video)")
        if len(set(self.publish)) != len(self.publish):
            raise ValueError("publish lists a kind twice")
        return self

    @property
    def loop_bitrate(self) -> int:
        return self.video_bitrate or DEFAULT_BITRATE.get(self.source, 0)


# --- What it publishes ----------------------------------------------------------------------


class Pacer:
    """Sleeps until the n-th tick of a fixed period after the first, so frames keep time."""

    def __init__(self, period_s: float) -> None:
        self._period_s = period_s
        self._start: float | None = None
        self._ticks = 0

    async def tick(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._ticks += 1
            await asyncio.sleep(self._start + self._ticks * self._period_s - time.monotonic())
        return self._ticks


class Picture:
    """A moving picture: diagonal stripes sliding along, crossed by a band of noise.

    The noise makes an encoder spend its whole bitrate, as a camera would; with ``noise_only``
    every pixel is noise, which no bitrate is enough for.
    """

    def __init__(self, width: int, height: int, noise_only: bool = False) -> None:
        self.width = width
        self.height = height
        self._noise_only = noise_only
        self._ramp = bytes(i * 3 & 0xFF for i in range(width + height + 256))
        self._band = max(2, height // 8)

    def frame(self, n: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma, *chroma = frame.planes
        if self._noise_only:
            for plane in frame.planes:
                plane.update(os.urandom(plane.buffer_size))
            return frame
        offsets = ((row + 4 * n) % 256 for row in range(self.height))
        rows = [self._ramp[offset : offset + self.width] for offset in offsets]
        top = 4 * n % (self.height - self._band)
        rows[top : top + self._band] = [os.urandom(self.width) for _ in range(self._band)]
        padding = bytes(luma.line_size - self.width)
        luma.update(padding.join(rows) + padding)
        for i, plane in enumerate(chroma):
            plane.update(bytes([(2 * n + 90 * i) & 0xFF]) * plane.buffer_size)
        return frame


def tone_second(frequency: int = 440) -> bytes:
    """One second of a sine tone, s16 stereo at 48 kHz (whole cycles, so it loops cleanly)."""
    samples = array.array("h")
    for i in range(SAMPLE_RATE):
        value = int(0.3 * 32767 * math.sin(2 * math.pi * frequency * i / SAMPLE_RATE))
        samples.extend((value, value))
    return samples.tobytes()


def tone_frame(tone: bytes, n: int) -> av.AudioFrame:
    """The n-th 20 ms of ``tone``, repeating."""
    frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES_PER_FRAME)
    size = frame.planes[0].buffer_size
    start = n * size % len(tone)
    frame.planes[0].update(tone[start : start + size])
    frame.sample_rate = SAMPLE_RATE
    frame.pts = n * SAMPLES_PER_FRAME
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


class PictureTrack(VideoStreamTrack):
    """:class:`Picture` frames at ``fps``, for aiortc to encode."""

    def __init__(self, picture: Picture, fps: int) -> None:
        super().__init__()
        self._picture = picture
        self._fps = fps
        self._pacer = Pacer(1 / fps)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.tick()
        frame = self._picture.frame(n)
        frame.pts = n * VIDEO_CLOCK_RATE // self._fps
        frame.time_base = VIDEO_TIME_BASE
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone in 20 ms frames, for aiortc to encode."""

    def __init__(self) -> None:
        super().__init__()
        self._tone = tone_second()
        self._pacer = Pacer(SAMPLES_PER_FRAME / SAMPLE_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return tone_frame(self._tone, await self._pacer.tick())


@dataclass(frozen=True, slots=True)
class EncodedLoop:
    """Encoded frames to send over and over, ``per_second`` of them.

    ``frames[0]`` decodes on its own; ``keyframes``, for video, holds every frame encoded
    again as a keyframe, to answer a keyframe request without a reference to the frames before.
    """

    kind: Kind
    clock_rate: int
    per_second: int
    frames: tuple[bytes, ...]
    keyframes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("an encoded loop needs frames")
        if self.keyframes and len(self.keyframes) != len(self.frames):
            raise ValueError(f"{len(self.keyframes)} keyframes for {len(self.frames)} frames")


def encode_vp8(
    frames: Sequence[av.VideoFrame], fps: int, bitrate: int, keyframes: bool
) -> list[bytes]:
    """``frames`` encoded with libvpx at a constant ``bitrate``: one keyframe and deltas, or
    every frame a keyframe."""
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = frames[0].width
    codec.height = frames[0].height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.gop_size = 1 if keyframes else 1_000_000
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",  # one packet per frame, in order
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
    }
    packets: list[bytes] = []
    for n, frame in enumerate(frames):
        frame.pts = n
        frame.time_base = codec.time_base
        frame.pict_type = PictureType.I if keyframes else PictureType.NONE
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    if len(packets) != len(frames):
        raise RuntimeError(f"libvpx gave {len(packets)} packets for {len(frames)} frames")
    return packets


def video_loop(
    picture: Picture, fps: int, bitrate: int, seconds: int = LOOP_SECONDS
) -> EncodedLoop:
    frames = [picture.frame(n) for n in range(seconds * fps)]
    return EncodedLoop(
        kind="video",
        clock_rate=VIDEO_CLOCK_RATE,
        per_second=fps,
        frames=tuple(encode_vp8(frames, fps, bitrate, keyframes=False)),
        keyframes=tuple(encode_vp8(frames, fps, bitrate, keyframes=True)),
    )


def audio_loop() -> EncodedLoop:
    """The tone encoded with libopus, 20 ms a packet."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 48_000
    codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
    codec.options = {"application": "voip"}
    tone = tone_second()
    packets: list[bytes] = []
    count = LOOP_SECONDS * SAMPLE_RATE // SAMPLES_PER_FRAME
    for n in range(count):
        packets.extend(bytes(packet) for packet in codec.encode(tone_frame(tone, n)))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    return EncodedLoop(
        kind="audio",
        clock_rate=SAMPLE_RATE,
        per_second=SAMPLE_RATE // SAMPLES_PER_FRAME,
        frames=tuple(packets[:count]),  # the encoder's flush adds one beyond the tone
    )


class LoopTrack(MediaStreamTrack):
    """An :class:`EncodedLoop` as :class:`av.Packet`s, which aiortc sends without encoding."""

    def __init__(self, loop: EncodedLoop) -> None:
        super().__init__()
        self.kind = loop.kind
        self._encoded = loop
        self._pacer = Pacer(1 / loop.per_second)
        self._keyframe_wanted = False

    def want_keyframe(self) -> None:
        self._keyframe_wanted = True

    async def recv(self) -> "av.Packet[Stream]":
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.tick()
        index = n % len(self._encoded.frames)
        data = self._encoded.frames[index]
        if self._keyframe_wanted and self._encoded.keyframes:
            data = self._encoded.keyframes[index]
            self._keyframe_wanted = False
        packet = av.Packet(data)
        packet.pts = packet.dts = n * self._encoded.clock_rate // self._encoded.per_second
        packet.time_base = fractions.Fraction(1, self._encoded.clock_rate)
        return packet


def synthetic_tracks(config: PeerConfig) -> dict[str, MediaStreamTrack]:
    """The tracks ``config`` publishes, by kind (a loop is encoded here, before joining)."""
    tracks: dict[str, MediaStreamTrack] = {}
    picture = Picture(config.width, config.height, noise_only=config.source == "big")
    for kind in config.publish:
        if config.source == "live":
            tracks[kind] = PictureTrack(picture, config.fps) if kind == "video" else ToneTrack()
        elif kind == "video":
            seconds = BIG_LOOP_SECONDS if config.source == "big" else LOOP_SECONDS
            loop = video_loop(picture, config.fps, config.loop_bitrate, seconds)
            tracks[kind] = LoopTrack(loop)
        else:
            tracks[kind] = LoopTrack(audio_loop())
    return tracks


_SENDER_ENCODER = "_RTCRtpSender__encoder"


def start_vp8_at(sender: RTCRtpSender, bitrate: int) -> None:
    """Make ``sender``'s VP8 encoder start at ``bitrate`` rather than aiortc's 500 kbit/s.

    aiortc has no public way: its sender makes the encoder at the first frame, unless one is
    there already (the private attribute set here). REMB from the node moves it from there.
    """
    if not hasattr(sender, _SENDER_ENCODER):
        raise RuntimeError(f"aiortc's RTCRtpSender has no {_SENDER_ENCODER} any more")
    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    setattr(sender, _SENDER_ENCODER, encoder)


def prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    """Offer only ``mime_type`` (and its retransmissions) on ``transceiver``."""
    wanted = {mime_type.lower(), f"{transceiver.kind}/rtx"}
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in capabilities if c.mimeType.lower() in wanted])


# --- What it receives -----------------------------------------------------------------------


@dataclass
class Reception:
    """What has arrived on one receiving transceiver from its current publisher."""

    mid: str
    kind: str
    participant_id: UUID | None
    appeared: float
    frames: int = 0
    keyframes: int | None = 0
    """None when unknown: aiortc's VP8 decoder does not mark the frames it decodes."""
    first_frame_s: float | None = None

    def restart(self, participant_id: UUID, now: float) -> None:
        """The node gave this mid to someone else."""
        self.participant_id = participant_id
        self.appeared = now
        self.frames = 0
        self.keyframes = None if self.keyframes is None else 0
        self.first_frame_s = None

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "participant_id": self.participant_id and str(self.participant_id),
            "frames": self.frames,
            "keyframes": self.keyframes,
            "first_frame_s": self.first_frame_s,
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
    by: Literal["node", "signal", "duration"]
    reason: str | None = None
    message: str | None = None


class Participant:
    """One person in one room on one node, from the first offer to the last report."""

    def __init__(self, config: PeerConfig, nc: NATS, tracks: dict[str, MediaStreamTrack]) -> None:
        self.config = config
        self._nc = nc
        self._tracks = tracks
        # No ICE servers: aiortc's default asks a public STUN server and waits 5 s without one.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc.on("track", self._track_arrived)
        self._pc.on("connectionstatechange", self._connection_changed)
        self._inbox: asyncio.Queue[MediaSignal] = asyncio.Queue()
        self._ending: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._publishers: dict[str, UUID] = {}
        self._receptions: dict[str, Reception] = {}
        self._decoders: set[asyncio.Task[None]] = set()
        self._decode_errors = DecodeErrors()
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
            try:
                await self._leave(await self._ending)
            finally:
                for task in [*workers, *self._decoders]:
                    task.cancel()
                await subscription.unsubscribe()
        return 0

    def _end(self, ending: Ending) -> None:
        if not self._ending.done():
            self._ending.set_result(ending)

    async def _join(self) -> MediaSignalReply | None:
        """The first offer; the node's refusal, or None once its answer is applied."""
        for kind, track in self._tracks.items():
            sender = self._pc.addTrack(track)
            transceiver = next(t for t in self._pc.getTransceivers() if t.sender is sender)
            prefer_codec(transceiver, "video/VP8" if kind == "video" else "audio/opus")
            if isinstance(track, LoopTrack):
                on_keyframe_request(sender, track.want_keyframe)
            elif kind == "video" and self.config.video_bitrate is not None:
                start_vp8_at(sender, self.config.video_bitrate)
        if not self._tracks:
            for kind in ("audio", "video"):
                self._pc.addTransceiver(kind, direction="recvonly")
        self._joined_at = time.monotonic()
        await self._pc.setLocalDescription(await self._pc.createOffer())
        reply = await self._signal(SignalKind.offer, self._pc.localDescription.sdp)
        if not reply.ok:
            return reply
        if reply.answer is None or reply.answer.sdp is None:
            raise RuntimeError(f"the node accepted the offer without an answer: {reply}")
        self._learn(reply.answer.streams)
        await self._pc.setRemoteDescription(RTCSessionDescription(reply.answer.sdp, "answer"))
        say("ready")
        return None

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
                await self._renegotiate(message.sdp, message.streams)
            except Exception:
                # Stay for the final report: the test reads the failure there and on stderr.
                self._failed_renegotiations += 1
                logger.exception("renegotiation failed")

    async def _renegotiate(self, sdp: str, streams: list[MediaStream]) -> None:
        self._learn(streams)
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        reply = await self._signal(SignalKind.answer, self._pc.localDescription.sdp)
        if not reply.ok:
            raise RuntimeError(f"the node refused the answer: {reply.reason}: {reply.message}")
        self._renegotiations += 1

    def _learn(self, streams: list[MediaStream]) -> None:
        """Who each mid carries, from the node's latest description; a mid that now carries
        someone else starts its counts again."""
        now = time.monotonic()
        for stream in streams:
            self._publishers[stream.mid] = stream.participant_id
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
        reception = Reception(mid, track.kind, self._publishers.get(mid), time.monotonic())
        if self.config.decode and track.kind == "video":
            reception.keyframes = None
        self._receptions[mid] = reception
        say("track", mid=mid, kind=track.kind, participant_id=reception.participant_id)
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
                await track.recv()  # a decoded frame: only its arrival matters
            except MediaStreamError:
                return
            self._count(reception, keyframe=track.kind == "audio", first=True)

    def _count(self, reception: Reception, keyframe: bool, first: bool) -> None:
        """One frame arrived; ``first`` says whether it could be the one a person first sees."""
        reception.frames += 1
        if reception.keyframes is not None:
            reception.keyframes += keyframe
        if reception.first_frame_s is None and first:
            now = time.monotonic()
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

    def _summary(self) -> dict[str, Any]:
        return {
            "tracks": {mid: r.summary() for mid, r in self._receptions.items()},
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


async def take_part(config: PeerConfig) -> int:
    tracks = synthetic_tracks(config)
    nc = await nats.connect(nats_servers(config.nats_url))
    try:
        return await Participant(config, nc, tracks).attend()
    finally:
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
