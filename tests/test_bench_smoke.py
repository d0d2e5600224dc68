"""The benchmark script runs end to end (tiny sizes); the figures come from `make bench`."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_eventstore_benchmark_prints_its_figures_and_baselines() -> None:
    result = subprocess.run(
        [sys.executable, "bench/eventstore.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in (
        "raw asyncpg INSERT",
        "EventStore.append",
        "commit -> JetStream ack",
        "bare publish round trip",
        "effect committed in another",
    ):
        assert line in result.stdout


@pytest.mark.slow
def test_the_scheduling_benchmark_prints_its_rate_and_baseline() -> None:
    result = subprocess.run(
        [sys.executable, "bench/scheduling.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in (
        "HTTP schedule -> JetStream ack",
        "sessions/s",
        "raw event-store append",
        "appends/s",
        "ratio",
        "goal >= 500/s:",
        "HTTP latency   p50",
    ):
        assert line in result.stdout


@pytest.mark.slow
def test_the_links_benchmark_prints_its_rates_latencies_and_floors() -> None:
    result = subprocess.run(
        [sys.executable, "bench/links.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in (
        "links stored",
        "GET /healthz",
        "GET /v1/links/resolve",
        "NATS echo",
        "NATS rpc.links.resolve",
        "resolutions/s",
        "goal >= 0.7x:",
        "goal resolve p99 <= 5 ms:",
        "answers: 200 ",
    ):
        assert line in result.stdout
