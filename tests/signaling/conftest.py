"""Two signaling replicas behind real WebSockets, with scheduling, links and a media node.

Everything runs on the harness's NATS and Postgres. Scheduling is driven through its API,
links issues the links, the media node answers for seats, and browsers are played by real
WebSocket clients connected to either replica.
"""

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from runtime.embedded import NatsServer
from runtime.service import build_app
from services.media import app as media_app
from services.media.config import MediaSettings
from services.signaling import app as signaling_app
from services.signaling.calls import Signaling
from services.signaling.config import SignalingSettings
from tests.links.conftest import PUBLIC_URL, Clock, LinkedClinic, Platform, links_service
from tests.scheduling.conftest import register_clinic, scheduling_app
from tests.support import listening, serving, settings

PARTICIPANT_KEY = "test-participant-key-of-at-least-32-characters"
FRAME_WAIT_S = 10.0


class Browser:
    """One browser's WebSocket: frames are read in the background and awaited by type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.close_code: int | None = None

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                async with self._arrived:
                    self.frames.append(frame)
                    self._unread.append(frame)
                    self._arrived.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type, **fields}, default=str))

    async def next(
        self, type: str, *, timeout: float = FRAME_WAIT_S, **match: Any
    ) -> dict[str, Any]:
        """The first unread frame of ``type`` (whose fields equal ``match``); earlier ones of
        other types stay unread."""

        def found() -> dict[str, Any] | None:
            for frame in self._unread:
                if frame["type"] == type and all(frame.get(k) == v for k, v in match.items()):
                    self._unread.remove(frame)
                    return frame
            return None

        async with asyncio.timeout(timeout), self._arrived:
            while (frame := found()) is None:
                if self._reader.done():
                    raise AssertionError(
                        f"closed ({self.close_code}) before a {type} frame {match}; "
                        f"got {[f['type'] for f in self.frames]}"
                    )
                await self._arrived.wait()
            return frame

    async def latest(self, type: str, *, timeout: float = FRAME_WAIT_S, **match: Any) -> Any:
        """Wait until the newest frame of ``type`` satisfies ``match`` (callables allowed)."""

        def ok(frame: dict[str, Any]) -> bool:
            return all(v(frame[k]) if callable(v) else frame.get(k) == v for k, v in match.items())

        async with asyncio.timeout(timeout), self._arrived:
            while True:
                last = [f for f in self.frames if f["type"] == type]
                if last and ok(last[-1]):
                    return last[-1]
                if self._reader.done():
                    raise AssertionError(f"closed ({self.close_code}) before {type} {match}")
                await self._arrived.wait()

    def seen(self, type: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == type]

    async def closed(self, timeout: float = FRAME_WAIT_S) -> int | None:
        async with asyncio.timeout(timeout):
            await self._reader
        return self.close_code

    async def drop(self) -> None:
        """The connection breaks (no leave): the TCP connection just goes."""
        self.ws.transport.abort()
        with contextlib.suppress(Exception):
            await self._reader

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()


@dataclass
class Calls:
    platform: Platform
    replicas: list[str]
    signalings: list[Signaling]
    clock: Clock
    media: httpx.AsyncClient
    """The media service's HTTP API (recordings)."""
    browsers: list[Browser] = field(default_factory=list)

    async def clinic(self, **clinic_settings: Any) -> LinkedClinic:
        clinic = await register_clinic(self.platform.scheduling, **clinic_settings)
        return LinkedClinic(clinic, self.platform.links)

    async def open(self, replica: int = 0) -> Browser:
        url = self.replicas[replica].replace("http://", "ws://") + "/v1/signaling"
        browser = Browser(await connect(url, max_size=None))
        self.browsers.append(browser)
        return browser

    async def join(self, url: str, name: str, replica: int = 0, **extra: Any) -> Browser:
        """Open a link (as a browser would, from its URL) on one replica."""
        browser = await self.open(replica)
        path = url.removeprefix(PUBLIC_URL)
        if path.startswith("/r/"):
            _, _, clinic, room = path.split("/")
            fields: dict[str, Any] = {"clinic": clinic, "room": room}
        else:
            fields = {"token": path.rsplit("/", 1)[1]}
        await browser.send("join", name=name, **fields, **extra)
        return browser


@dataclass
class Room:
    """A practitioner of a fresh clinic: their host link and their room link."""

    clinic: LinkedClinic
    practitioner: dict[str, Any]
    host_url: str
    room_url: str


async def practitioner_room(calls: Calls, **clinic_settings: Any) -> Room:
    clinic = await calls.clinic(**clinic_settings)
    practitioner = await clinic.clinic.practitioner()
    pid = practitioner["practitioner_id"]
    host = await clinic.link("host", practitioner_id=pid)
    room = await clinic.link("practitioner_room", practitioner_id=pid)
    return Room(clinic, practitioner, host["url"], room["url"])


