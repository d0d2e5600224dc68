"""Prometheus metrics. Each service is its own process, so the default registry is per service."""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

events_appended = Counter(
    "antechamber_events_appended_total", "Events committed to the store.", ["service"]
)
append_conflicts = Counter(
    "antechamber_append_conflicts_total", "Appends refused by optimistic concurrency.", ["service"]
)
relay_published = Counter(
    "antechamber_relay_published_total", "Events acknowledged by JetStream.", ["service"]
)
relay_leader = Gauge(
    "antechamber_relay_leader",
    "1 while this process leads its service's relay (one leader per service), else 0.",
    ["service"],
)
relay_failures = Counter(
    "antechamber_relay_failures_total",
    "Relay publish rounds that failed and backed off.",
    ["service"],
)
relay_lag = Histogram(
    "antechamber_relay_lag_seconds",
    "From the event's occurred_at to its JetStream ack.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
consumer_outcomes = Counter(
    "antechamber_consumer_messages_total",
    "Messages handled by consumers, by outcome (handled, duplicate, retried, deadlettered).",
    ["service", "consumer", "outcome"],
)
deadletters = Counter(
    "antechamber_deadletters_total", "Messages dead-lettered.", ["service", "consumer", "kind"]
)
http_requests = Histogram(
    "antechamber_http_request_seconds",
    "HTTP requests by route and status.",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
cache_lookups = Counter(
    "antechamber_cache_lookups_total",
    "Read-cache lookups by cache and outcome (hit, miss).",
    ["service", "cache", "outcome"],
)
