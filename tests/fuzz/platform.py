"""Every service at once, each behind uvicorn on a loopback port, for the fuzzers and the
tenancy matrix.

The services run in a thread of their own, on that thread's event loop: schemathesis and the
matrix call them synchronously over real HTTP, as any client would, while the services' pools
and NATS connections stay on the loop they were made on.
"""

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from runtime.clock import system_clock
from runtime.service import build_app
from services.media import app as media_app
from services.media.config import MediaSettings
from services.media.node import Media
from services.notify import app as notify_app
from services.notify.config import NotifySettings
from services.notify.handlers import Notify
from services.signaling import app as signaling_app
from services.signaling.calls import Signaling
from tests.links.conftest import links_service
from tests.notify.smtp import SmtpSink
from tests.scheduling.conftest import SEALER, scheduling_app
from tests.signaling.conftest import PARTICIPANT_KEY, signaling_settings
from tests.support import listening, settings

T = TypeVar("T")
SERVICES = ("scheduling", "links", "signaling", "media", "notify")
WAIT_S = 30.0


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="services", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Platform:
    """The five services: their apps (for their OpenAPI documents) and where they listen."""

    apps: dict[str, FastAPI]
    urls: dict[str, str]
    loop: LoopThread
    media: Media
    """The media node, which knows where its recordings' files go."""

    def client(self, service: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[service], timeout=WAIT_S)


def build_apps(
    dsn: str, nats_url: str, smtp: SmtpSink, recordings: Path
) -> tuple[dict[str, FastAPI], Media]:
    media = Media(
        MediaSettings(node_id="mfuzz", recordings_dir=recordings),
        key_source=lambda: PARTICIPANT_KEY,
    )
    signaling = Signaling(signaling_settings("sfuzz"), key_source=lambda: PARTICIPANT_KEY)
    notify = Notify(
        settings=NotifySettings(
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            poll_s=0.1,
            link_wait_s=10.0,
        ),
        sealer_source=lambda: SEALER,
    )
    runtime = settings(dsn, nats_url)
    apps = {
        "scheduling": scheduling_app(dsn, nats_url),
        "links": links_service(dsn, nats_url, system_clock),
        "signaling": build_app(signaling_app.build(signaling), runtime),
        "media": build_app(media_app.build(media), runtime),
        "notify": build_app(notify_app.build(notify), runtime),
    }
    return apps, media


@contextlib.contextmanager
def running(dsn: str, nats_url: str) -> Iterator[Platform]:
    """The services started (ready), and stopped at the end; mail goes to a local sink."""
    loop = LoopThread()
    stack = contextlib.AsyncExitStack()
    recordings = Path(tempfile.mkdtemp(prefix="antechamber-fuzz-recordings-"))

    async def start() -> Platform:
        sink = await stack.enter_async_context(SmtpSink())
        apps, media = build_apps(dsn, nats_url, sink, recordings)
        urls = {name: await stack.enter_async_context(listening(apps[name])) for name in SERVICES}
        return Platform(apps, urls, loop, media)

    try:
        yield loop.run(start())
    finally:
        loop.run(stack.aclose())
        loop.stop()
        shutil.rmtree(recordings, ignore_errors=True)
