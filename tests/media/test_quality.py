"""Network quality without a server: grading, and reading receiver reports, REMB and the
node's own counts into one participant's link (``services/media/quality.py``)."""

import pytest
from aiortc.rtp import RtcpReceiverInfo

from services.media.forwarding import Upstream
from services.media.quality import (
    GRADE_LIMITS,
    Direction,
    LinkMeter,
    grade,
    grade_of,
)

NTP_SECOND = 1 << 32


def upstream(kind: str = "audio", clock_rate: int = 48000) -> Upstream:
    return Upstream(
        kind=kind,
        mime_type="audio/opus" if kind == "audio" else "video/vp8",
        clock_rate=clock_rate,
        payload_type=111 if kind == "audio" else 96,
        rtx_payload_type=None,
        level_id=None,
        keyframe_test=None,
        nack=False,
    )


def arrive(up: Upstream, sequences: range | list[int], start: float = 0.0) -> None:
    """Packets 20 ms apart on time (no jitter), as the node counts them."""
    for sequence in sequences:
        up.stats.add(sequence, sequence * 960, start + sequence * 0.02)


def block(
    ssrc: int = 1,
    *,
    lost: int = 0,
    highest: int = 0,
    fraction: int = 0,
    jitter: int = 0,
    lsr: int = 0,
    dlsr: int = 0,
) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=fraction,
        packets_lost=lost,
        highest_sequence=highest,
        jitter=jitter,
        lsr=lsr,
        dlsr=dlsr,
    )


@pytest.mark.parametrize(
    ("loss", "rtt", "jitter", "expected"),
    [
        (0.0, 0.040, 0.005, 5),
        (0.009, 0.149, 0.019, 5),
        (0.01, 0.040, 0.005, 4),  # 1% loss is no longer excellent (G.1010's video target)
        (0.0, 0.150, 0.005, 4),
        (0.0, 0.040, 0.030, 3),
        (0.04, 0.040, 0.005, 3),
        (0.10, 0.040, 0.005, 2),  # at most 10%: poor, not yet bad
        (0.0, 0.600, 0.005, 2),
        (0.11, 0.040, 0.005, 1),
        (0.0, 0.601, 0.005, 1),
        (0.0, 0.040, 0.2, 1),
    ],
)
def test_the_grade_is_the_worst_of_loss_round_trip_and_jitter(
    loss: float, rtt: float, jitter: float, expected: int
) -> None:
    assert grade(Direction(loss, jitter), Direction(0.0, 0.0), rtt) == expected
    # either direction counts
    assert grade(Direction(0.0, 0.0), Direction(loss, jitter), rtt) == expected


def test_nothing_measured_is_no_grade_and_what_is_unknown_does_not_count() -> None:
    assert grade(Direction(), Direction(), None) is None
    assert grade(Direction(loss=0.2), Direction(), None) == 1
    assert grade(Direction(), Direction(), 0.1) == 5


def test_the_limits_only_get_worse() -> None:
    for name, limits in GRADE_LIMITS.items():
        assert list(limits) == sorted(limits), name
        assert grade_of(limits[-1] * 1.01, limits) == 1


def test_loss_they_report_is_read_from_cumulative_counts_between_measurements() -> None:
    meter = LinkMeter()
    video = upstream("video", 90000)
    arrive(video, range(1000))
    mine = meter.sending([])
    everyone = LinkMeter().sending([video])
    # The first report of a stream: its own fraction (64/256 = 25%).
    meter.receiver_report(block(lost=10, highest=100, fraction=64), "video", 90000, video, 0, 1.0)
    first = meter.measure([], mine, everyone, 1.0)
    assert first.receiving.loss == pytest.approx(0.25)
    # Then what the cumulative count moved by: 30 more lost of 200 more expected.
    meter.receiver_report(block(lost=25, highest=200, fraction=0), "video", 90000, video, 0, 2.0)
    meter.receiver_report(block(lost=40, highest=300, fraction=0), "video", 90000, video, 0, 3.0)
    second = meter.measure([], mine, LinkMeter().sending([video]), 3.0)
    assert second.receiving.loss == pytest.approx(30 / 200)
    assert second.grade == 1
    # Nothing new (the stream paused): not measured, rather than 0%.
    meter.receiver_report(block(lost=40, highest=300), "video", 90000, video, 0, 4.0)
    assert meter.measure([], mine, {}, 4.0).receiving.loss is None


