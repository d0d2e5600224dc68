"""A token bucket per caller, for endpoints that need no credentials.

Per process: with N replicas a caller gets up to N times the rate, which still bounds abuse.
"""

import time
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    per_minute: float
    burst: int
    max_callers: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def blocked(self, caller: str) -> float | None:
        """Seconds until ``caller`` has a token again, without taking one; None if it has."""
        if caller not in self._buckets:
            return None
        tokens, seen = self._buckets[caller]
        rate = self.per_minute / 60.0
        tokens = min(float(self.burst), tokens + (time.monotonic() - seen) * rate)
        return None if tokens >= 1.0 else (1.0 - tokens) / rate

    def retry_after(self, caller: str) -> float | None:
        """Take one token for ``caller``; None if allowed, else seconds until one is free."""
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, seen = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - seen) * rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self._buckets) >= self.max_callers and caller not in self._buckets:
            self._buckets.clear()  # a flood of addresses: forget everyone rather than grow
        self._buckets[caller] = (tokens - 1.0, now)
        return None
