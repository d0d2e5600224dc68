"""A real SMTP server (aiosmtpd) in the test's own event loop, for notify to deliver to.

``async with SmtpSink() as sink:`` listens on 127.0.0.1 on a port the OS hands out and keeps
what it accepts in ``sink.messages``. It can also refuse a recipient, fail or stall DATA, or
answer slowly, so delivery failures are tested against a real server, not a mock.
"""

import asyncio
import email.policy
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Self

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    """One message the sink accepted (answered ``250`` to its DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    received_at: datetime
    raw: bytes


class SmtpSink:
    def __init__(self, port: int = 0) -> None:
        """``port=0``: one the OS hands out; pass the old ``port`` to restart a closed sink."""
        self.host = "127.0.0.1"
        self.port = port
        self.messages: list[Received] = []
        self.attempts = 0
        """DATA commands seen, whatever they were answered (or not answered)."""
        self.accepting_delay = 0.0
        """Seconds to wait before answering ``250`` to DATA."""
        self._refused: dict[str, str] = {}
        self._failures_left = 0
        self._failure = "451 try again later"
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._finishing: set[asyncio.Future[str]] = set()

    @property
    def hang(self) -> bool:
        """While true, DATA is never answered; set it back to false to answer the waiting ones."""
        return not self._unhung.is_set()

    @hang.setter
    def hang(self, value: bool) -> None:
        if value:
            self._unhung.clear()
        else:
            self._unhung.set()

    def refuse(self, address: str, code: int = 550, text: str = "no such user") -> None:
        """Answer ``RCPT TO:<address>`` with ``code text`` from now on."""
        self._refused[address.lower()] = f"{code} {text}"

    def fail_next(self, n: int, code: int = 451, text: str = "try again later") -> None:
        """Answer the next ``n`` DATA commands with ``code text``, and keep none of them."""
        self._failures_left = n
        self._failure = f"{code} {text}"

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """All messages so far, once at least ``count`` have arrived."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"expected {count} message(s) within {timeout}s, {len(self.messages)} arrived"
            ) from None
        return list(self.messages)

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        hooks = _Hooks(self)

        def connect() -> SMTP:
            connection = SMTP(hooks, hostname="sink.test", enable_SMTPUTF8=True, loop=loop)
            self._connections.add(connection)
            return connection

        self._server = await loop.create_server(connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and drop every connection, a hung DATA included."""
        if self._server is None:
            return
        self._server.close()
        handlers = []
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
            # Closing the transport cancels the connection's task; wait until it has ended.
            if connection._handler_coroutine is not None:
                handlers.append(connection._handler_coroutine)
        await asyncio.gather(*handlers, return_exceptions=True)
        self.hang = False  # what a hang held back finishes now
        await asyncio.gather(*self._finishing, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(self, envelope: Envelope) -> None:
        raw = envelope.original_content or b""
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            received_at=datetime.now(UTC),
            raw=raw,
        )
        async with self._arrived:
            self.messages.append(received)
            self._arrived.notify_all()


class _Hooks:
    """aiosmtpd's handler interface, answering as the sink is told to."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.sink._refused.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # As a real mail server does, finish what the final dot started even if the client
        # goes away meanwhile (aiosmtpd cancels the handler when the connection drops).
        task = asyncio.ensure_future(self._data(envelope))
        self.sink._finishing.add(task)
        task.add_done_callback(self.sink._finishing.discard)
        return await asyncio.shield(task)

    async def _data(self, envelope: Envelope) -> str:
        sink = self.sink
        sink.attempts += 1
        await sink._unhung.wait()
        if sink._failures_left > 0:
            sink._failures_left -= 1
            return sink._failure
        if sink.accepting_delay:
            await asyncio.sleep(sink.accepting_delay)
        await sink._accept(envelope)
        return "250 OK"
