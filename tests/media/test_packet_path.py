"""One publisher's packets through an Upstream to Downstreams, byte by byte.

The copies go to a list instead of a socket; everything else is the node's own code, and
each copy is read back with aiortc's parser in the subscriber's extension ids.
"""

import itertools

from aiortc.rtp import RtpPacket

from services.media.forwarding import HISTORY, Downstream, Upstream
from services.media.rtp import parse
from tests.media.rtp_packets import (
    AUDIO_EXTENSIONS,
    audio_upstream,
    extensions_map,
    packet,
    video_upstream,
    vp8_payloads,
)

SUBSCRIBER_IDS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 3,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 5,
}


class Sent(list[bytes]):
    """A wire with no socket of its own (``outlet`` None): every copy takes the Python path."""

    outlet = None

    def send_rtp(self, packet: bytes) -> None:
        self.append(packet)

    def read(self, ids: dict[str, int] = SUBSCRIBER_IDS) -> list[RtpPacket]:
        return [RtpPacket.parse(p, extensions_map(ids)) for p in self]


def video_downstream(sent: Sent, upstream: Upstream, rtx: bool = True) -> Downstream:
    downstream = Downstream("video", 90_000, ssrc=0xAAAA, rtx_ssrc=0xBBBB, wire=sent)
    downstream.terms("7", 100, 101 if rtx else None, SUBSCRIBER_IDS)
    downstream.bind(upstream)
    return downstream


class Publisher:
    """Sends real VP8 frames (a keyframe every ``gop`` frames) as RTP packets."""

    def __init__(self, upstream: Upstream, ssrc: int = 0x1234, sequence: int = 65500) -> None:
        self.upstream = upstream
        self.ssrc = ssrc
        self.sequence = itertools.count(sequence)
        self.timestamp = 4_294_000_000
        self.now = 100.0
        self.keyframe, *self.deltas = vp8_payloads(3)

    def frame(self, keyframe: bool = False, drop: set[int] | None = None) -> list[int]:
        """One frame's packets; the sequence numbers sent."""
        payloads = self.keyframe if keyframe else self.deltas[0]
        sent = []
        for i, payload in enumerate(payloads):
            sequence = next(self.sequence) & 0xFFFF
            if drop and sequence in drop:
                continue
            self.send(payload, sequence, marker=i == len(payloads) - 1)
            sent.append(sequence)
        self.timestamp += 6000
        self.now += 1 / 15
        return sent

    def send(self, payload: bytes, sequence: int, marker: bool = False) -> bool:
        data = packet(
            payload,
            sequence=sequence,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            marker=marker,
            abs_send_time=123,
        )
        return self.upstream.receive(parse(data), data, self.now)


def test_each_copy_is_in_the_subscribers_terms_with_the_payload_untouched() -> None:
    upstream, sent = video_upstream(), Sent()
    video_downstream(sent, upstream)
    publisher = Publisher(upstream)
    publisher.frame(keyframe=True)
    publisher.frame()
    copies = sent.read()
    assert {c.ssrc for c in copies} == {0xAAAA}
    assert {c.payload_type for c in copies} == {100}
    assert all(c.extensions.mid == "7" for c in copies)
    assert all(c.extensions.abs_send_time is not None for c in copies)
    assert [c.payload for c in copies] == publisher.keyframe + publisher.deltas[0]
    assert [c.marker for c in copies][-1] == 1
    sequences = [c.sequence_number for c in copies]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
    assert copies[-1].timestamp - copies[0].timestamp == 6000


def test_video_is_held_back_until_a_keyframe_and_one_is_asked_for() -> None:
    upstream, sent = video_upstream(), Sent()
    asked = []
    upstream.request_keyframe = lambda: asked.append(1)
    video_downstream(sent, upstream)
    publisher = Publisher(upstream)
    publisher.frame()
    publisher.frame()
    assert sent == []
    assert asked == [1]
    publisher.frame(keyframe=True)
    assert [c.payload for c in sent.read()] == publisher.keyframe


def test_the_stream_stays_one_stream_when_the_publisher_reconnects() -> None:
    first, sent = video_upstream(), Sent()
    downstream = video_downstream(sent, first)
    old = Publisher(first)
    old.frame(keyframe=True)
    old.frame()
    before = sent.read()
    second = video_upstream()
    downstream.bind(second)
    assert downstream not in first.downstreams
    assert downstream in second.downstreams
    new = Publisher(second, ssrc=0x9999, sequence=10)
    new.timestamp = 5
    new.now = old.now + 0.5
    new.frame()  # not a keyframe: held back
    new.frame(keyframe=True)
    after = sent.read()[len(before) :]
    assert [c.payload for c in after] == new.keyframe
    assert {c.ssrc for c in after} == {0xAAAA}
    assert (after[0].sequence_number - before[-1].sequence_number) & 0xFFFF == 1
    gap = (after[0].timestamp - before[-1].timestamp) & 0xFFFFFFFF
    assert 0 < gap < 90_000  # moved on by about the time in between, not the new origin


