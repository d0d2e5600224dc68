"""``antechamber up``: the whole platform on one machine, for trying it and for development."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from antechamber.catalog import definitions
from antechamber.demo import join_links, link_key_file, operator_key, participant_key_file, seed
from antechamber.nats_setup import platform_auth
from runtime.embedded import EmbeddedPostgres, NatsServer, free_port
from runtime.nats_auth import NatsAuth

NATS_DEFAULT_PORT = 4222
MAIL_SINK_SMTP_DEFAULT_PORT = 1025
MAIL_SINK_HTTP_DEFAULT_PORT = 8025
WEB_DEFAULT_PORT = 8100
READY_TIMEOUT_S = 90.0
LOOPBACK = "127.0.0.1"


@dataclass
class RunningService:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Platform:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.services: list[RunningService] = []
        self.mail_sink: RunningService | None = None
        self.web: RunningService | None = None
        self.nats: NatsServer | None = None
        self.auth: NatsAuth | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._start()
            return self._wait()
        except KeyboardInterrupt:
            return 0
        finally:
            self._stop()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(NATS_DEFAULT_PORT)
        if port != NATS_DEFAULT_PORT:
            print(f"port {NATS_DEFAULT_PORT} is taken; NATS listens on {port} instead")
        self.auth = auth = platform_auth(self.data_dir / "nats-auth")
        self.nats = NatsServer(self.data_dir / "nats", port, auth=auth).start()
        print(f"NATS (JetStream)   {self.nats.url}   data in {self.data_dir / 'nats'}")
        print(f"  credentials        {auth.creds_dir}   (admin.creds for the nats CLI)")
        dsn = os.environ.get("DATABASE_URL")
        if dsn:
            print("Postgres           DATABASE_URL from the environment")
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "pg").start()
            dsn = self.postgres.dsn
            print(f"Postgres           embedded, data in {self.data_dir / 'pg'}")
        key_file = Path(
            os.environ.get("ANTECHAMBER_OPERATOR_KEY_FILE") or operator_key(self.data_dir)
        )
        link_key = Path(os.environ.get("ANTECHAMBER_LINK_KEY_FILE") or link_key_file(self.data_dir))
        participant_key = Path(
            os.environ.get("ANTECHAMBER_PARTICIPANT_KEY_FILE")
            or participant_key_file(self.data_dir)
        )
        mail = self._start_mail_sink()
        web_port = free_port(WEB_DEFAULT_PORT)
        # Links are issued for the pages the web client serves.
        public_url = os.environ.get("ANTECHAMBER_PUBLIC_URL", f"http://127.0.0.1:{web_port}")
        for definition in definitions():
            port = free_port(definition.default_port)
            env = (
                _without_nats_identity(os.environ)
                | mail
                | {
                    "DATABASE_URL": dsn,
                    "NATS_URL": self.nats.url,
                    # Each service connects as its own user, found in the folder.
                    "ANTECHAMBER_NATS_CREDS_DIR": str(auth.creds_dir),
                    "ANTECHAMBER_OPERATOR_KEY_FILE": str(key_file),
                    "ANTECHAMBER_LINK_KEY_FILE": str(link_key),
                    "ANTECHAMBER_PARTICIPANT_KEY_FILE": str(participant_key),
                    "ANTECHAMBER_PUBLIC_URL": public_url,
                    "ANTECHAMBER_LOG_FORMAT": os.environ.get("ANTECHAMBER_LOG_FORMAT", "console"),
                }
            )
            if definition.name == "scheduling":
                # It issues integrators' credentials and revokes them.
                env = env | {"ANTECHAMBER_NATS_ISSUER_FILE": str(auth.issuer_file)}
            if definition.name == "media":
                # Where its download URLs point, and where its recordings go.
                env = {
                    "ANTECHAMBER_MEDIA_PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "ANTECHAMBER_MEDIA_RECORDINGS_DIR": str(self.data_dir / "recordings"),
                } | env
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "antechamber",
                    "serve",
                    definition.name,
                    "--port",
                    str(port),
                ],
                env=env,
                start_new_session=True,
            )
            self.services.append(RunningService(definition.name, port, process))
        self.web = self._start_web(web_port)
        for service in self.services:
            print(f"{service.name:<18} {service.url}   (/readyz, /metrics, /docs)")
        print(f"web client         {self.web.url}   (join pages /j/, /h/, /r/; demo console /demo)")
        if self.mail_sink is not None:
            mail_dir = self.data_dir / "mail"
            print(
                f"mail sink          {self.mail_sink.url}   (every mail sent, kept in {mail_dir})"
            )
        self._wait_until_ready()
        self._show_demo(key_file)
        print("Antechamber is ready. Press Ctrl-C to stop.", flush=True)

    def _start_mail_sink(self) -> dict[str, str]:
        """The services' mail settings: a local sink that keeps every mail and shows it on a
        page, unless the environment names a mail server."""
        if os.environ.get("ANTECHAMBER_NOTIFY_SMTP_HOST"):
            print("mail               ANTECHAMBER_NOTIFY_SMTP_* from the environment")
            return {}
        smtp_port = free_port(MAIL_SINK_SMTP_DEFAULT_PORT)
        http_port = free_port(MAIL_SINK_HTTP_DEFAULT_PORT)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "antechamber.mailsink",
                "--dir",
                str(self.data_dir / "mail"),
                "--smtp-port",
                str(smtp_port),
                "--http-port",
                str(http_port),
                "--host",
                LOOPBACK,  # its page shows every mail, join links included
            ],
            stdout=subprocess.DEVNULL,  # its "ready" line; the URL is printed with the others
            start_new_session=True,
        )
        self.mail_sink = RunningService("mail sink", http_port, process)
        return {
            "ANTECHAMBER_NOTIFY_SMTP_HOST": "127.0.0.1",
            "ANTECHAMBER_NOTIFY_SMTP_PORT": str(smtp_port),
            "ANTECHAMBER_NOTIFY_SMTP_SECURITY": "none",
        }

    def _start_web(self, port: int) -> RunningService:
        """The reference web client: the pages links open, and the demo console."""
        signaling = next(s for s in self.services if s.name == "signaling")
        scheduling = next(s for s in self.services if s.name == "scheduling")
        links = next(s for s in self.services if s.name == "links")
        env = {
            "ANTECHAMBER_WEB_SIGNALING_URL": f"ws://127.0.0.1:{signaling.port}/v1/signaling",
            "ANTECHAMBER_WEB_DEMO_FILE": str(self.data_dir / "demo.json"),
            "ANTECHAMBER_WEB_SCHEDULING_URL": scheduling.url,
            "ANTECHAMBER_WEB_LINKS_URL": links.url,
        }
        if self.mail_sink is not None:
            env["ANTECHAMBER_WEB_MAIL_URL"] = self.mail_sink.url
        # Loopback whatever ANTECHAMBER_HTTP_HOST says: the demo console holds the clinic's
        # key. A phone reaches the pages through a proxy on this machine (docs/web.md).
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "antechamber",
                "serve",
                "web",
                "--port",
                str(port),
                "--host",
                LOOPBACK,
            ],
            env=env
            | os.environ
            | {"ANTECHAMBER_LOG_FORMAT": os.environ.get("ANTECHAMBER_LOG_FORMAT", "console")},
            start_new_session=True,
        )
        return RunningService("web client", port, process)

    def _children(self) -> list[RunningService]:
        extra = [s for s in (self.web, self.mail_sink) if s is not None]
        return self.services + extra

    def _show_demo(self, key_file: Path) -> None:
        scheduling = next(s for s in self.services if s.name == "scheduling")
        demo = seed(scheduling.url, key_file.read_text().strip(), self.data_dir)
        print(f"operator key       in {key_file}")
        print(f"demo clinic        {demo['clinic_id']}  (API key in {self.data_dir / 'demo.json'})")
        print(f"  practitioner room  {demo['practitioner_room']}")
        print(f"  session            {scheduling.url}/v1/sessions/{demo['session_id']}")
        links = next(s for s in self.services if s.name == "links")
        for kind, url in sorted(join_links(links.url, demo).items()):
            print(f"  {kind + ' link':<18} {url}")
        print(f"  API docs           {scheduling.url}/docs  {links.url}/docs")
        if self.web is not None:
            print(f"  demo console       {self.web.url}/demo   (sessions, links to copy, mails)")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = self._children()
        while waiting:
            self._check_children()
            if time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise SystemExit(f"not ready after {READY_TIMEOUT_S:.0f}s: {names}")
            waiting = [s for s in waiting if not _ready(s.url)]
            time.sleep(0.2)

    def _check_children(self) -> None:
        for service in self._children():
            code = service.process.poll()
            if code is not None:
                raise SystemExit(f"the {service.name} service stopped (exit code {code})")

    def _wait(self) -> int:
        while True:
            self._check_children()
            time.sleep(0.5)

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping...", flush=True)
        for service in self._children():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in self._children():
            try:
                service.process.wait(15)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        print("stopped", flush=True)


def _without_nats_identity(environment: Mapping[str, str]) -> dict[str, str]:
    """The environment minus any NATS identity it holds: the services connect as the users
    of this platform's set, never as a tool's (``NATS_CREDS``) or another set's."""
    dropped = {"NATS_CREDS", "ANTECHAMBER_NATS_CREDS", "ANTECHAMBER_NATS_ISSUER_FILE"}
    return {k: v for k, v in environment.items() if k not in dropped}


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False
