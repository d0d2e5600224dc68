"""The whole platform as `antechamber up` starts it, and headless Chromium to use it: shared
by the browser tests (``tests/browser``) and the web client's benchmark (``bench/web.py``)."""

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("ANTECHAMBER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium keeps reaching for Google's hosts on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A camera and a microphone that exist, and nobody to click "allow".
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def speaking_args(folder: Path) -> list[str]:
    """Chromium's fake microphone playing a steady voice-like tone (its default is a short
    beep once a second, which a voice-activity detector mostly calls silence)."""
    path = folder / "voice.wav"
    if not path.exists():
        rate, seconds = 48_000, 4
        samples = (
            int(0.25 * 32767 * math.sin(2 * math.pi * 220 * n / rate) * (1 + math.sin(n / 900)) / 2)
            for n in range(rate * seconds)
        )
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(struct.pack(f"<{rate * seconds}h", *samples))
    return [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={path}"]


PLATFORM_ENV = {
    # Every browser here comes from 127.0.0.1: the per-address join limit is for strangers.
    "ANTECHAMBER_SIGNALING_KNOCKS_PER_ADDRESS_PER_MINUTE": "1000",
    "ANTECHAMBER_SIGNALING_KNOCKS_PER_ADDRESS_BURST": "200",
    "ANTECHAMBER_LOG_LEVEL": "warning",
    # Every fake microphone plays the same tone: one voice at a time goes out (hosts always),
    # so the pages show that the node forwards only the loudest speakers.
    "ANTECHAMBER_MEDIA_LOUDEST_SPEAKERS": "1",
}
READY_TIMEOUT_S = 180.0


class Missing(RuntimeError):
    """A part the browser runs need is not there; the message says how to get it."""


def chromium() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        raise Missing(
            f"Chromium is not installed at {CHROMIUM}: run `make browser` (it installs Debian's "
            "`chromium` package), or set ANTECHAMBER_CHROMIUM to a Chromium binary"
        )
    return found


@dataclass
class Up:
    """A running `antechamber up`: the addresses it printed and its demo clinic."""

    web: str
    scheduling: str
    links: str
    demo: dict[str, Any]
    log: Path
    data: Path
    """Its data folder: the embedded Postgres (``pg``) and NATS."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.demo['api_key']}"}


def _ready(log: Path, process: "subprocess.Popen[bytes]") -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Antechamber is ready" in text:
            return text
        if process.poll() is not None:
            raise RuntimeError(f"antechamber up exited ({process.returncode}):\n{text[-3000:]}")
        time.sleep(0.3)
    raise RuntimeError(f"antechamber up not ready in {READY_TIMEOUT_S:.0f}s:\n{text[-3000:]}")


@contextlib.contextmanager
def platform_up(log: Path) -> Iterator[Up]:
    """`antechamber up` with a data folder of its own (embedded NATS and Postgres), stopped
    with Ctrl-C at the end."""
    data = Path("/tmp") / f"ac-web-{os.getpid()}"  # short: Postgres keeps its socket in it
    shutil.rmtree(data, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | PLATFORM_ENV
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "antechamber", "up", "--data-dir", str(data)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        text = _ready(log, process)

        def url(name: str) -> str:
            found = re.search(rf"^{name}\s+(http://127\.0\.0\.1:\d+)", text, re.MULTILINE)
            if found is None:
                raise RuntimeError(f"{name} not printed:\n{text}")
            return found.group(1)

        up = Up(
            web=url("web client"),
            scheduling=url("scheduling"),
            links=url("links"),
            demo=json.loads((data / "demo.json").read_text()),
            log=log,
            data=data,
        )
        with urllib.request.urlopen(f"{up.web}/readyz", timeout=5) as response:
            if response.status != 200:
                raise RuntimeError("the web client is not ready")
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(data, ignore_errors=True)


async def new_session(web: str, **fields: Any) -> dict[str, Any]:
    """A demo clinic's session starting now, made through the demo console's API, once the
    links service has issued its session and guest links."""
    async with httpx.AsyncClient(base_url=web, timeout=10) as client:
        created = await client.post("/demo/api/sessions", json=fields)
        if created.status_code != 201:
            raise RuntimeError(f"no session: {created.status_code} {created.text}")
        session_id = created.json()["session_id"]
        for _ in range(150):
            overview = (await client.get("/demo/api/overview")).json()
            session: dict[str, Any] = next(
                s for s in overview["sessions"] if s["session_id"] == session_id
            )
            if {"session", "guest"} <= {link["kind"] for link in session["links"]}:
                return session
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the links of {session_id} were not issued")
