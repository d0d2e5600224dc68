"""Where a picture that decodes on its own starts, read from one RTP payload.

A subscriber that starts mid-picture only gets decode errors, so video is held back from a
new subscriber until the first packet of a keyframe; these functions find that packet
without depacketizing anything.
"""

from collections.abc import Callable

KeyframeTest = Callable[[bytes], bool]


def vp8_keyframe_start(payload: bytes) -> bool:
    """RFC 7741: the first packet (S=1, partition 0) of a frame whose tag says key frame."""
    if not payload:
        return False
    descriptor = payload[0]
    if not descriptor & 0x10 or descriptor & 0x07:  # S bit, partition id 0
        return False
    i = 1
    if descriptor & 0x80:  # X: an extension byte follows
        if len(payload) < 2:
            return False
        extension = payload[1]
        i = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= i:
                return False
            i += 2 if payload[i] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            i += 1
        if extension & 0x30:  # T or K: TID/KEYIDX byte
            i += 1
    # RFC 6386 9.1: the first bit of the frame tag is 0 for a key frame.
    return len(payload) > i and not payload[i] & 0x01


def h264_keyframe_start(payload: bytes) -> bool:
    """RFC 6184: a packet that carries an SPS or the start of an IDR slice, alone, in a
    STAP-A, or as the first fragment of an FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (5, 7):
        return True
    if nal_type == 24:  # STAP-A: 16-bit size, then the NAL unit
        i = 1
        while i + 2 < len(payload):
            size = int.from_bytes(payload[i : i + 2], "big")
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    if nal_type == 28 and len(payload) > 1:  # FU-A: start bit and the fragment's type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether a whole depayloaded frame decodes on its own (VP8 bytes, or H.264 in Annex B
    as aiortc's depayloader and libx264 write it); audio always does."""
    kind = mime_type.lower()
    if kind == "video/vp8":
        # RFC 6386 9.1: the first bit of the frame tag is 0 for a key frame.
        return bool(data) and not data[0] & 0x01
    if kind == "video/h264":
        return any(nal_type in (5, 7) for nal_type in h264_nal_types(data))  # IDR or SPS
    return True


def h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types of an Annex B stream."""
    types = []
    start = data.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(data):
        types.append(data[start + 3] & 0x1F)
        start = data.find(b"\x00\x00\x01", start + 3)
    return types


def keyframe_test(mime_type: str) -> KeyframeTest | None:
    """How to spot a keyframe's first packet for ``mime_type``; None for audio (every packet
    stands alone)."""
    kind = mime_type.lower()
    if kind == "video/vp8":
        return vp8_keyframe_start
    if kind == "video/h264":
        return h264_keyframe_start
    return None
