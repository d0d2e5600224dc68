"""The network test's verdict at and around each published threshold."""

from dataclasses import replace

import pytest

from services.signaling.network_verdict import (
    AUDIO_ONLY,
    BLOCKED,
    CLOSER,
    SLOW,
    Figures,
    Verdict,
    judge,
)

CLEAN = Figures(
    connected=True,
    rtt_ms=40.0,
    uplink_loss=0.0,
    downlink_loss=0.0,
    uplink_jitter_ms=5.0,
    downlink_jitter_ms=5.0,
    uplink_kbps=1500.0,
)


def test_a_clean_line_is_good_with_no_advice() -> None:
    judged = judge(CLEAN)
    assert judged.verdict is Verdict.good
    assert judged.advice == []
    assert judged.reasons == []


@pytest.mark.parametrize(
    ("change", "verdict", "reason"),
    [
        ({"uplink_loss": 0.0199}, Verdict.good, None),
        ({"uplink_loss": 0.02}, Verdict.may_be_choppy, "loss"),
        ({"downlink_loss": 0.0999}, Verdict.may_be_choppy, "loss"),
        ({"downlink_loss": 0.10}, Verdict.video_will_not_work, "loss"),
        ({"rtt_ms": 299.0}, Verdict.good, None),
        ({"rtt_ms": 300.0}, Verdict.may_be_choppy, "rtt"),
        ({"rtt_ms": 800.0}, Verdict.video_will_not_work, "rtt"),
        ({"downlink_jitter_ms": 29.9}, Verdict.good, None),
        ({"uplink_jitter_ms": 30.0}, Verdict.may_be_choppy, "jitter"),
        ({"uplink_kbps": 1000.0}, Verdict.good, None),
        ({"uplink_kbps": 999.0}, Verdict.may_be_choppy, "bitrate"),
        ({"uplink_kbps": 249.0}, Verdict.video_will_not_work, "bitrate"),
    ],
)
def test_each_threshold(change: dict[str, float], verdict: Verdict, reason: str | None) -> None:
    judged = judge(replace(CLEAN, **change))  # type: ignore[arg-type]
    assert judged.verdict is verdict
    assert judged.reasons == ([reason] if reason else [])


def test_the_worst_figure_decides_and_every_shortfall_has_its_advice() -> None:
    judged = judge(replace(CLEAN, uplink_loss=0.03, rtt_ms=900.0))
    assert judged.verdict is Verdict.video_will_not_work
    assert judged.reasons == ["loss", "rtt"]
    assert {CLOSER, SLOW, AUDIO_ONLY} <= set(judged.advice)
    assert len(judged.advice) == len(set(judged.advice))


def test_figures_not_measured_are_not_judged() -> None:
    unknown = Figures(True, None, None, None, None, None, None)
    assert judge(unknown).verdict is Verdict.good


def test_no_media_at_all_means_the_network_blocks_it() -> None:
    judged = judge(replace(CLEAN, connected=False))
    assert judged.verdict is Verdict.video_will_not_work
    assert judged.reasons == ["no_media"]
    assert judged.advice == [BLOCKED]
