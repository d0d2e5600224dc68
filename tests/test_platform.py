"""`antechamber up`: the embedded platform starts, answers, stops cleanly and reuses its data."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from antechamber.catalog import definitions

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def start(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "antechamber", "up", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if process.poll() is not None:
            pytest.fail(f"antechamber up exited ({process.returncode}):\n{content[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"{text!r} not printed within {timeout}s:\n{log.read_text()[-3000:]}")


def run_once(data_dir: Path, log: Path) -> str:
    process = start(data_dir, log)
    try:
        output = wait_for(log, "Antechamber is ready", process)
        urls = re.findall(r"^(\w+)\s+(http://127\.0\.0\.1:\d+)", output, re.MULTILINE)
        assert [name for name, _ in urls] == ["scheduling", "links", "signaling", "media", "notify"]
        web = re.search(r"^web client\s+(http://127\.0\.0\.1:\d+)", output, re.MULTILINE)
        assert web is not None, "the web client's address is printed"
        for url in [url for _, url in urls] + [web.group(1)]:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text(errors="replace")
    assert "stopped" in output
    return output


def test_up_starts_everything_stops_on_ctrl_c_and_reuses_its_data(short_tmp: Path) -> None:
    data_dir = short_tmp / "up"
    first = run_once(data_dir, short_tmp / "up-1.log")
    assert "NATS (JetStream)   nats://127.0.0.1:" in first
    migrations = sum(len(d.migrations()) for d in definitions())
    assert first.count("migration applied") == migrations
    assert "demo clinic        c_" in first
    assert "practitioner room  /r/demo-" in first
    for kind in ("session", "guest", "host", "practitioner_room"):
        assert f"  {kind} link" in first, kind
    web = re.search(r"^web client\s+(http://127\.0\.0\.1:\d+)", first, re.MULTILINE)
    assert web is not None
    assert re.search(rf"guest link\s+{web.group(1)}/j/[\w-]{{43}}$", first, re.MULTILINE), (
        "links open the web client's pages"
    )
    assert f"demo console       {web.group(1)}/demo" in first

    second = run_once(data_dir, short_tmp / "up-2.log")
    assert "migration applied" not in second, "the second run should find its schemas in place"
    clinic = re.search(r"demo clinic +(c_\w+)", first)
    assert clinic is not None
    assert f"demo clinic        {clinic.group(1)}" in second, "the demo clinic is kept"
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert (data_dir / "nats" / "jetstream").is_dir()
