"""Each benchmark script runs end to end (tiny sizes) and records its figures; bench/report.py
puts them on a page, failures included. The real figures come from `make bench`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORD_KEYS = {
    "bench",
    "figure",
    "value",
    "unit",
    "baseline",
    "baseline_value",
    "baseline_unit",
    "ratio",
    "goal",
    "met",
}

PRINTED = {
    "eventstore": (
        "raw asyncpg INSERT",
        "EventStore.append",
        "commit -> JetStream ack",
        "bare publish round trip",
        "bare nats-py pull, ack only",
        "ConsumerLoop, one insert per event",
        "effect committed in another",
        "backlog 1 s after the load",
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
        "host's message -> guest sees it",
        "goal message p99 <= 100 ms:",
        "all at once:",
        "paced,",
        "NATS authentication's cost",
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
        "per datagram sent:",
        "The per-copy loop in one process (bench/copies.py)",
        "us CPU in C (rewrite, protect, sendto);",
        "forwarding RTP packets: 2 publishers x 3 subscribers",
        "packets sent:",
        "per sent packet:",
        "video at every subscriber:",
        "machine during it:",
        "Baseline, MediaRelay",
        "per packet received:",
        "x less CPU per packet forwarding RTP",
        "full room of 16 (16 x 15 video + 3 x 15 audio streams):",
        " us/packet x ",
        "calls per core:",
        "late joiner's first frame, VP8,",
        "late joiner's first frame, H.264,",
        "decode errors:",
        "lowest video frame rate:",
        "the screen costs:",
        "full room of 16 cameras + 1 screen, computed:",
    ),
    "web": (
        "guest link -> first remote frame (direct admission, host in the call):",
        "of which after clicking Join: median",
        "baseline: a direct browser-to-browser call",
        "ratio:",
        "goal <= 1500 ms:",
        "page reload -> remote video playing again (a guest in the call, same place, no knock):",
        "next to the first join's",
        "goal <= 3000 ms:",
    ),
}


# The start of each headline figure's name in the records; the checks have no baseline.
RECORDED = {
    "eventstore": (
        "EventStore.append rate",
        "relay lag p50",
        "relay lag p99",
        "consumer drain rate, prefilled stream",
        "consumer drain rate (absolute)",
        "appended in one service -> effect committed in another, p50",
        "appended in one service -> effect committed in another, p99",
        "backlog 1 s after the load stops",
    ),
    "scheduling": ("HTTP schedule -> JetStream ack",),
    "links": (
        "GET /v1/links/resolve throughput",
        "NATS rpc.links.resolve throughput",
        "GET /v1/links/resolve p99",
        "NATS rpc.links.resolve p99",
    ),
    "signaling": (
        *(
            f"{path} p{p}, {mode}"
            for mode in ("all at once", "paced")
            for path in (
                "knock -> host sees it",
                "admit -> guest admitted",
                "host's message -> guest sees it",
            )
            for p in (50, 99)
        ),
        "knock -> host sees it p50, NATS auth on",
        "knock -> host sees it p99, NATS auth on",
    ),
    "notify": ("SessionScheduled -> mail", "invitations delivered"),
    "sfu": (
        "us CPU per copy in one process, the C loop",  # next to the same copies from Python
        "us CPU per copy in one process, the C loop",  # next to a bare sendto
        "us CPU per sent packet at fan-out",
        "us CPU per packet received at fan-out",
        "full room of 16",
        "two-person calls per core",
        "late joiner's first frame, VP8",
        "late joiner's first frame, H.264",
        "decode errors",
        "lowest video frame rate",
        "screen share's added node CPU",
        "full room of 16 cameras + 1 screen",
    ),
    "web": ("guest link -> first remote frame", "page reload -> remote video playing again"),
}
CHECKS = (
    "decode errors",
    "late joiner's first frame",
    "lowest video frame rate",
    "invitations delivered",
    "backlog 1 s after the load stops",
)


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("bench", sorted(PRINTED))
def test_the_benchmark_prints_and_records_its_figures_and_baselines(
    bench: str, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    result = run([f"bench/{bench}.py", "--quick", "--results", str(results)])
    assert result.returncode == 0, result.stderr[-3000:]
    for line in PRINTED[bench]:
        assert line in result.stdout

    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == len(RECORDED[bench])
    for record, name in zip(records, RECORDED[bench], strict=True):
        assert set(record) == RECORD_KEYS
        assert record["bench"] == bench
        assert record["figure"].startswith(name)
        assert isinstance(record["value"], int | float)
        if record["figure"].startswith(CHECKS):
            assert record["baseline"] is None
            assert record["met"] is not None
        else:
            assert record["baseline"]
            assert isinstance(record["baseline_value"], int | float)
        if record["goal"] is not None:
            assert isinstance(record["met"], bool)


@pytest.mark.slow
def test_the_report_puts_a_script_s_figures_next_to_its_baselines_and_the_machine(
    tmp_path: Path,
) -> None:
    out = tmp_path / "benchmarks.md"
    result = run(["bench/report.py", "--quick", "--only", "eventstore", "--out", str(out)])
    assert result.returncode == 0, result.stdout[-3000:]
    page = out.read_text()
    assert f"| CPUs | {os.cpu_count()}" in page
    assert "| CPU model | " in page
    assert "| date | " in page
    assert "| commit | " in page
    assert " bench/eventstore.py --quick`: " in page
    assert "| [eventstore](#eventstore) | " in page
    row = next(line for line in page.splitlines() if line.startswith("| EventStore.append rate |"))
    assert "| raw asyncpg INSERT rate: " in row
    assert "| ratio >= 0.7 |" in row


BROKEN = """import sys
print("warming up")
print("the server did not start", file=sys.stderr)
sys.exit(3)
"""
SILENT = 'print("all done")\n'


def test_a_failing_script_shows_as_failed_on_the_page_and_in_the_exit_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "silent.py").write_text(SILENT)
    out = tmp_path / "benchmarks.md"
    scripts = f"{tmp_path / 'broken.py'},{tmp_path / 'silent.py'}"
    result = run(["bench/report.py", "--quick", "--only", scripts, "--out", str(out)], 60)
    assert result.returncode == 1
    page = out.read_text()
    assert "| [broken](#broken) | " in page
    assert "**failed: exit 3**" in page
    assert "the server did not start" in page  # the last lines it printed
    assert "**failed: exit 0 but it wrote no figures**" in page
