"""What the headless peer (:mod:`antechamber.peer`) publishes: a synthetic picture and tone.

Either as tracks of raw frames for aiortc to encode (:class:`PictureTrack`,
:class:`ToneTrack`), or encoded once at start into a few seconds of packets that
:class:`LoopTrack` hands to aiortc over and over to packetize only (VP8 with libvpx or H.264
with libx264, Opus with libopus). :class:`Speech` says when the person speaks; in between,
the audio is silence.
"""

import array
import asyncio
import fractions
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import (
    VIDEO_CLOCK_RATE,
    VIDEO_TIME_BASE,
    AudioStreamTrack,
    MediaStreamError,
    VideoStreamTrack,
)
from av.stream import Stream
from av.video.frame import PictureType

Kind = Literal["audio", "video"]
VideoCodec = Literal["vp8", "h264"]
LOOP_SECONDS = 4
SAMPLE_RATE = 48_000
SAMPLES_PER_FRAME = 960  # 20 ms, as aiortc packetizes Opus
SILENCE_LEVEL = 127
"""RFC 6464: -127 dBov, the level of silence (0 is the loudest)."""


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


class Speech:
    """When the person speaks, and how loud: what the audio track sends and what the
    ssrc-audio-level header extension says about each packet.

    ``intervals`` are ``[start_s, end_s)`` after :meth:`begin` (joining); None means all the
    time. The audio track asks at every frame (:meth:`tick`); the sender's audio-level hook
    then reads the answer for that same frame (:meth:`rfc6464`), so a packet's level always
    matches what it carries.
    """

    def __init__(
        self, intervals: Sequence[tuple[float, float]] | None = None, voice_level: int = 20
    ) -> None:
        self._intervals = None if intervals is None else tuple(intervals)
        self._voice_level = voice_level
        self._origin = time.monotonic()
        self.speaking = self._intervals is None

    def begin(self, at: float) -> None:
        """The intervals count from ``at`` (a ``time.monotonic()``)."""
        self._origin = at

    def speaking_at(self, since_begin_s: float) -> bool:
        if self._intervals is None:
            return True
        return any(start <= since_begin_s < end for start, end in self._intervals)

    def tick(self) -> bool:
        """Whether the person speaks now, for the frame about to be sent."""
        self.speaking = self.speaking_at(time.monotonic() - self._origin)
        return self.speaking

    def rfc6464(self) -> int:
        """The ssrc-audio-level byte for the latest frame: voice activity (top bit) and the
        level in -dBov; silence when not speaking."""
        return 0x80 | self._voice_level if self.speaking else SILENCE_LEVEL


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
    """The n-th 20 ms of ``tone``, repeating (silence when ``tone`` is empty)."""
    frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES_PER_FRAME)
    size = frame.planes[0].buffer_size
    if tone:
        start = n * size % len(tone)
        frame.planes[0].update(tone[start : start + size])
    else:
        frame.planes[0].update(bytes(size))
    frame.sample_rate = SAMPLE_RATE
    frame.pts = n * SAMPLES_PER_FRAME
    frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return frame


SCREEN_COLOUR = (105, 212, 234)
"""The screen picture's Y, U, V: a saturated magenta no camera picture here comes near."""


