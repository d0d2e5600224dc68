"""Encoded frames as RTP packets, the way a publisher sends them, made with aiortc's own parts.

Each :class:`RtpStream` is one sender's stream: its own SSRC, and a sequence number and RTP
timestamp that start where it is told (at random by default) and wrap at 2^16 and 2^32. Every
packet carries a ``mid`` header extension, as a browser's do.
"""

import random
from dataclasses import dataclass, field
from fractions import Fraction

import av
from aiortc import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from services.media.keyframes import is_keyframe

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"


_random = random.Random(7741)  # reproducible "random" starts


def _extensions() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=1, uri=MID)])
    )
    return extensions


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
