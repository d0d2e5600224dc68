"""The test SMTP server behaves like a mail server would, and so does ``antechamber.mailsink``."""

import asyncio
import re
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from antechamber.mailsink import Mailbox
from runtime.embedded import free_port
from tests.notify.smtp import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
INVITE_ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"


def invitation(to: str = "guest@example.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Clinic <noreply@clinic.test>"
    message["To"] = to
    message["Subject"] = "Your video session — Tuesday 10:00"
    message.set_content("Join at https://video.example.test/j/abc\n")
    message.add_alternative(
        '<p>Join <a href="https://video.example.test/j/abc">here</a> "now"</p>'
        "<script>alert(1)</script>",
        subtype="html",
    )
    message.add_attachment(INVITE_ICS, maintype="text", subtype="calendar", filename="invite.ics")
    return message


async def send(sink: SmtpSink, message: EmailMessage, **options: float) -> None:
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, **options)


async def test_a_message_is_kept_and_parsed() -> None:
    async with SmtpSink() as sink:
        await send(sink, invitation())
        [received] = await sink.wait_for(1)
    assert received.mail_from == "noreply@clinic.test"
    assert received.rcpt_tos == ["guest@example.test"]
    assert received.message["Subject"] == "Your video session — Tuesday 10:00"
    attachment = next(received.message.iter_attachments())
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content_type() == "text/calendar"
    assert received.received_at.tzinfo is not None
    assert sink.attempts == 1


async def test_wait_for_says_how_many_arrived() -> None:
    async with SmtpSink() as sink:
        await send(sink, invitation())
        with pytest.raises(TimeoutError, match=r"expected 2 message.*1 arrived"):
            await sink.wait_for(2, timeout=0.3)


async def test_a_refused_recipient_is_answered_with_its_code() -> None:
    async with SmtpSink() as sink:
        sink.refuse("nobody@example.test")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, invitation("nobody@example.test"))
        [error] = refused.value.recipients
        assert (error.code, error.message) == (550, "no such user")
        assert sink.messages == []


async def test_failed_data_is_temporary_and_not_kept() -> None:
    async with SmtpSink() as sink:
        sink.fail_next(2)
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await send(sink, invitation())
            assert (failed.value.code, failed.value.message) == (451, "try again later")
        assert sink.messages == []
        await send(sink, invitation())
        await sink.wait_for(1)
        assert sink.attempts == 3


async def test_a_hanging_server_times_the_client_out_and_still_closes() -> None:
    sink = await SmtpSink().start()
    sink.hang = True
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await send(sink, invitation(), timeout=1)
    # A client still waiting for its DATA answer when the sink closes.
    waiting = asyncio.create_task(send(sink, invitation(), timeout=30))
    while sink.attempts < 2:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(2):
        await sink.close()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await waiting
    # Both had their final dot: like a real server, the sink keeps them though the clients
    # went away before the answer.
    assert len(sink.messages) == 2


async def test_releasing_a_hang_answers_the_waiting_data() -> None:
    async with SmtpSink() as sink:
        sink.hang = True
        sending = asyncio.create_task(send(sink, invitation()))
        while sink.attempts < 1:
            await asyncio.sleep(0.01)
        assert not sending.done()
        sink.hang = False
        await sending
        await sink.wait_for(1)


async def test_accepting_delay_holds_the_answer() -> None:
    async with SmtpSink() as sink:
        sink.accepting_delay = 0.5
        started = time.monotonic()
        await send(sink, invitation())
        assert time.monotonic() - started >= 0.5
        await sink.wait_for(1)


