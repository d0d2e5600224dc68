"""Reading RTP headers and spotting keyframes, against packets aiortc itself writes."""

import pytest
from aiortc.rtp import RtpPacket

from services.media.keyframes import h264_keyframe_start, keyframe_test, vp8_keyframe_start
from services.media.rtp import MalformedRtp, extension_block, parse
from tests.media.rtp_packets import (
    AUDIO_EXTENSIONS,
    extensions_map,
    h264_payloads,
    packet,
    vp8_payloads,
)


def test_a_packet_is_read_as_aiortc_wrote_it() -> None:
    data = packet(b"payload", sequence=65535, timestamp=4_000_000_000, marker=True, mid="12")
    view = parse(data)
    assert (view.sequence, view.timestamp, view.ssrc) == (65535, 4_000_000_000, 0x1234)
    assert (view.payload_type, view.marker, view.payload) == (96, 0x80, b"payload")
    assert view.extensions[4] == b"12"


def test_the_audio_level_extension_is_found() -> None:
    data = packet(
        b"o", sequence=1, timestamp=1, audio_level=(True, 30), ids=AUDIO_EXTENSIONS, mid=None
    )
    level = parse(data).extensions[1]
    assert level[0] & 0x80
    assert level[0] & 0x7F == 30


def test_two_byte_extensions_are_read_too() -> None:
    block = extension_block([(20, b"x" * 20), (1, b"y")])
    assert block[:2] == b"\x10\x00"
    header = bytes([0x90, 96]) + (7).to_bytes(2, "big") + bytes(8)
    view = parse(header + block + b"p")
    assert view.extensions == {20: b"x" * 20, 1: b"y"}
    assert view.payload == b"p"


def test_an_extension_block_aiortc_reads_back() -> None:
    block = extension_block([(4, b"7"), (1, bytes([0x80 | 20]))])
    header = bytes([0x90, 111]) + (9).to_bytes(2, "big") + (5).to_bytes(4, "big") + bytes(4)
    read = RtpPacket.parse(header + block + b"opus", extensions_map(AUDIO_EXTENSIONS))
    assert read.extensions.mid == "7"
    assert read.extensions.audio_level == (True, 20)
    assert read.payload == b"opus"


@pytest.mark.parametrize(
    "data",
    [b"", bytes(11), bytes([0x40]) + bytes(11), bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x05"],
)
def test_what_is_not_rtp_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedRtp):
        parse(data)


def test_only_the_first_packet_of_a_vp8_keyframe_starts_one() -> None:
    frames = vp8_payloads(4)
    first = frames[0]
    assert vp8_keyframe_start(first[0])
    assert not any(vp8_keyframe_start(p) for p in first[1:])
    assert not any(vp8_keyframe_start(p) for frame in frames[1:] for p in frame)
    # An extended descriptor (X, I with a 15-bit picture id, L, T/K) is stepped over.
    descriptor = bytes([0x90, 0xF0, 0x80, 0x01, 0x00, 0x00])
    assert vp8_keyframe_start(descriptor + b"\x00rest")
    assert not vp8_keyframe_start(descriptor + b"\x01rest")


def test_h264_keyframes_start_at_the_sps_or_idr_alone_in_a_stap_a_or_fu_a() -> None:
    frames = h264_payloads(3, keyframe_at=2)
    starts = [[h264_keyframe_start(p) for p in frame] for frame in frames]
    assert starts[0][0]
    assert starts[2][0]
    assert not any(starts[1])
    sps = bytes([0x67, 1, 2])
    stap_a = bytes([0x78]) + len(sps).to_bytes(2, "big") + sps
    fu_a_start, fu_a_middle = bytes([0x7C, 0x85, 0]), bytes([0x7C, 0x05, 0])
    assert h264_keyframe_start(stap_a)
    assert h264_keyframe_start(fu_a_start)
    assert not h264_keyframe_start(fu_a_middle)
    assert not h264_keyframe_start(bytes([0x41, 0]))  # a P slice


def test_audio_needs_no_keyframe() -> None:
    assert keyframe_test("audio/opus") is None
    assert keyframe_test("video/VP8") is vp8_keyframe_start
    assert keyframe_test("video/h264") is h264_keyframe_start
