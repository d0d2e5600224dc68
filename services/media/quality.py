"""Each participant's network quality as the node sees it, both ways, graded 1 to 5.

- **Receiving** (node to participant): from the receiver reports the participant sends about
  each stream the node forwards them (RFC 3550 6.4.2). Loss is what the report's cumulative
  count and extended highest sequence number moved by since the last measurement; a loss the
  publisher's own link caused (the node never had the packet to forward) is taken out, so a
  person is not blamed for someone else's network. Jitter is the report's interarrival
  jitter, the publisher's own taken out the same way.
- **Sending** (participant to node): the node's own count of their packets, before
  retransmissions repair them (what the network lost), and its interarrival jitter.
- **Round trip**: from the LSR and DLSR of their reports (the node's sender reports echoed,
  RFC 3550 6.4.1), the median of the measurement's samples.
- **Available bitrate**: the latest REMB they sent, told but not graded.

Jitter is an audio figure where the person has audio both ways (a video frame's packets share
one timestamp and leave in a burst, which reads as jitter that is not there).

:func:`grade` takes the worst of loss (either way), round trip and jitter (either way); see
``GRADE_LIMITS`` and ``docs/media.md``.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from aiortc.rtp import RtcpReceiverInfo

from contracts.media import DirectionQuality, ParticipantQuality
from services.media.forwarding import Upstream

if TYPE_CHECKING:
    from services.media.sfu import MediaRoom

STALE_S = 10.0
"""A report, a round trip or a bitrate older than this is no longer told."""
MAX_RTT_S = 10.0
"""A longer round trip is a clock jump or a stale LSR, not a measurement."""

GRADE_LIMITS: dict[str, tuple[float, float, float, float]] = {
    # The largest value that still earns 5, 4, 3 and 2 (strictly below for 5, 4, 3; at
    # most for 2); anything above the last is 1.
    #
    # Loss (fraction): ITU-T G.1010 puts conversational voice below 3% and video below 1%;
    # above 5% speech breaks up even with Opus's concealment; above 10% video stalls.
    "loss": (0.01, 0.03, 0.05, 0.10),
    # Round trip to the node (s): a call crosses two such legs, so two legs of 150 ms carry a
    # voice one way in about 150 ms, ITU-T G.114's limit for transparent interaction; 400 ms
    # one way is G.114's planning limit; beyond 600 ms a round trip people talk over each
    # other.
    "rtt": (0.150, 0.300, 0.400, 0.600),
    # Jitter (s): the common VoIP planning figure is below 30 ms; a browser's jitter buffer
    # hides up to about 50 ms at the price of delay, and 100 ms is audible.
    "jitter": (0.020, 0.030, 0.050, 0.100),
}


def grade_of(value: float, limits: tuple[float, float, float, float]) -> int:
    five, four, three, two = limits
    if value < five:
        return 5
    if value < four:
        return 4
    if value < three:
        return 3
    return 2 if value <= two else 1


@dataclass(frozen=True)
class Direction:
    """Loss (a fraction) and jitter (s) one way; None: not measured."""

    loss: float | None = None
    jitter_s: float | None = None


@dataclass(frozen=True)
class LinkQuality:
    """One participant's measurement."""

    sending: Direction
    receiving: Direction
    rtt_s: float | None
    available_bps: int | None
    grade: int | None
    """1 (unusable) to 5 (excellent); None until something was measured."""


def grade(sending: Direction, receiving: Direction, rtt_s: float | None) -> int | None:
    """The worst grade of what was measured (None if nothing was)."""
    grades = [
        grade_of(value, GRADE_LIMITS[name])
        for name, value in (
            ("loss", sending.loss),
            ("loss", receiving.loss),
            ("rtt", rtt_s),
            ("jitter", sending.jitter_s),
            ("jitter", receiving.jitter_s),
        )
        if value is not None
    ]
    return min(grades) if grades else None


@dataclass(slots=True)
class UpstreamWindow:
    """What one upstream lost since the last measurement."""

    raw: float | None
    """Before the node's NACKs repaired anything: the network's loss."""
    residual: float | None
    """After repair: what subscribers never got from the node."""


@dataclass
class _Heard:
    """What a participant last said about one stream the node sends them."""

    upstream: Upstream | None
    clock_rate: int
    kind: str
    lost: int
    highest: int
    fraction: float
    jitter: int
    at: float
    mark: tuple[int, int] | None = None
    """(lost, highest) when last measured."""


@dataclass
class _Counted:
    """An upstream's counters when last measured: (expected, received, repaired)."""

    expected: int
    received: int
    repaired: int