async def test_a_closed_sink_restarts_on_its_port() -> None:
    async with SmtpSink() as first:
        port = first.port
    async with SmtpSink(port) as second:
        await send(second, invitation())
        await second.wait_for(1)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_mails_kept_by_an_earlier_release_are_closed_to_others(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    old = folder / "20250101T000000.000000Z-000001.eml"
    old.write_bytes(b"Subject: old\r\n\r\nhttps://video.example.test/j/abc\r\n")
    old.chmod(0o644)
    mailbox = Mailbox(folder)
    assert (mode(folder), mode(old)) == (0o700, 0o600)
    new = folder / mailbox.keep(["guest@example.test"], b"Subject: new\r\n\r\nhi\r\n")
    assert mode(new) == 0o600
    fresh = tmp_path / "fresh" / "mail"
    Mailbox(fresh)
    assert mode(fresh) == 0o700


@dataclass
class MailSink:
    smtp_port: int
    url: str
    folder: Path


@pytest.fixture
async def mailsink(tmp_path: Path) -> AsyncIterator[MailSink]:
    smtp_port, http_port = free_port(), free_port()
    folder = tmp_path / "mail"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "antechamber.mailsink",
        "--dir",
        str(folder),
        "--smtp-port",
        str(smtp_port),
        "--http-port",
        str(http_port),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        url = f"http://127.0.0.1:{http_port}"
        assert line.decode().strip() == f"mail sink: smtp 127.0.0.1:{smtp_port}, mails at {url}/"
        yield MailSink(smtp_port, url, folder)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_mail_sink_keeps_and_shows_every_mail(mailsink: MailSink) -> None:
    await aiosmtplib.send(invitation(), hostname="127.0.0.1", port=mailsink.smtp_port)
    [kept] = list(mailsink.folder.iterdir())
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-\d{6}\.eml", kept.name)
    assert (mode(mailsink.folder), mode(kept)) == (0o700, 0o600), "mails hold join links"
    assert kept.read_bytes().startswith(b"X-Antechamber-Envelope-To: guest@example.test\r\n")
    name = kept.name

    async with httpx.AsyncClient(base_url=mailsink.url) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert index.headers["content-security-policy"].startswith("default-src 'none'")
        assert index.headers["referrer-policy"] == "no-referrer"
        assert f'href="/mail/{name}"' in index.text
        assert "Your video session — Tuesday 10:00" in index.text

        listed = (await client.get("/api/mails")).json()
        assert listed == [
            {
                "name": name,
                "received_at": listed[0]["received_at"],
                "from": "Clinic <noreply@clinic.test>",
                "to": ["guest@example.test"],
                "subject": "Your video session — Tuesday 10:00",
                "attachments": ["invite.ics"],
            }
        ]

        shown = await client.get(f"/mail/{name}")
        assert shown.status_code == 200
        assert "default-src 'none'" in shown.headers["content-security-policy"]
        assert "Join at https://video.example.test/j/abc" in shown.text
        # The HTML part only inside the sandboxed frame, escaped into its srcdoc.
        assert "<iframe sandbox srcdoc=" in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
        assert "<script>" not in shown.text
        assert "&quot;now&quot;" in shown.text
        assert f'href="/mail/{name}/attachment/0">invite.ics</a>' in shown.text

        raw = await client.get(f"/mail/{name}/raw")
        assert raw.status_code == 200
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.content == kept.read_bytes()

        ics = await client.get(f"/mail/{name}/attachment/0")
        assert ics.status_code == 200
        assert ics.headers["content-type"].startswith("text/calendar")
        assert 'filename="invite.ics"' in ics.headers["content-disposition"]
        assert ics.content == INVITE_ICS

        for path in (
            "/mail/../../etc/passwd",
            "/mail/..%2F..%2Fetc%2Fpasswd",
            "/mail/%2e%2e%2f%2e%2e%2fetc%2fpasswd/raw",
            "/mail/..",
            "/mail/%2e%2e",
            "/mail/passwd.eml",
            "/mail/20250101T000000.000000Z-000001.eml",
            f"/mail/{name}/attachment/9",
            f"/mail/{name}/attachment/-1",
        ):
            # Sent as written: httpx would otherwise resolve the dot segments itself.
            missing = await client.get(path, extensions={"target": path.encode()})
            assert missing.status_code == 404, path
            assert missing.headers["content-type"] == "application/problem+json", path
            assert missing.json()["status"] == 404
            assert missing.json()["instance"].startswith("/mail/"), "sent as written"
            assert missing.headers["content-security-policy"].startswith("default-src 'none'")


async def test_the_mail_sink_lists_the_newest_first(mailsink: MailSink) -> None:
    for to in ("first@example.test", "second@example.test"):
        await aiosmtplib.send(invitation(to), hostname="127.0.0.1", port=mailsink.smtp_port)
    async with httpx.AsyncClient(base_url=mailsink.url) as client:
        listed = (await client.get("/api/mails")).json()
    assert [mail["to"] for mail in listed] == [["second@example.test"], ["first@example.test"]]


async def test_the_mail_sink_lists_only_the_newest_when_asked(mailsink: MailSink) -> None:
    """Each listed mail is parsed: a console that polls asks for a page, not a flood's worth."""
    for n in range(3):
        await aiosmtplib.send(
            invitation(f"m{n}@example.test"), hostname="127.0.0.1", port=mailsink.smtp_port
        )
    async with httpx.AsyncClient(base_url=mailsink.url) as client:
        listed = (await client.get("/api/mails", params={"limit": 2})).json()
        assert [mail["to"] for mail in listed] == [["m2@example.test"], ["m1@example.test"]]
        assert len((await client.get("/api/mails")).json()) == 3
        for bad in ("0", "-1", "many", "100001"):
            refused = await client.get("/api/mails", params={"limit": bad})
            assert refused.status_code == 400, bad
            assert refused.headers["content-type"] == "application/problem+json"
            assert "limit" in refused.json()["detail"]
