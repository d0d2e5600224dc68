"""Encoded frames as RTP packets, the way a publisher sends them, made with aiortc's own parts.

:func:`packet` makes one packet with chosen header fields and extensions; the payload helpers
give real VP8 and H.264 payloads from aiortc's packetizers; :func:`video_upstream` and
:func:`audio_upstream` are the node's side of such a publisher's tracks.

Each :class:`RtpStream` is one sender's stream: its own SSRC, and a sequence number and RTP
timestamp that start where it is told (at random by default) and wrap at 2^16 and 2^32. Every
packet carries a ``mid`` header extension, as a browser's do.
"""

import random
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from aiortc import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from services.media.forwarding import Upstream
from services.media.keyframes import is_keyframe, vp8_keyframe_start

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"


_random = random.Random(7741)  # reproducible "random" starts


def _extensions() -> HeaderExtensionsMap:
    return extensions_map({MID: 1})


@dataclass
class RtpStream:
    """One sender's RTP stream of ``codec``."""

    codec: RTCRtpCodecParameters
    ssrc: int = field(default_factory=lambda: _random.getrandbits(32))
    sequence: int = field(default_factory=lambda: _random.getrandbits(16))
    """The next packet's sequence number."""
    timestamp: int = field(default_factory=lambda: _random.getrandbits(32))
    """The RTP timestamp of the stream's time 0."""
    mid: str = "0"
    encoder: Encoder = field(init=False)
    extensions: HeaderExtensionsMap = field(init=False, default_factory=_extensions)

    def __post_init__(self) -> None:
        self.encoder = get_encoder(self.codec)

    @property
    def mime(self) -> str:
        return self.codec.mimeType.lower()

    def packets(self, data: bytes, timestamp: int) -> list[tuple[bytes, bool]]:
        """One encoded frame, ``timestamp`` ticks of the codec's clock from the stream's start,
        as the RTP packets that carry it, each with whether it is a keyframe's first packet."""
        frame = av.Packet(data)
        frame.pts = 0
        frame.time_base = Fraction(1, self.codec.clockRate)
        payloads, _ = self.encoder.pack(frame)
        keyframe = self.mime.startswith("video/") and is_keyframe(self.mime, data)
        packets = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=self.codec.payloadType or 0,
                marker=int(i == len(payloads) - 1),
                sequence_number=self.sequence,
                timestamp=(self.timestamp + timestamp) % (1 << 32),
                ssrc=self.ssrc,
                payload=payload,
            )
            packet.extensions.mid = self.mid
            packets.append((packet.serialize(self.extensions), keyframe and i == 0))
            self.sequence = (self.sequence + 1) % (1 << 16)
        return packets


VIDEO_EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
}
AUDIO_EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
}


def extensions_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    """aiortc's map of extension ids, as its transports configure it."""
    parameters = RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
    )
    extensions = HeaderExtensionsMap()
    extensions.configure(parameters)
    return extensions


def pictures(count: int, width: int = 160, height: int = 120) -> list[av.VideoFrame]:
    out = []
    for n in range(count):
        picture = np.full((height, width, 3), n * 20 % 255, np.uint8)
        picture[n % height, :, :] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = n * 6000
        frame.time_base = Fraction(1, 90000)
        out.append(frame)
    return out


def vp8_payloads(count: int) -> list[list[bytes]]:
    """RTP payloads of ``count`` frames, a keyframe first, from aiortc's VP8 encoder."""
    from aiortc.codecs.vpx import Vp8Encoder

    encoder = Vp8Encoder()
    return [encoder.encode(frame)[0] for frame in pictures(count)]


def h264_payloads(count: int, keyframe_at: int | None = None) -> list[list[bytes]]:
    """RTP payloads of ``count`` frames from aiortc's H.264 encoder (a keyframe first, and
    one at ``keyframe_at`` if given)."""
    from aiortc.codecs.h264 import H264Encoder

    encoder = H264Encoder()
    out = []
    for n, frame in enumerate(pictures(count, 320, 240)):
        out.append(encoder.encode(frame, force_keyframe=n == keyframe_at)[0])
    return out


def packet(
    payload: bytes,
    *,
    sequence: int,
    timestamp: int,
    ssrc: int = 0x1234,
    payload_type: int = 96,
    marker: bool = False,
    mid: str | None = "0",
    abs_send_time: int | None = None,
    audio_level: tuple[bool, int] | None = None,
    ids: dict[str, int] = VIDEO_EXTENSIONS,
) -> bytes:
    """One packet as a publisher sends it (serialized by aiortc)."""
    rtp = RtpPacket(
        payload_type=payload_type,
        marker=int(marker),
        sequence_number=sequence & 0xFFFF,
        timestamp=timestamp & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    )
    rtp.extensions.mid = mid
    rtp.extensions.abs_send_time = abs_send_time
    if audio_level is not None:
        rtp.extensions.audio_level = audio_level
    return rtp.serialize(extensions_map(ids))


def video_upstream() -> Upstream:
    """A publisher's VP8 track as the node receives it (payload type 96, RTX 97, NACK)."""
    return Upstream(
        kind="video",
        mime_type="video/vp8",
        clock_rate=90_000,
        payload_type=96,
        rtx_payload_type=97,
        level_id=None,
        keyframe_test=vp8_keyframe_start,
        nack=True,
    )


def audio_upstream() -> Upstream:
    """A publisher's Opus track with its audio level under id 1 (payload type 111)."""
    return Upstream(
        kind="audio",
        mime_type="audio/opus",
        clock_rate=48_000,
        payload_type=111,
        rtx_payload_type=None,
        level_id=1,
        keyframe_test=None,
        nack=False,
    )
