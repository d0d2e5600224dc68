"""What the node keeps about each stream it receives: enough for receiver reports and NACKs.

No jitter buffer and no reordering: packets are forwarded as they come. This only counts
(RFC 3550 appendix A.1 and A.8) and remembers which sequence numbers are missing.
"""

import math
from dataclasses import dataclass, field

MISSING_TRACKED = 128
"""Sequence numbers behind the newest one still worth asking for again."""
NACK_RETRY_S = 0.1
NACK_TRIES = 3


def newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b``."""
    return a != b and (a - b) & 0xFFFF < 0x8000


@dataclass(slots=True)
class ReceiveStats:
    """One incoming SSRC's counters for a receiver report block."""

    clock_rate: int
    base: int | None = None
    highest: int = 0
    cycles: int = 0
    received: int = 0
    jitter_q4: int = 0
    _transit: int | None = None
    _expected_prior: int = 0
    _received_prior: int = 0
    missing: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Sequence number -> (when last asked for, times asked)."""

    def add(self, sequence: int, timestamp: int, now: float) -> bool:
        """Count one packet; True if it revealed a gap (new sequence numbers to ask for)."""
        self.received += 1
        if self.base is None:
            self.base = self.highest = sequence
            self._transit = int(now * self.clock_rate) - timestamp
            return False
        gap = False
        if newer(sequence, self.highest):
            if sequence < self.highest:
                self.cycles += 1 << 16
            step = (sequence - self.highest) & 0xFFFF
            if 1 < step <= MISSING_TRACKED:
                for lost in range(self.highest + 1, self.highest + step):
                    self.missing[lost & 0xFFFF] = (-math.inf, 0)
                gap = True
            self.highest = sequence
            transit = int(now * self.clock_rate) - timestamp
            if self._transit is not None:
                d = abs(transit - self._transit)
                if d < self.clock_rate:  # a timestamp jump (DTX, a restart) is not jitter
                    self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
            self._transit = transit
            if len(self.missing) > MISSING_TRACKED:
                self._forget_old()
        else:
            self.missing.pop(sequence, None)
        return gap

    def due_nacks(self, now: float) -> list[int]:
        """Missing sequence numbers to ask for now (each at most ``NACK_TRIES`` times)."""
        due = []
        for sequence, (asked, tries) in list(self.missing.items()):
            if tries >= NACK_TRIES:
                del self.missing[sequence]
            elif now - asked >= NACK_RETRY_S:
                self.missing[sequence] = (now, tries + 1)
                due.append(sequence)
        return due

    def _forget_old(self) -> None:
        for sequence in list(self.missing):
            if (self.highest - sequence) & 0xFFFF > MISSING_TRACKED:
                del self.missing[sequence]

    @property
    def extended_highest(self) -> int:
        return self.cycles + self.highest

    @property
    def expected(self) -> int:
        return 0 if self.base is None else self.extended_highest - self.base + 1

    @property
    def lost(self) -> int:
        return max(-0x800000, min(self.expected - self.received, 0x7FFFFF))

    def fraction_lost(self) -> int:
        """Lost since the last call, in 1/256ths (the report block's 8 bits)."""
        expected = self.expected - self._expected_prior
        received = self.received - self._received_prior
        self._expected_prior, self._received_prior = self.expected, self.received
        lost = expected - received
        return 0 if expected <= 0 or lost <= 0 else min(255, (lost << 8) // expected)

    @property
    def jitter(self) -> int:
        return self.jitter_q4 >> 4
