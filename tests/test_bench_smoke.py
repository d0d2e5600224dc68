"""Each benchmark script runs end to end (tiny sizes); the figures come from `make bench`."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRINTED = {
    "eventstore": (
        "raw asyncpg INSERT",
        "EventStore.append",
        "commit -> JetStream ack",
        "bare publish round trip",
        "effect committed in another",
    ),
    "scheduling": (
        "HTTP schedule -> JetStream ack",
        "sessions/s",
        "raw event-store append",
        "appends/s",
        "ratio",
        "goal >= 500/s:",
        "HTTP latency   p50",
    ),
    "links": (
        "links stored",
        "GET /healthz",
        "GET /v1/links/resolve",
        "NATS echo",
        "NATS rpc.links.resolve",
        "resolutions/s",
        "goal >= 0.7x:",
        "goal resolve p99 <= 5 ms:",
        "answers: 200 ",
    ),
    "signaling": (
        "live rooms",
        "knock -> host sees it",
        "admit -> guest admitted",
        "bare NATS request/reply (baseline)",
        "goal knock p99 <= 20 ms:",
        "goal admit p99 <= 20 ms:",
        "all at once:",
        "paced,",
    ),
    "notify": (
        "invitations delivered:",
        "(duplicates 0, wrong URL 0, to strangers 0)",
        "SessionScheduled -> mail:",
        "invitations/s",
        "raw aiosmtplib send rate:",
        "messages/s",
        "ratio:",
        "planned (consumers):",
    ),
    "sfu": (
        "SFU process CPU:",
        "of which in the kernel:",
        "full room of 16 (240 pairs):",
        "decode errors:              0",
        "late joiner's first frame:",
        "forwarding encoded frames:",
        "baseline MediaRelay:",
        "x less CPU per subscriber",
        "per datagram sent:",
    ),
    "web": (
        "guest link -> first remote frame (direct admission, host in the call):",
        "of which after clicking Join: median",
        "baseline: a direct browser-to-browser call",
        "ratio:",
        "goal <= 1500 ms:",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("bench", sorted(PRINTED))
def test_the_benchmark_prints_its_figures_and_baselines(bench: str) -> None:
    result = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in PRINTED[bench]:
        assert line in result.stdout