@dataclass
class InCall:
    """A host in the call and a guest they admitted (each on the replica asked for)."""

    room: Room
    host: Browser
    guest: Browser
    welcome: dict[str, Any]
    """The guest's welcome (participant_id, room_id, resume_token)."""

    @property
    def guest_id(self) -> str:
        return str(self.welcome["participant_id"])


async def host_in_call(calls: Calls, room: Room, replica: int = 0, name: str = "Dr Ada") -> Browser:
    """A host who has entered the call: the ``admitted`` frame comes after the seat is taken,
    the welcome before it, so only from then on do knocks alert this host."""
    host = await calls.join(room.host_url, name, replica=replica)
    await host.next("welcome")
    await host.next("admitted")
    return host


async def knocking_guest(
    calls: Calls, room: Room, name: str = "Grace", replica: int = 1
) -> tuple[Browser, dict[str, Any]]:
    """A guest in the waiting room, with their welcome."""
    guest = await calls.join(room.room_url, name, replica=replica)
    welcome = await guest.next("welcome")
    await guest.next("waiting")
    return guest, welcome


async def host_and_admitted_guest(
    calls: Calls,
    *,
    host_replica: int = 0,
    guest_replica: int = 1,
    **clinic_settings: Any,
) -> InCall:
    """A fresh clinic's room with its host and one admitted guest, both seen in the call."""
    room = await practitioner_room(calls, **clinic_settings)
    host = await host_in_call(calls, room, host_replica)
    guest, welcome = await knocking_guest(calls, room, replica=guest_replica)
    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    await host.latest("room", participants=lambda p: len(p) == 2)
    return InCall(room, host, guest, welcome)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query, on a connection of its own (to read what the services wrote)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def room_events(dsn: str, room_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event of a room, in order, as the signaling store holds them."""
    rows = await query(
        dsn,
        "SELECT type, data FROM signaling.events WHERE stream_id = $1 ORDER BY version",
        f"room-{room_id}",
    )
    return [(row["type"], json.loads(row["data"])) for row in rows]


def signaling_settings(replica: str, **overrides: Any) -> SignalingSettings:
    base: dict[str, Any] = {
        "replica_id": replica,
        "sweep_s": 0.2,
        "replica_timeout_s": 2.0,
        "knocks_per_address_per_minute": 6000,
        "knocks_per_address_burst": 200,
    }
    return SignalingSettings(**(base | overrides))


@contextlib.asynccontextmanager
async def signaling_calls(
    dsn: str,
    nats_url: str,
    clock: Clock,
    media_client: httpx.AsyncClient,
    names: tuple[str, str] = ("sa", "sb"),
    **signaling_overrides: Any,
) -> AsyncIterator[Calls]:
    """Scheduling, links and two signaling replicas (named ``names``) in front of whatever
    media ``media_client`` reaches; the browsers the test opened are closed at the end."""
    sched = scheduling_app(dsn, nats_url)
    links = links_service(dsn, nats_url, clock)
    signalings = [
        Signaling(
            signaling_settings(name, **signaling_overrides),
            key_source=lambda: PARTICIPANT_KEY,
            clock=clock,
        )
        for name in names
    ]
    replicas = [build_app(signaling_app.build(s), settings(dsn, nats_url)) for s in signalings]
    async with (
        serving(sched) as scheduling_client,
        serving(links) as links_client,
        listening(replicas[0]) as url_a,
        listening(replicas[1]) as url_b,
    ):
        calls = Calls(
            Platform(scheduling_client, links_client, links),
            [url_a, url_b],
            signalings,
            clock,
            media_client,
        )
        try:
            yield calls
        finally:
            for browser in calls.browsers:
                await browser.aclose()


@contextlib.asynccontextmanager
async def calls_platform(
    dsn: str,
    nats_url: str,
    clock: Clock,
    media_overrides: dict[str, Any] | None = None,
    **signaling_overrides: Any,
) -> AsyncIterator[Calls]:
    recordings = Path(tempfile.mkdtemp(prefix="antechamber-recordings-"))
    media_settings: dict[str, Any] = {
        "node_id": "mtest",
        "reservation_s": 60,
        "recordings_dir": recordings,
    }
    media_settings |= media_overrides or {}
    media = build_app(
        media_app.build(
            media_app.Media(
                MediaSettings(**media_settings),
                key_source=lambda: PARTICIPANT_KEY,
            )
        ),
        settings(dsn, nats_url),
    )
    try:
        async with (
            serving(media) as media_client,
            signaling_calls(dsn, nats_url, clock, media_client, **signaling_overrides) as calls,
        ):
            yield calls
    finally:
        shutil.rmtree(recordings, ignore_errors=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def calls(postgres_dsn: str, nats_server: NatsServer, clock: Clock) -> AsyncIterator[Calls]:
    async with calls_platform(postgres_dsn, nats_server.url, clock) as platform:
        yield platform
