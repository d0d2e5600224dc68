"""One SMTP connection to the relay, and a DATA command with a point of no return.

A mail server accepts a message when it reads the final ``.`` of DATA. Everything before that
can be dropped without anything reaching anyone (closing the connection discards the
transaction), so :meth:`Mailer.send` writes the whole message, then asks ``point_of_no_return``
(which records in Postgres that this message is now being accepted), and only then writes the
``.``. A process that dies before the record commits never sent the dot: its message is sent
again by whoever takes it over. One that dies after is recorded as unconfirmed and not sent
again (at most once). It has usually written the dot, but not always: the commit's answer has
to come back and the event loop reach this task first, a few milliseconds on a busy process.

aiosmtplib has no public way to split DATA, so :func:`_data` mirrors its
``execute_data_command`` on the protocol object (``aiosmtplib>=5,<6``, tested in
``tests/notify/test_smtp.py``).
"""

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.notify.config import NotifySettings

DATA_GO_AHEAD = 354
COMPLETED = 250


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, for the delivery log."""

    status: Literal["sent", "temporary", "permanent", "unconfirmed", "abandoned"]
    detail: str = ""
    code: int | None = None


def _classify(code: int, message: str, stage: str) -> Outcome:
    text = f"the mail server answered {code} to {stage}: {message.strip()[:200]}"
    return Outcome("permanent" if 500 <= code < 600 else "temporary", text, code)


class Mailer:
    """A connection kept open between messages, opened again when it drops."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self._smtp: aiosmtplib.SMTP | None = None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            timeout=s.smtp_timeout_s,
            tls_context=ssl.create_default_context() if s.smtp_security != "none" else None,
        )
        await smtp.connect()
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def send(
        self,
        sender: str,
        recipient: str,
        content: bytes,
        point_of_no_return: Callable[[], Awaitable[bool]],
    ) -> Outcome:
        try:
            smtp = await self._connected()
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            return Outcome("temporary", f"cannot reach the mail server: {_describe(exc)}")
        try:
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            stage = "the recipient" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "MAIL"
            return _classify(exc.code, exc.message, stage)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            return Outcome("temporary", f"the mail server went away: {_describe(exc)}")
        return await self._data(smtp, content, point_of_no_return)

    async def _reset(self) -> None:
        try:
            assert self._smtp is not None
            await self._smtp.rset()
        except (aiosmtplib.SMTPException, OSError, AssertionError):
            self.close()

    async def _data(
        self,
        smtp: aiosmtplib.SMTP,
        content: bytes,
        point_of_no_return: Callable[[], Awaitable[bool]],
    ) -> Outcome:
        protocol = smtp.protocol
        assert protocol is not None
        lock = protocol._command_lock
        assert lock is not None
        message = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content))
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        timeout = self.settings.smtp_timeout_s
        async with lock:
            try:
                protocol._response_pending = True
                protocol.write(b"DATA\r\n")
                start = await protocol.read_response(timeout=timeout)
                if start.code != DATA_GO_AHEAD:
                    self.close()  # (rset() would wait for the lock held here)
                    return _classify(start.code, start.message, "DATA")
                protocol.write(message)
            except (aiosmtplib.SMTPException, OSError) as exc:
                self.close()
                return Outcome("temporary", f"the mail server went away: {_describe(exc)}")
            if not await point_of_no_return():
                self.close()  # without the final dot the server discards the message
                return Outcome("abandoned", "another process took this message over")
            try:
                protocol._response_pending = True
                protocol.write(b".\r\n")
                response = await protocol.read_response(timeout=timeout)
            except (aiosmtplib.SMTPException, OSError) as exc:
                self.close()
                return Outcome(
                    "unconfirmed",
                    f"the mail server did not confirm the message ({_describe(exc)}); it may "
                    "have arrived, so it is not sent again",
                )
        if response.code != COMPLETED:
            return _classify(response.code, response.message, "the message")
        return Outcome("sent", response.message.strip()[:200], response.code)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