class ScreenPicture(Picture):
    """A shared screen as a test sees it: one flat, distinctive colour (``SCREEN_COLOUR``)
    with a small square of noise moving across it, so that every frame says something."""

    def frame(self, n: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, SCREEN_COLOUR, strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        luma = frame.planes[0]
        side = max(2, min(self.width, self.height) // 16)
        left = 8 * n % max(1, self.width - side)
        rows = bytearray(luma.buffer_size)
        rows[:] = bytes([SCREEN_COLOUR[0]]) * luma.buffer_size
        for row in range(side):
            start = row * luma.line_size + left
            rows[start : start + side] = os.urandom(side)
        luma.update(bytes(rows))
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
    """A 440 Hz tone in 20 ms frames while ``speech`` says so, silence otherwise, for aiortc
    to encode."""

    def __init__(self, speech: Speech) -> None:
        super().__init__()
        self._tone = tone_second()
        self._speech = speech
        self._pacer = Pacer(SAMPLES_PER_FRAME / SAMPLE_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.tick()
        return tone_frame(self._tone if self._speech.tick() else b"", n)


@dataclass(frozen=True, slots=True)
class EncodedLoop:
    """Encoded frames to send over and over, ``per_second`` of them.

    ``frames[0]`` decodes on its own; ``keyframes``, for video, holds every frame encoded
    again as a keyframe, to answer a keyframe request without a reference to the frames before;
    ``silence``, for audio, what to send instead while the person does not speak.
    """

    kind: Kind
    clock_rate: int
    per_second: int
    frames: tuple[bytes, ...]
    keyframes: tuple[bytes, ...] = ()
    silence: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("an encoded loop needs frames")
        if self.keyframes and len(self.keyframes) != len(self.frames):
            raise ValueError(f"{len(self.keyframes)} keyframes for {len(self.frames)} frames")


VideoEncode = Callable[[Sequence[av.VideoFrame], int, int, bool], list[bytes]]


def encode_vp8(
    frames: Sequence[av.VideoFrame], fps: int, bitrate: int, keyframes: bool
) -> list[bytes]:
    """``frames`` encoded with libvpx at a constant ``bitrate``: one keyframe and deltas, or
    every frame a keyframe."""
    codec = _video_encoder("libvpx", frames[0], fps, bitrate)
    codec.gop_size = 1 if keyframes else 1_000_000
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",  # one packet per frame, in order
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
    }
    return _encode_all(codec, frames, keyframes, "libvpx")


def encode_h264(
    frames: Sequence[av.VideoFrame], fps: int, bitrate: int, keyframes: bool
) -> list[bytes]:
    """``frames`` encoded with libx264 (constrained baseline, as WebRTC's packetization-mode=1
    profiles allow; Annex B, SPS and PPS before every IDR) at about ``bitrate``: one IDR and P
    frames, or every frame an IDR.

    Both ways use the same settings (only the picture type is forced), so their SPS and PPS
    are the same and an IDR of one may stand in for a frame of the other: the P frames after
    it then skip ``frame_num``s, which a decoder conceals without an error.
    """
    codec = _video_encoder("libx264", frames[0], fps, bitrate)
    codec.gop_size = 1_000_000
    codec.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",  # no lookahead, no B frames: one packet per frame, in order
        "profile": "baseline",  # x264 marks it constrained (constraint_set1)
        "forced-idr": "1",  # a forced I frame is an IDR
        "x264-params": "scenecut=0:annexb=1:repeat-headers=1",
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
    }
    return _encode_all(codec, frames, keyframes, "libx264")


def _video_encoder(name: str, first: av.VideoFrame, fps: int, bitrate: int) -> av.VideoCodecContext:
    """An encoder for ``first``'s size in 4:2:0 at ``fps`` and ``bitrate``."""
    codec = av.CodecContext.create(name, "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = first.width
    codec.height = first.height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    return codec


def _encode_all(
    codec: av.VideoCodecContext, frames: Sequence[av.VideoFrame], keyframes: bool, name: str
) -> list[bytes]:
    packets: list[bytes] = []
    for n, frame in enumerate(frames):
        frame.pts = n
        frame.time_base = codec.time_base
        frame.pict_type = PictureType.I if keyframes else PictureType.NONE
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    if len(packets) != len(frames):
        raise RuntimeError(f"{name} gave {len(packets)} packets for {len(frames)} frames")
    return packets


VIDEO_ENCODERS: dict[VideoCodec, VideoEncode] = {"vp8": encode_vp8, "h264": encode_h264}
VIDEO_MIME_TYPES: dict[VideoCodec, str] = {"vp8": "video/VP8", "h264": "video/H264"}


def video_loop(
    picture: Picture,
    fps: int,
    bitrate: int,
    seconds: int = LOOP_SECONDS,
    codec: VideoCodec = "vp8",
) -> EncodedLoop:
    encode = VIDEO_ENCODERS[codec]
    frames = [picture.frame(n) for n in range(seconds * fps)]
    return EncodedLoop(
        kind="video",
        clock_rate=VIDEO_CLOCK_RATE,
        per_second=fps,
        frames=tuple(encode(frames, fps, bitrate, False)),
        keyframes=tuple(encode(frames, fps, bitrate, True)),
    )


def encode_opus(tone: bytes, count: int, application: str) -> list[bytes]:
    """``count`` 20 ms frames of ``tone`` (silence if empty) encoded with libopus."""
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 48_000
    codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
    codec.options = {"application": application}
    packets: list[bytes] = []
    for n in range(count):
        packets.extend(bytes(packet) for packet in codec.encode(tone_frame(tone, n)))
    packets.extend(bytes(packet) for packet in codec.encode(None))
    return packets[:count]  # the encoder's flush adds one beyond


def audio_loop() -> EncodedLoop:
    """The tone encoded with libopus, 20 ms a packet, and silence to send between words.

    Silence is encoded for music ("audio": CELT), where libopus makes it a 3-byte packet,
    as small as a browser's DTX; for speech ("voip") it would still spend about 56 bytes.
    """
    per_second = SAMPLE_RATE // SAMPLES_PER_FRAME
    return EncodedLoop(
        kind="audio",
        clock_rate=SAMPLE_RATE,
        per_second=per_second,
        frames=tuple(encode_opus(tone_second(), LOOP_SECONDS * per_second, "voip")),
        silence=tuple(encode_opus(b"", per_second, "audio")),
    )


class LoopTrack(MediaStreamTrack):
    """An :class:`EncodedLoop` as :class:`av.Packet`s, which aiortc sends without encoding;
    for audio, its silence while ``speech`` says the person does not speak."""

    def __init__(self, loop: EncodedLoop, speech: Speech | None = None) -> None:
        super().__init__()
        self.kind = loop.kind
        self._encoded = loop
        self._speech = speech
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
        if self._speech is not None and not self._speech.tick() and self._encoded.silence:
            data = self._encoded.silence[n % len(self._encoded.silence)]
        packet = av.Packet(data)
        packet.pts = packet.dts = n * self._encoded.clock_rate // self._encoded.per_second
        packet.time_base = fractions.Fraction(1, self._encoded.clock_rate)
        return packet
