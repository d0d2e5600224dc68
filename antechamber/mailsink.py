"""A mail sink for ``antechamber up``: an SMTP server that keeps every message it is given,
and a read-only page to read them. Nothing is relayed anywhere.

Each message is kept as ``<dir>/<UTC time>-<n>.eml``: the raw bytes, with an
``X-Antechamber-Envelope-To`` header on top saying whom it was sent to, so the folder also
opens in any mail client. Mails hold join links, so the folder is 0700 and each file 0600.
Run it as::

    python -m antechamber.mailsink --dir DIR --smtp-port P --http-port H [--host 127.0.0.1]
"""

import argparse
import asyncio
import contextlib
import email.policy
import itertools
import mimetypes
import os
import re
import signal
import socket
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.http import problem_response

ENVELOPE_TO = "X-Antechamber-Envelope-To"
MAIL_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-\d{6,}\.eml")
"""``20250301T091500.123456Z-000001.eml``: sorting the names sorts the mails by arrival."""
MAX_LISTED = 10_000
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
SECURITY_HEADERS = {
    # A mail's HTML is shown in a sandboxed srcdoc frame, which inherits this policy: no
    # scripts, no remote images (which would tell a tracker that the mail was read).
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Mailbox:
    """The folder of kept mails: written by the SMTP side, read by the page."""

    def __init__(self, folder: Path) -> None:
        """Makes the folder (0700), and closes one an earlier release left open to others."""
        self.folder = folder
        self._numbers = itertools.count(1)
        folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        folder.chmod(PRIVATE_FOLDER)
        for name in self.names():
            (folder / name).chmod(PRIVATE_FILE)

    def keep(self, envelope_to: Sequence[str], raw: bytes) -> str:
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{next(self._numbers):06d}.eml"
        header = f"{ENVELOPE_TO}: {', '.join(envelope_to)}\r\n".encode()
        # Written aside, then renamed: the page never reads half a mail.
        partial = self.folder / f".{name}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with open(descriptor, "wb") as file:
            file.write(header + raw)
        os.replace(partial, self.folder / name)
        return name

    def names(self) -> list[str]:
        """Newest first."""
        found = (p.name for p in self.folder.iterdir() if MAIL_NAME.fullmatch(p.name))
        return sorted(found, reverse=True)

    def mails(self, limit: int | None = None) -> list["Mail"]:
        """Newest first; the newest ``limit`` only (each is read and parsed)."""
        names = self.names()[:limit]
        return [mail for mail in map(self.open, names) if mail is not None]

    def open(self, name: str) -> "Mail | None":
        if not MAIL_NAME.fullmatch(name):
            return None
        try:
            raw = (self.folder / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        return Mail(name, raw, message)


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    part: EmailMessage

    @property
    def content(self) -> bytes:
        payload = self.part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""


@dataclass(frozen=True)
class Mail:
    name: str
    raw: bytes
    message: EmailMessage

    @property
    def received_at(self) -> datetime:
        return datetime.strptime(self.name.partition("-")[0], "%Y%m%dT%H%M%S.%fZ").replace(
            tzinfo=UTC
        )

    def header(self, name: str) -> str:
        return str(self.message.get(name, ""))

    @property
    def envelope_to(self) -> list[str]:
        return [a.strip() for a in self.header(ENVELOPE_TO).split(",") if a.strip()]

    @property
    def text(self) -> str | None:
        return _text(self.message.get_body(preferencelist=("plain",)))

    @property
    def html(self) -> str | None:
        return _text(self.message.get_body(preferencelist=("html",)))

    @property
    def attachments(self) -> list[Attachment]:
        """Every part that is not the text or the HTML body (a calendar part included)."""
        bodies = [self.message.get_body(preferencelist=(kind,)) for kind in ("plain", "html")]
        leaves = [
            part
            for part in self.message.walk()
            if not part.is_multipart() and all(part is not body for body in bodies)
        ]
        return [
            Attachment(index, _filename(part, index), part.get_content_type(), part)
            for index, part in enumerate(leaves)
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "received_at": self.received_at.isoformat(),
            "from": self.header("From"),
            "to": self.envelope_to,
            "subject": self.header("Subject"),
            "attachments": [a.filename for a in self.attachments],
        }


def _text(part: Any) -> str | None:
    if part is None:
        return None
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError):  # an unknown or lying charset
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _filename(part: EmailMessage, index: int) -> str:
    given = part.get_filename()
    if given:
        # Only the last path segment, without control characters.
        return "".join(c for c in re.split(r"[/\\]", given)[-1] if c.isprintable()) or "file"
    extension = mimetypes.guess_extension(part.get_content_type()) or ".bin"
    return f"part-{index}{extension}"


class SmtpHandler:
    """aiosmtpd's hooks: keep every message, say ``250 OK``."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            await asyncio.to_thread(
                self.mailbox.keep, envelope.rcpt_tos, envelope.original_content or b""
            )
        except OSError as exc:
            return f"451 4.3.0 The sink could not keep the message: {exc.strerror}"
        return "250 OK"


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response, the error responses included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build_app(mailbox: Mailbox, smtp_address: str) -> ASGIApp:
    # Plain functions: Starlette runs them in its thread pool, off the SMTP server's loop.
    def index(request: Request) -> Response:
        return HTMLResponse(_index_page(mailbox.mails(), smtp_address))

    def api_mails(request: Request) -> Response:
        given = request.query_params.get("limit")
        limit = None
        if given is not None:
            limit = int(given) if given.isdigit() else 0
            if not 1 <= limit <= MAX_LISTED:
                raise HTTPException(
                    400, f"limit is how many of the newest mails to list: 1 to {MAX_LISTED}."
                )
        return JSONResponse([mail.summary() for mail in mailbox.mails(limit)])

    def show(request: Request) -> Response:
        return HTMLResponse(_mail_page(_mail(request)))

    def raw(request: Request) -> Response:
        mail = _mail(request)
        disposition = _disposition("inline", mail.name)
        return Response(mail.raw, media_type="message/rfc822", headers=disposition)

    def attachment(request: Request) -> Response:
        attachments = _mail(request).attachments
        index: int = request.path_params["index"]
        if index >= len(attachments):
            raise HTTPException(404, f"The mail has {len(attachments)} attachment(s).")
        found = attachments[index]
        headers = _disposition("attachment", found.filename)
        return Response(found.content, media_type=found.content_type, headers=headers)

    def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    def _mail(request: Request) -> Mail:
        name: str = request.path_params["name"]
        mail = mailbox.open(name)
        if mail is None:
            raise HTTPException(404, f"There is no mail named {name!r}.")
        return mail

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem_response(request, exc.status_code, exc.detail)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/mails", api_mails),
            Route("/readyz", readyz),
            Route("/mail/{name}", show),
            Route("/mail/{name}/raw", raw),
            Route("/mail/{name}/attachment/{index:int}", attachment),
        ],
        exception_handlers={HTTPException: problem},
    )
    return SecurityHeaders(app)


def _disposition(kind: str, filename: str) -> dict[str, str]:
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    encoded = quote(filename)
    return {"Content-Disposition": f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"}


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem;
       padding: 0 1rem; color: #1c2630; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #dde3e8;
         vertical-align: top; }
th { font-weight: 600; color: #52606d; }
a { color: #0b5cad; }
pre { white-space: pre-wrap; background: #f4f6f8; padding: 1rem; border-radius: 4px; }
iframe { width: 100%; height: 32rem; border: 1px solid #dde3e8; border-radius: 4px; }
.muted { color: #52606d; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _when(mail: Mail) -> str:
    return f"{mail.received_at:%Y-%m-%d %H:%M:%S} UTC"


def _index_page(mails: list[Mail], smtp_address: str) -> str:
    if not mails:
        listing = (
            f'<p class="muted">No mail yet. Mail sent to {escape(smtp_address)} shows here.</p>'
        )
    else:
        rows = "".join(
            f"<tr><td>{_when(m)}</td><td>{escape(', '.join(m.envelope_to))}</td>"
            f'<td><a href="/mail/{m.name}">{escape(m.header("Subject") or "(no subject)")}</a>'
            f"{' 📎' if m.attachments else ''}</td></tr>"
            for m in mails
        )
        listing = f"<table><tr><th>Received</th><th>To</th><th>Subject</th></tr>{rows}</table>"
    intro = (
        f'<p class="muted">SMTP on {escape(smtp_address)}; newest first. '
        "Reload to see new mail.</p>"
    )
    return _page("Mail sink", f"<h1>Mail sink</h1>{intro}{listing}")


def _mail_page(mail: Mail) -> str:
    shown = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", ENVELOPE_TO)
    headers = "".join(
        f"<tr><th>{escape(h)}</th><td>{escape(mail.header(h))}</td></tr>"
        for h in shown
        if mail.header(h)
    )
    parts = [
        f'<p><a href="/">All mail</a> · <a href="/mail/{mail.name}/raw">Raw message</a></p>',
        f"<h1>{escape(mail.header('Subject') or '(no subject)')}</h1>",
        f"<table>{headers}</table>",
    ]
    if mail.attachments:
        items = "".join(
            f'<li><a href="/mail/{mail.name}/attachment/{a.index}">{escape(a.filename)}</a>'
            f' <span class="muted">{escape(a.content_type)}, {len(a.content)} bytes</span></li>'
            for a in mail.attachments
        )
        parts.append(f"<h2>Attachments</h2><ul>{items}</ul>")
    if mail.html is not None:
        # An empty sandbox: the mail's HTML runs no script and gets an opaque origin.
        parts.append(
            f'<h2>HTML part</h2><iframe sandbox srcdoc="{escape(mail.html, quote=True)}" '
            'title="The HTML part of the mail"></iframe>'
        )
    if mail.text is not None:
        parts.append(f"<h2>Text part</h2><pre>{escape(mail.text)}</pre>")
    return _page(mail.header("Subject") or mail.name, "".join(parts))


class _WebServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The sink handles SIGTERM and SIGINT itself and stops both servers together.
        yield


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        raise SystemExit(f"mail sink: cannot listen for {what} on {host}:{port}: {exc}") from exc


async def serve(folder: Path, host: str, smtp_port: int, http_port: int) -> None:
    """Run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    handler = SmtpHandler(Mailbox(folder))
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def connect() -> SMTP:
        connection = SMTP(handler, hostname="mailsink.localhost", enable_SMTPUTF8=True, loop=loop)
        connections.add(connection)
        return connection

    smtp_socket = _listen(host, smtp_port, "SMTP")
    http_socket = _listen(host, http_port, "HTTP")
    smtp_address = "{}:{}".format(*smtp_socket.getsockname()[:2])
    page = "http://{}:{}/".format(*http_socket.getsockname()[:2])
    smtp = await loop.create_server(connect, sock=smtp_socket)
    config = uvicorn.Config(
        build_app(handler.mailbox, smtp_address), log_config=None, access_log=False, lifespan="off"
    )
    web = _WebServer(config)
    serving = asyncio.create_task(web.serve(sockets=[http_socket]))
    try:
        while not web.started:
            if serving.done():
                await serving
                raise SystemExit("mail sink: the web page did not start")
            await asyncio.sleep(0.02)
        print(f"mail sink: smtp {smtp_address}, mails at {page}", flush=True)  # noqa: T201
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        web.should_exit = True
        await serving
        smtp.close()
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        await smtp.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m antechamber.mailsink",
        description="Keep every mail sent to a local SMTP port, and show them on a web page.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="where the .eml files go")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the address both servers bind")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.dir, args.host, args.smtp_port, args.http_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
