"""Counting a received stream for receiver reports and NACKs."""

from services.media.receiving import NACK_TRIES, ReceiveStats


def test_a_gap_is_found_asked_for_a_few_times_then_given_up() -> None:
    stats = ReceiveStats(90_000)
    assert not stats.add(65534, 0, 0.0)
    assert not stats.add(65535, 3000, 0.03)
    assert stats.add(2, 6000, 0.06)  # 0 and 1 lost, across the wrap
    assert stats.due_nacks(0.06) == [0, 1]
    assert stats.due_nacks(0.1) == []
    stats.add(1, 3000, 0.12)  # one came back
    assert stats.due_nacks(0.2) == [0]
    for step in range(NACK_TRIES):
        stats.due_nacks(0.4 + step)
    assert stats.missing == {}


def test_the_report_block_counts_add_up() -> None:
    stats = ReceiveStats(48_000)
    for sequence in [*range(65530, 65536), *range(0, 10)]:
        if sequence not in (3, 4):
            stats.add(sequence, sequence * 960, sequence * 0.02)
    assert stats.extended_highest == (1 << 16) + 9
    assert stats.expected == 16
    assert stats.received == 14
    assert stats.lost == 2
    assert stats.fraction_lost() == (2 << 8) // 16
    assert stats.fraction_lost() == 0  # nothing since the last report
