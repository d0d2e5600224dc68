"""The C loop (services/media/_fastpath.c) against the Python path it stands in for.

Two subscribers' copies of one publisher's packets, with the same terms and offsets: one
goes out in C, protected and sent on a real UDP socket, and is read back and unprotected
with the matching libsrtp session; the other takes the Python path into a list. Byte for byte
the same, for video (keyframes, RTX resends, a rebind) and audio (levels, CSRCs, a voice held
and resumed), and with extension ids the one-byte form cannot carry.
"""

import contextlib
import random
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest

from services.media import forwarding
from services.media._fastpath import Outlet, fan_out
from services.media.aiortc_hooks import SRTP_PROTECT, srtp_context
from services.media.forwarding import Downstream, Upstream
from services.media.rtp import parse
from tests.media.rtp_packets import AUDIO_EXTENSIONS, audio_upstream, packet, video_upstream
from tests.media.test_packet_path import Publisher, Sent

KEY = bytes(range(30))
SUBSCRIBER_IDS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 3,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 5,
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 9,
}


class UdpWire:
    """A subscriber's connection reduced to what the packet path uses: an outlet on a real
    UDP socket, and ``send_rtp`` for what Python sends (as ``Wire.send_rtp`` does)."""

    def __init__(self) -> None:
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.setblocking(False)
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.settimeout(2)
        self.session = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        self.reader = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        )
        self.outlet = Outlet()
        self.outlet.protect_with(srtp_context(self.session), SRTP_PROTECT, self.session)
        self.outlet.send_on(self.sender.fileno(), "127.0.0.1", self.receiver.getsockname()[1])
        self.through_python = 0

    def send_rtp(self, data: bytes) -> None:
        self.through_python += 1
        self.outlet.send(data)

    def read(self, count: int) -> list[bytes]:
        return [self.reader.unprotect(self.receiver.recv(2048)) for _ in range(count)]

    def close(self) -> None:
        self.outlet.close()
        self.sender.close()
        self.receiver.close()


@pytest.fixture
def same_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both subscribers get the same random offsets and RTX sequence numbers, and resends
    to either the same send time."""
    monkeypatch.setattr(random, "randrange", lambda n: 0x5A5A5A5A % n)
    monkeypatch.setattr(forwarding, "ntp_now", lambda: 0xE9A1B2C3D4E5F607)


@contextlib.contextmanager
def udp_wire() -> Iterator[UdpWire]:
    wire = UdpWire()
    try:
        yield wire
    finally:
        wire.close()


def pair(
    upstream: Upstream, wire: UdpWire, sent: Sent, ids: dict[str, int] = SUBSCRIBER_IDS
) -> tuple[Downstream, Downstream]:
    copies = []
    for sink in (wire, sent):
        downstream = Downstream(
            upstream.kind, upstream.clock_rate, ssrc=0xAAAA, rtx_ssrc=0xBBBB, wire=sink
        )
        downstream.terms("7", 100, 101 if upstream.kind == "video" else None, ids)
        downstream.bind(upstream)
        copies.append(downstream)
    return copies[0], copies[1]


@pytest.mark.usefixtures("same_offsets")
def test_video_copies_from_c_are_what_python_writes_byte_for_byte() -> None:
    upstream, sent = video_upstream(), Sent()
    with udp_wire() as wire:
        in_c, in_python = pair(upstream, wire, sent)
        publisher = Publisher(upstream)
        publisher.frame()  # before a keyframe: held back by both
        for n in range(30):
            publisher.frame(keyframe=n % 10 == 0)
        asked = [in_c.highest_seq, (in_c.highest_seq - 3) & 0xFFFF]
        assert in_c.resend(asked, publisher.now) == in_python.resend(asked, publisher.now) == 2

        assert len(sent) > 30
        assert wire.read(len(sent)) == sent
        # Only the first keyframe's first packet and the two resends went through Python.
        assert wire.through_python == 3
        assert wire.outlet.sent == len(sent)
        for field in ("highest_seq", "last_ts", "last_sent_at", "packets", "octets"):
            assert getattr(in_c, field) == getattr(in_python, field), field


@pytest.mark.usefixtures("same_offsets")
def test_audio_copies_from_c_carry_the_level_and_csrcs_and_resume_without_a_gap() -> None:
    upstream, sent = audio_upstream(), Sent()
    with udp_wire() as wire:
        pair(upstream, wire, sent)
        for sequence in range(1, 80):
            if sequence == 20:
                upstream.hold()
            if sequence == 40:
                upstream.resume()
            data = packet(
                bytes([sequence]) * 60,
                sequence=sequence,
                timestamp=sequence * 960,
                audio_level=(sequence % 2 == 0, sequence % 127) if sequence % 7 else None,
                ids=AUDIO_EXTENSIONS,
                payload_type=111,
            )
            if sequence % 5 == 0:  # two contributing sources: CC 2, 8 bytes after the header
                data = bytes([data[0] | 2]) + data[1:12] + bytes(range(8)) + data[12:]
            upstream.receive(parse(data), data, 10.0 + sequence * 0.02)
        assert len(sent) == 79 - 20
        assert wire.read(len(sent)) == sent
        assert wire.through_python == 2  # the first packet, and the first after resuming


@pytest.mark.usefixtures("same_offsets")
def test_extension_ids_the_one_byte_form_cannot_carry_take_the_python_path() -> None:
    upstream, sent = video_upstream(), Sent()
    ids = {"urn:ietf:params:rtp-hdrext:sdes:mid": 15, **dict(list(SUBSCRIBER_IDS.items())[1:])}
    with udp_wire() as wire:
        pair(upstream, wire, sent, ids)
        publisher = Publisher(upstream)
        for n in range(3):
            publisher.frame(keyframe=n == 0)
        assert wire.read(len(sent)) == sent
        assert wire.through_python == len(sent)


def test_a_copy_whose_outlet_is_closed_or_whose_epoch_is_old_comes_back_to_python() -> None:
    with udp_wire() as wire:
        downstream = Downstream("audio", 48_000, ssrc=1, rtx_ssrc=2, wire=wire)
        downstream.epoch = 7
        args = (0x80, 0, 1, 960, b"", b"opus", b"\0\0\0", None, 1.0)
        assert fan_out([downstream], 7, *args) is None
        assert wire.outlet.sent == 1
        assert fan_out([downstream], 8, *args) == [downstream]
        wire.outlet.close()
        assert fan_out([downstream], 7, *args) == [downstream]
        assert wire.outlet.sent == 1
        assert not wire.outlet.sending


def test_what_the_socket_refuses_is_counted_as_dropped_not_raised() -> None:
    with udp_wire() as wire:
        downstream = Downstream("audio", 48_000, ssrc=1, rtx_ssrc=2, wire=wire)
        downstream.epoch = 1
        # An IPv6 destination for an IPv4 socket: sendto fails (EAFNOSUPPORT) every time.
        wire.outlet.send_on(wire.sender.fileno(), "::1", 9)
        for sequence in range(1, 21):
            fan_out([downstream], 1, 0x80, 0, sequence, 960, b"", b"opus", b"\0\0\0", None, 1.0)
        assert (wire.outlet.sent, wire.outlet.dropped) == (0, 20)
        assert downstream.packets == 20