def test_a_nack_is_answered_as_rtx_with_the_original_sequence_number() -> None:
    upstream, sent = video_upstream(), Sent()
    downstream = video_downstream(sent, upstream)
    publisher = Publisher(upstream)
    publisher.frame(keyframe=True)
    publisher.frame()
    copies = sent.read()
    sent.clear()
    lost = copies[1]
    assert downstream.resend([lost.sequence_number], publisher.now) == 1
    (rtx,) = sent.read()
    assert (rtx.ssrc, rtx.payload_type) == (0xBBBB, 101)
    assert int.from_bytes(rtx.payload[:2], "big") == lost.sequence_number
    assert rtx.payload[2:] == lost.payload
    assert rtx.timestamp == lost.timestamp


def test_without_rtx_the_packet_is_resent_as_it_was() -> None:
    upstream, sent = video_upstream(), Sent()
    downstream = video_downstream(sent, upstream, rtx=False)
    publisher = Publisher(upstream)
    publisher.frame(keyframe=True)
    original = sent.read()[0]
    sent.clear()
    downstream.resend([original.sequence_number], publisher.now)
    (again,) = sent.read()
    assert (again.ssrc, again.sequence_number, again.payload) == (
        original.ssrc,
        original.sequence_number,
        original.payload,
    )


def test_resends_are_limited_per_sequence_number_and_per_second() -> None:
    upstream, sent = video_upstream(), Sent()
    downstream = video_downstream(sent, upstream)
    publisher = Publisher(upstream)
    for _ in range(100):
        publisher.frame(keyframe=True)
    first = sent.read()[0].sequence_number
    sent.clear()
    now = publisher.now
    # The same NACK again and again within 100 ms: one resend.
    assert sum(downstream.resend([first], now + i * 0.01) for i in range(10)) == 1
    # Spaced out: at most three times in all.
    assert sum(downstream.resend([first], now + 1 + i) for i in range(10)) == 2
    # A storm of NACKs for everything: no more than the per-second budget.
    everything = [(first + i) & 0xFFFF for i in range(HISTORY)]
    assert downstream.resend(everything, now + 20) <= 200


def test_a_nack_for_what_was_never_sent_or_is_gone_is_ignored() -> None:
    upstream, sent = video_upstream(), Sent()
    downstream = video_downstream(sent, upstream)
    publisher = Publisher(upstream)
    publisher.frame(keyframe=True)
    last = sent.read()[-1].sequence_number
    sent.clear()
    assert downstream.resend([(last + 1) & 0xFFFF, (last + 5000) & 0xFFFF], publisher.now) == 0
    assert sent == []


def test_the_publisher_is_asked_for_what_it_lost() -> None:
    upstream = video_upstream()
    publisher = Publisher(upstream, sequence=100)
    publisher.frame(keyframe=True)
    gaps = [publisher.send(b"\x10\x00", 130), publisher.send(b"\x10\x00", 131)]
    assert gaps == [True, False]
    missing = upstream.stats.due_nacks(publisher.now)
    assert missing == list(range(100 + len(publisher.keyframe), 130))
    assert upstream.stats.due_nacks(publisher.now) == []  # not again within 100 ms
    publisher.send(b"\x10\x00", 120)  # a retransmission arrived
    assert 120 not in upstream.stats.due_nacks(publisher.now + 0.2)


def audio_pair(sent: Sent) -> tuple[Upstream, Downstream]:
    upstream = audio_upstream()
    downstream = Downstream("audio", 48_000, ssrc=0xCCCC, rtx_ssrc=0xDDDD, wire=sent)
    downstream.terms("2", 109, None, {"urn:ietf:params:rtp-hdrext:ssrc-audio-level": 9})
    downstream.bind(upstream)
    return upstream, downstream


def test_a_held_voice_resumes_with_no_gap_in_sequence_numbers() -> None:
    sent = Sent()
    upstream, _ = audio_pair(sent)
    now = 10.0

    def say(sequence: int) -> None:
        data = packet(
            b"opus",
            sequence=sequence,
            timestamp=sequence * 960,
            audio_level=(True, 20),
            ids=AUDIO_EXTENSIONS,
            payload_type=111,
        )
        upstream.receive(parse(data), data, now + sequence * 0.02)

    for sequence in range(1, 6):
        say(sequence)
    upstream.forwarding = False  # the gate closed
    for sequence in range(6, 50):
        say(sequence)
    upstream.resume()
    for sequence in range(50, 53):
        say(sequence)
    copies = sent.read({"urn:ietf:params:rtp-hdrext:ssrc-audio-level": 9})
    assert len(copies) == 8
    sequences = [c.sequence_number for c in copies]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
    assert copies[5].timestamp - copies[4].timestamp == 45 * 960  # real time went by
    assert all(c.extensions.audio_level == (True, 20) for c in copies)
    assert {c.payload_type for c in copies} == {109}


def test_packets_that_overtook_the_keyframes_first_follow_it_at_once() -> None:
    upstream, sent = video_upstream(), Sent()
    video_downstream(sent, upstream)
    publisher = Publisher(upstream, sequence=200)
    keyframe = vp8_payloads(1)[0][0]
    publisher.send(b"\x10\x01delta", 199)  # the previous frame: before the keyframe
    publisher.send(b"\x00\x00second", 201)  # overtook the keyframe's first packet
    publisher.send(keyframe, 200)
    publisher.send(b"\x00\x00third", 202, marker=True)
    copies = sent.read()
    assert [c.payload for c in copies] == [keyframe, b"\x00\x00second", b"\x00\x00third"]
    sequences = [c.sequence_number for c in copies]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
