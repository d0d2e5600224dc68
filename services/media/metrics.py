"""The packet path's counters as Prometheus metrics.

The forwarding path counts in plain integers (a ``Counter.inc`` per packet would cost more
than the rest of a copy); this collector reads them when ``/metrics`` is scraped.
"""

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
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
