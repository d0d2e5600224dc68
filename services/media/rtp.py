"""RTP headers as the forwarding path reads and writes them (RFC 3550, RFC 8285).

The node never builds aiortc ``RtpPacket`` objects on the forwarding path: it reads the few
header fields it needs from the bytes, and writes each subscriber's copy as one new fixed
header, that subscriber's header extensions, and the publisher's payload untouched.
"""

import struct
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")
SEQUENCE = struct.Struct("!H")
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
FORWARDED_EXTENSIONS = (AUDIO_LEVEL, ABS_SEND_TIME)
"""What a copy carries besides its own ``mid``: the speaker's level (RFC 6464) and the send
time (rewritten by the node); stream ids and the rest describe the publisher's leg only."""
ONE_BYTE = 0xBEDE


class MalformedRtp(ValueError):
    """Bytes that are not an RTP packet this node can forward."""


@dataclass(slots=True)
class RtpView:
    """What the forwarding path reads from one packet; ``payload`` starts after the header
    extension and includes any padding (the ``P`` bit is kept)."""

    first: int
    """The first header byte without the extension bit: version, padding, CSRC count."""
    marker: int
    """0x80 if the marker bit is set, else 0."""
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrc: bytes
    extensions: dict[int, bytes]
    payload: bytes
    level: bytes | None = None
    """The speaker's ssrc-audio-level byte, once the upstream has read it."""


def parse(data: bytes) -> RtpView:
    """Read ``data``; raise :class:`MalformedRtp` if it is not RTP version 2."""
    if len(data) < 12:
        raise MalformedRtp("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise MalformedRtp("not RTP version 2")
    end = 12 + 4 * (first & 0x0F)
    csrc = data[12:end]
    extensions: dict[int, bytes] = {}
    if first & 0x10:
        if len(data) < end + 4:
            raise MalformedRtp("header extension cut short")
        profile, words = struct.unpack_from("!HH", data, end)
        start, end = end + 4, end + 4 + 4 * words
        if len(data) < end:
            raise MalformedRtp("header extension cut short")
        extensions = _read_extensions(profile, data[start:end])
    if len(data) < end:
        raise MalformedRtp("header longer than the packet")
    return RtpView(
        first=first & 0xEF,
        marker=second & 0x80,
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        csrc=csrc,
        extensions=extensions,
        payload=data[end:],
    )


def _read_extensions(profile: int, block: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    i, size = 0, len(block)
    if profile == ONE_BYTE:
        while i < size:
            byte = block[i]
            if byte == 0:  # padding
                i += 1
                continue
            ext_id, length = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:
                break
            found[ext_id] = block[i + 1 : i + 1 + length]
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 1 < size:
            ext_id = block[i]
            if ext_id == 0:
                i += 1
                continue
            length = block[i + 1]
            found[ext_id] = block[i + 2 : i + 2 + length]
            i += 2 + length
    return found


def extension_block(elements: list[tuple[int, bytes]]) -> bytes:
    """The header extension for ``(id, value)`` pairs, one-byte form where it fits (RFC 8285),
    padded to 32 bits; empty when there is nothing to carry."""
    if not elements:
        return b""
    if all(0 < i < 15 and 0 < len(v) <= 16 for i, v in elements):
        profile = ONE_BYTE
        body = b"".join(bytes(((i << 4) | (len(v) - 1),)) + v for i, v in elements)
    else:
        profile = 0x1000
        body = b"".join(bytes((i, len(v))) + v for i, v in elements)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", profile, len(body) // 4) + body


class ExtensionWriter:
    """One m-line's header extensions: its ``mid`` fixed, abs-send-time and the audio level
    filled in per packet, each under that m-line's id. The one-byte form (RFC 8285) is built
    from bytes made once; ids above 14 or a long ``mid`` take :func:`extension_block`."""

    def __init__(self, mid: tuple[int, bytes] | None, abs_id: int | None, level_id: int | None):
        self._mid, self._abs_id, self._level_id = mid, abs_id, level_id
        ids = [i for i in (mid and mid[0], abs_id, level_id) if i]
        self._one_byte = all(0 < i < 15 for i in ids) and (mid is None or 0 < len(mid[1]) <= 16)
        self._mid_bytes = bytes(((mid[0] << 4) | (len(mid[1]) - 1),)) + mid[1] if mid else b""
        self._abs = bytes(((abs_id << 4) | 2,)) if abs_id else None
        self._level = bytes((level_id << 4,)) if level_id else None

    def block(self, sent_at: bytes, level: bytes | None) -> bytes:
        if not self._one_byte:
            return self._general(sent_at, level)
        body = self._mid_bytes
        if self._abs is not None:
            body += self._abs + sent_at
        if level is not None and self._level is not None:
            body += self._level + level
        if not body:
            return b""
        body += _PADDING[-len(body) % 4]
        return _ONE_BYTE_HEADERS[len(body) >> 2] + body

    def _general(self, sent_at: bytes, level: bytes | None) -> bytes:
        elements: list[tuple[int, bytes]] = []
        if self._mid is not None:
            elements.append(self._mid)
        if self._abs_id:
            elements.append((self._abs_id, sent_at))
        if self._level_id and level is not None:
            elements.append((self._level_id, level))
        return extension_block(elements)


_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")
_ONE_BYTE_HEADERS = [struct.pack("!HH", ONE_BYTE, words) for words in range(16)]


def abs_send_time(ntp: int) -> bytes:
    """abs-send-time's 24 bits (6.18 fixed-point seconds) of a 64-bit NTP time."""
    return ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")


def audio_level(value: bytes) -> tuple[bool, int]:
    """RFC 6464: (voice activity, level in -dBov: 0 loudest, 127 silence)."""
    return bool(value[0] & 0x80), value[0] & 0x7F


def is_rtcp(data: bytes) -> bool:
    """RTCP shares the port (RFC 5761): its packet types 192-223 sit where RTP has M+PT."""
    return len(data) > 1 and 192 <= data[1] <= 223
