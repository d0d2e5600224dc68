"""The packet path's counters as Prometheus metrics.

The forwarding path counts in plain integers (a ``Counter.inc`` per packet would cost more
than the rest of a copy); this collector reads them when ``/metrics`` is scraped. Network
quality is observed once per participant per measurement (``quality.py``), labelled by node,
never by participant.
"""

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.media.quality import LinkQuality
    from services.media.sfu import Sfu

COUNTERS = {
    "received": "RTP packets received from publishers.",
    "sent": "RTP packets sent to subscribers (copies and retransmissions).",
    "resent": "RTP packets resent to subscribers after a NACK.",
    "malformed": "RTP packets that could not be read or routed, dropped.",
    "nacked": "Sequence numbers publishers were asked to send again (NACK).",
    "repaired": "Retransmissions (RTX) publishers sent back.",
    "unprotect_failures": "SRTP packets that failed authentication or replay checks, dropped.",
}


class PacketPath(Collector):
    """Sums the counters of every SFU in this process (tests run several)."""

    def __init__(self) -> None:
        self.sfus: weakref.WeakSet[Sfu] = weakref.WeakSet()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals: dict[str, int] = {}
        for sfu in list(self.sfus):
            for name, value in sfu.counters().items():
                totals[name] = totals.get(name, 0) + value
        for name, text in COUNTERS.items():
            yield CounterMetricFamily(f"antechamber_media_rtp_{name}", text, totals.get(name, 0))
        yield GaugeMetricFamily(
            "antechamber_media_forwards",
            "Upstream-to-subscriber forwarding entries now open.",
            totals.get("forwards", 0),
        )


packet_path = PacketPath()
REGISTRY.register(packet_path)


quality_rtt = Histogram(
    "antechamber_media_quality_rtt_seconds",
    "Round trips between participants and the node, one per participant per measurement.",
    ["node"],
    buckets=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0),
)
quality_loss = Histogram(
    "antechamber_media_quality_loss_ratio",
    "Packet loss (0-1, before repair) per participant per measurement; direction: sending "
    "(participant to node) or receiving (node to participant).",
    ["node", "direction"],
    buckets=(0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0),
)
quality_jitter = Histogram(
    "antechamber_media_quality_jitter_seconds",
    "Interarrival jitter per participant per measurement, by direction.",
    ["node", "direction"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5),
)
quality_grades = Gauge(
    "antechamber_media_quality_participants",
    "Participants connected to the node by their latest quality grade (1-5; unmeasured: "
    "nothing measured yet).",
    ["node", "grade"],
)
GRADE_LABELS = ("1", "2", "3", "4", "5", "unmeasured")


def observe_quality(node: str, links: "list[LinkQuality]") -> None:
    """One measurement of every participant connected to ``node``."""
    grades = dict.fromkeys(GRADE_LABELS, 0)
    for link in links:
        grades[str(link.grade) if link.grade is not None else "unmeasured"] += 1
        if link.rtt_s is not None:
            quality_rtt.labels(node).observe(link.rtt_s)
        for direction, measured in (("sending", link.sending), ("receiving", link.receiving)):
            if measured.loss is not None:
                quality_loss.labels(node, direction).observe(measured.loss)
            if measured.jitter_s is not None:
                quality_jitter.labels(node, direction).observe(measured.jitter_s)
    for grade, count in grades.items():
        quality_grades.labels(node, grade).set(count)


network_tests = Counter(
    "antechamber_media_network_tests_total",
    "Pre-call network test offers, by outcome: started, or the refusal's reason (node_busy, "
    "rate_limited, token_invalid, sdp_invalid, ...).",
    ["node", "outcome"],
)