def test_loss_the_publisher_caused_is_not_the_subscribers() -> None:
    """The node forwards the publisher's gaps as they are: the subscriber's reports count
    them, but they are not the subscriber's network."""
    publisher = LinkMeter()
    video = upstream("video", 90000)
    publisher.sending([video])
    arrive(video, [s for s in range(1, 201) if s % 10])  # 10% never reached the node
    windows = publisher.sending([video])
    assert windows[id(video)].raw == pytest.approx(0.1, abs=0.01)
    subscriber = LinkMeter()
    subscriber.receiver_report(block(lost=0, highest=1000), "video", 90000, video, 0, 0.0)
    subscriber.measure([], {}, {}, 0.0)
    # They lost 10% of what they expected: all of it the publisher's.
    subscriber.receiver_report(block(lost=20, highest=1200), "video", 90000, video, 0, 1.0)
    assert subscriber.measure([], {}, windows, 1.0).receiving.loss == pytest.approx(0, abs=0.01)
    # 28% lost: 10% the publisher's, 20% of the rest theirs.
    subscriber.receiver_report(block(lost=76, highest=1400), "video", 90000, video, 0, 2.0)
    loss = subscriber.measure([], {}, windows, 2.0).receiving.loss
    assert loss == pytest.approx(0.2, abs=0.01)


def test_what_they_send_is_lost_before_the_node_repairs_it() -> None:
    meter = LinkMeter()
    audio = upstream()
    arrive(audio, range(0, 100))
    meter.sending([audio])  # the first window starts here
    arrive(audio, [s for s in range(100, 200) if s % 20])  # 5 of 100 lost
    audio.stats.add(120, 120 * 960, 3.0)  # one of them came again as RTX
    audio.repaired += 1
    windows = meter.sending([audio])
    assert windows[id(audio)].raw == pytest.approx(0.05)
    assert windows[id(audio)].residual == pytest.approx(0.04)
    measured = meter.measure([audio], windows, windows, 5.0)
    assert measured.sending.loss == pytest.approx(0.05)
    assert measured.sending.jitter_s == pytest.approx(0.0, abs=0.001)
    assert measured.grade == 2  # 5% is no longer fair: speech breaks up


def test_round_trip_from_lsr_and_dlsr() -> None:
    meter = LinkMeter()
    sent = 1000 * NTP_SECOND  # the node's SR went out at 1000 s (NTP)
    lsr = (sent >> 16) & 0xFFFFFFFF
    # They held it 0.5 s, and the report came back 0.62 s after the SR left: 120 ms.
    for arrival, held in ((0.62, 0.5), (0.58, 0.5), (0.7, 0.5)):
        now_ntp = sent + int(arrival * NTP_SECOND)
        report = block(lsr=lsr, dlsr=int(held * 65536), highest=10)
        meter.receiver_report(report, "audio", 48000, None, now_ntp, 1.0)
    measured = meter.measure([], {}, {}, 1.0)
    assert measured.rtt_s == pytest.approx(0.12, abs=0.001)  # the median
    assert measured.grade == 5
    # A report with no SR to echo (LSR 0) says nothing of the round trip.
    meter.receiver_report(block(highest=20), "audio", 48000, None, sent, 2.0)
    assert meter.measure([], {}, {}, 2.0).rtt_s == pytest.approx(0.12, abs=0.001)
    # Told until it is stale.
    assert meter.measure([], {}, {}, 12.0).rtt_s is None


def test_jitter_is_read_in_the_streams_clock_and_audio_is_preferred() -> None:
    meter = LinkMeter()
    meter.receiver_report(block(1, jitter=480, highest=5), "audio", 48000, None, 0, 0.0)
    meter.receiver_report(block(2, jitter=9000, highest=5), "video", 90000, None, 0, 0.0)
    assert meter.measure([], {}, {}, 0.0).receiving.jitter_s == pytest.approx(0.010)
    video_only = LinkMeter()
    video_only.receiver_report(block(2, jitter=2700, highest=5), "video", 90000, None, 0, 0.0)
    assert video_only.measure([], {}, {}, 0.0).receiving.jitter_s == pytest.approx(0.030)


def test_reports_and_bitrate_estimates_go_stale() -> None:
    meter = LinkMeter()
    meter.bitrate_estimate(750_000, 0.0)
    meter.receiver_report(block(fraction=128, highest=5), "audio", 48000, None, 0, 0.0)
    now = meter.measure([], {}, {}, 1.0)
    assert now.available_bps == 750_000
    assert now.receiving.loss == pytest.approx(0.5)
    later = meter.measure([], {}, {}, 11.0)
    assert later.available_bps is None
    assert later.receiving.loss is None
    assert later.grade is None
