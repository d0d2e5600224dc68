"""A continuous pull from a durable JetStream consumer (what the NATS clients call "consume").

Pull requests for up to ``window`` messages stay open on the server and are topped up as
messages arrive, so a message that reaches the stream is on its way to us at once: there is
no request round trip per message or per batch, and no wait for a batch to fill.

Each request expires after ``EXPIRES_S`` and asks the server for idle heartbeats. The server
answers an expired or cancelled request with a status saying how many messages it still owed,
which frees that much of the window. When neither a message nor a heartbeat came for two
heartbeat intervals (a reconnect, a server restart, a consumer deleted), the open requests are
presumed lost: ``on_silence`` runs (the caller re-creates the consumer) and they are made again.
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

log = structlog.get_logger(__name__)

HEARTBEAT_S = 5.0
EXPIRES_S = 30.0
PENDING_HEADER = "Nats-Pending-Messages"


class Pull:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        window: int,
        on_silence: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.durable = durable
        self.window = window
        self.on_silence = on_silence
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._requested = 0
        self._received: deque[Msg] = deque()
        self._wake = asyncio.Event()
        self._heard_at = time.monotonic()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self._inbox, cb=self._arrived)
        await self._top_up()

    async def stop(self) -> None:
        """Stop receiving; messages received and not taken are redelivered after ack_wait."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(NatsError, OSError):
                await subscription.unsubscribe()
        self._wake.set()

    async def take(self, limit: int) -> list[Msg]:
        """Wait until messages arrived, then take up to ``limit`` of them, in order."""
        while not self._received and self._subscription is not None:
            await self._top_up()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_S):
                    await self._wake.wait()
            if not self._received and time.monotonic() - self._heard_at > 2 * HEARTBEAT_S:
                log.info("pull requests went unanswered; making them again", durable=self.durable)
                self._heard_at = time.monotonic()
                self._requested = 0
                if self.on_silence is not None:
                    await self.on_silence()
        taken = [self._received.popleft() for _ in range(min(limit, len(self._received)))]
        await self._top_up()
        return taken

    async def _top_up(self) -> None:
        """Ask for more once half the window has arrived (fewer, larger requests)."""
        if self._subscription is None or self._requested > self.window // 2:
            return
        wanted = self.window - self._requested
        request = {
            "batch": wanted,
            "expires": int(EXPIRES_S * 1e9),
            "idle_heartbeat": int(HEARTBEAT_S * 1e9),
        }
        try:
            await self.nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        except (NatsError, OSError) as exc:
            log.warning("cannot ask for messages", durable=self.durable, error=str(exc))
            return
        self._requested += wanted

    async def _arrived(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._requested = max(0, self._requested - 1)
            self._received.append(msg)
        elif status != "100":  # 100: an idle heartbeat; the request is alive
            # 408 (expired), 409 (cancelled: leadership change, consumer deleted, ...):
            # the request is over, and the header says how many it did not deliver.
            owed = int((msg.headers or {}).get(PENDING_HEADER, 0) or 0)
            self._requested = max(0, self._requested - owed)
            if status == "409":
                log.info(
                    "pull request cancelled",
                    durable=self.durable,
                    reason=(msg.headers or {}).get("Description", ""),
                )
        self._wake.set()