@dataclass
class LinkMeter:
    """What one participant's connection told the node since the last measurement."""

    heard: dict[int, _Heard] = field(default_factory=dict)
    """By the SSRC of the stream the node sends them."""
    counted: dict[int, _Counted] = field(default_factory=dict)
    """By the id of the upstream they publish."""
    rtts: list[float] = field(default_factory=list)
    rtt: tuple[float, float] | None = None
    """The last round trip told, and when it was measured."""
    remb: tuple[int, float] | None = None

    def receiver_report(
        self,
        block: RtcpReceiverInfo,
        kind: str,
        clock_rate: int,
        upstream: Upstream | None,
        ntp: int,
        now: float,
    ) -> None:
        """A report block about a stream the node sends them; ``ntp`` is the node's NTP
        clock as the report arrived."""
        previous = self.heard.get(block.ssrc)
        self.heard[block.ssrc] = _Heard(
            upstream,
            clock_rate,
            kind,
            block.packets_lost,
            block.highest_sequence,
            block.fraction_lost / 256,
            block.jitter,
            now,
            previous.mark if previous is not None else None,
        )
        if block.lsr:
            middle = (ntp >> 16) & 0xFFFFFFFF
            rtt = ((middle - block.lsr - block.dlsr) & 0xFFFFFFFF) / 65536
            if rtt < MAX_RTT_S:
                self.rtts.append(rtt)

    def bitrate_estimate(self, bps: int, now: float) -> None:
        """A REMB: what they can receive, in bits per second."""
        self.remb = (bps, now)

    def sending(self, upstreams: list[Upstream]) -> dict[int, UpstreamWindow]:
        """Each upstream's loss since the last call (by id), for :meth:`measure`."""
        windows = {}
        for upstream in upstreams:
            stats = upstream.stats
            now = _Counted(stats.expected, stats.received, upstream.repaired)
            before = self.counted.get(id(upstream)) or _Counted(0, 0, 0)
            self.counted[id(upstream)] = now
            expected = now.expected - before.expected
            received = now.received - before.received
            repaired = now.repaired - before.repaired
            if expected <= 0:
                windows[id(upstream)] = UpstreamWindow(None, None)
                continue
            windows[id(upstream)] = UpstreamWindow(
                raw=_fraction(expected - (received - repaired), expected),
                residual=_fraction(expected - received, expected),
            )
        self.counted = {k: v for k, v in self.counted.items() if k in windows}
        return windows

    def measure(
        self,
        upstreams: list[Upstream],
        mine: dict[int, UpstreamWindow],
        everyone: dict[int, UpstreamWindow],
        now: float,
    ) -> LinkQuality:
        """This measurement: ``mine`` are the windows of ``upstreams`` (what they publish),
        ``everyone`` those of every upstream in the room (for what the node never had)."""
        sending = Direction(
            loss=_worst(w.raw for w in mine.values()),
            jitter_s=_jitter([(u.kind, u.stats.jitter / u.clock_rate) for u in upstreams]),
        )
        losses = []
        jitters = []
        for ssrc, heard in list(self.heard.items()):
            if now - heard.at > STALE_S:
                del self.heard[ssrc]
                continue
            upstream_window = everyone.get(id(heard.upstream)) if heard.upstream else None
            theirs = upstream_window.residual if upstream_window else None
            loss = self._loss(heard)
            if loss is not None:
                losses.append(_without(loss, theirs or 0.0))
            upstream_jitter = (
                heard.upstream.stats.jitter / heard.upstream.clock_rate if heard.upstream else 0.0
            )
            reported = heard.jitter / heard.clock_rate
            jitters.append((heard.kind, max(0.0, reported**2 - upstream_jitter**2) ** 0.5))
        receiving = Direction(loss=_worst(losses), jitter_s=_jitter(jitters))
        if self.rtts:
            self.rtt = (statistics.median(self.rtts), now)
            self.rtts.clear()
        rtt = self.rtt[0] if self.rtt is not None and now - self.rtt[1] <= STALE_S else None
        remb = self.remb[0] if self.remb is not None and now - self.remb[1] <= STALE_S else None
        return LinkQuality(sending, receiving, rtt, remb, grade(sending, receiving, rtt))

    @staticmethod
    def _loss(heard: _Heard) -> float | None:
        """Loss since the last measurement: from the cumulative counts, or the report's own
        fraction for a stream's first report."""
        mark, heard.mark = heard.mark, (heard.lost, heard.highest)
        if mark is None:
            return heard.fraction
        expected = (heard.highest - mark[1]) & 0xFFFFFFFF
        if expected == 0 or expected >= 0x80000000:
            return None  # nothing new (a paused stream), or the subscriber started again
        return _fraction(heard.lost - mark[0], expected)


def _fraction(lost: int, expected: int) -> float:
    return min(1.0, max(0.0, lost / expected))


def _without(total: float, upstream: float) -> float:
    """The loss of the last leg, when ``total`` = both legs and ``upstream`` the first."""
    if upstream >= 1.0:
        return 0.0
    return max(0.0, 1 - (1 - total) / (1 - upstream))


def _worst(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _jitter(by_kind: list[tuple[str, float]]) -> float | None:
    audio = [j for kind, j in by_kind if kind == "audio"]
    return max(audio or [j for _, j in by_kind], default=None)


def measure_room(room: "MediaRoom", now: float) -> dict[UUID, LinkQuality]:
    """Everyone's link in ``room`` whose media connection is up, measured now."""
    members = [m for m in room.members.values() if m.connected.is_set() and not m.closed]
    published = {
        m.participant_id: [p.upstream for p in m.publications if p.upstream is not None]
        for m in members
    }
    windows = {m.participant_id: m.link.sending(published[m.participant_id]) for m in members}
    everyone = {k: w for mine in windows.values() for k, w in mine.items()}
    return {
        m.participant_id: m.link.measure(
            published[m.participant_id], windows[m.participant_id], everyone, now
        )
        for m in members
    }


def participant_quality(participant_id: UUID, link: LinkQuality) -> ParticipantQuality:
    """The contract's form of one measurement (percent, milliseconds, kbit/s)."""

    def direction(d: Direction) -> DirectionQuality:
        return DirectionQuality(
            loss_pct=None if d.loss is None else round(d.loss * 100, 1),
            jitter_ms=None if d.jitter_s is None else round(d.jitter_s * 1000, 1),
        )

    return ParticipantQuality(
        participant_id=participant_id,
        grade=link.grade,
        rtt_ms=None if link.rtt_s is None else round(link.rtt_s * 1000, 1),
        sending=direction(link.sending),
        receiving=direction(link.receiving),
        available_kbps=None if link.available_bps is None else link.available_bps // 1000,
    )
