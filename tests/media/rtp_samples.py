"""Real RTP packets for the packet-path tests: payloads from aiortc's own packetizers."""

import fractions

import av
import numpy as np
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

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
    from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpParameters

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
        frame.time_base = fractions.Fraction(1, 90000)
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
