"""What the benchmark scripts share: servers, service processes, CPU accounting."""

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from antechamber.nats_setup import platform_auth
from runtime.caller import Identity
from runtime.embedded import EmbeddedPostgres, NatsServer, stop_process
from runtime.nats_auth import NatsAuth
from runtime.sealing import new_key

ROOT = Path(__file__).resolve().parent.parent


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU seconds of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    return sum(cpu_split(pid))


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    """CPU seconds per component between ``start`` and ``stop`` (Postgres: its backends)."""

    pids: dict[str, Callable[[], list[int]]]
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {p: cpu_seconds(p) for p in pids()} for name, pids in self.pids.items()}

    def start(self) -> None:
        self.before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        self.used = {
            name: sum(t - self.before[name].get(p, 0.0) for p, t in now.items())
            for name, now in after.items()
        }


@contextlib.contextmanager
def servers(auth: bool = True) -> Iterator[tuple[Path, NatsServer, EmbeddedPostgres]]:
    """nats-server and Postgres in a short temporary folder, stopped and removed on exit.

    NATS authenticates as the platform's does (``auth``; off only to measure what it costs):
    the services started after it connect as their own users, and the bench as admin."""
    folder = Path(tempfile.mkdtemp(prefix="ac-"))  # short: Postgres puts its socket in it
    # The environment's NATS identity is this set's while the servers run, and whatever it
    # was before (a test harness's) afterwards.
    saved = {name: os.environ.get(name) for name in IDENTITY}
    credentials = authenticate(folder) if auth else None
    if credentials is None:
        for name in IDENTITY:
            os.environ.pop(name, None)
    nats = NatsServer(folder / "nats", auth=credentials)
    postgres = EmbeddedPostgres(folder / "pg")
    try:
        nats.start()
        postgres.start()
        yield folder, nats, postgres
    finally:
        with contextlib.suppress(Exception):
            nats.stop()
        with contextlib.suppress(Exception):
            postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


IDENTITY = ("NATS_CREDS", "ANTECHAMBER_NATS_CREDS_DIR", "ANTECHAMBER_NATS_ISSUER_FILE")


def authenticate(folder: Path) -> NatsAuth:
    """A NATS authentication set in ``folder``, exported to this process's environment:
    services started from now on connect as their own users, the bench as admin."""
    for name in IDENTITY:
        os.environ.pop(name, None)
    credentials = platform_auth(folder / "nats-auth")
    os.environ.update(credentials.environment())
    return credentials


def signaling_identity() -> Identity:
    """Signaling's NATS user, for a bench that asks media for seats as signaling does."""
    return Identity.load(Path(os.environ["ANTECHAMBER_NATS_CREDS_DIR"]) / "signaling.creds")


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self.args = args
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.restart()

    def check(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the {self.name} process exited:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-3000:]
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no chance to clean up (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Start the same command again (after ``stop`` or ``kill``), logging to the same file."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"the {self.name} process is still running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
            )
        self.pid = self.process.pid


def start_service(
    service: str,
    folder: Path,
    dsn: str,
    nats_url: str,
    port: int,
    *,
    label: str | None = None,
    **env: str,
) -> Process:
    """``antechamber serve <service>`` in a process of its own, with a fresh link key.

    ``label`` names the process and its log file when one service runs more than once.
    """
    environment = os.environ | {
        "DATABASE_URL": dsn,
        "NATS_URL": nats_url,
        "ANTECHAMBER_LINK_KEY": new_key(),
        "ANTECHAMBER_LOG_LEVEL": "warning",
        **env,
    }
    args = [sys.executable, "-m", "antechamber", "serve", service, "--port", str(port)]
    label = label or service
    return Process(f"{label} service", args, folder / f"{label}.log", environment)


async def service_ready(service: Process, base_url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            service.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the {service.name} is not ready after {within}s:\n{service.log_tail()}")
