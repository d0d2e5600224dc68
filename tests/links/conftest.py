"""The links service next to the scheduling service, on the harness's NATS and Postgres.

Scheduling is driven through its API (as a clinic would); links reacts to its events. The
links service runs on a clock the test moves, so window edges are exact.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from runtime.embedded import NatsServer
from runtime.service import build_app
from services.links import app as links_app
from services.links.config import LinksSettings
from services.links.handlers import Links
from tests.scheduling.conftest import SEALER, ClinicHandle, register_clinic, scheduling_app
from tests.support import eventually, serving, settings

PUBLIC_URL = "https://video.example.test"


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def links_service(
    dsn: str, nats_url: str, clock: Clock, *, consuming: bool = True, **config: Any
) -> FastAPI:
    """The links service; one that is not ``consuming`` only answers (a replica that learns of
    scheduling's and signaling's events through Postgres alone)."""
    links = Links(
        settings=LinksSettings(public_url=PUBLIC_URL, audit_flush_s=0.2, **config),
        sealer_source=lambda: SEALER,
        clock=clock,
    )
    definition = links_app.build(links)
    if not consuming:
        definition = replace(definition, consumers=[])
    return build_app(definition, settings(dsn, nats_url))


@dataclass
class Platform:
    scheduling: httpx.AsyncClient
    links: httpx.AsyncClient
    links_app: FastAPI


@pytest.fixture
async def platform(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> AsyncIterator[Platform]:
    sched = scheduling_app(postgres_dsn, nats_server.url)
    links = links_service(postgres_dsn, nats_server.url, clock)
    async with serving(sched) as scheduling_client, serving(links) as links_client:
        yield Platform(scheduling_client, links_client, links)


@dataclass
class LinkedClinic:
    """A clinic, its API key on both services, and helpers to wait for its links."""

    clinic: ClinicHandle
    links: httpx.AsyncClient

    async def links_of(self, **filters: Any) -> list[dict[str, Any]]:
        """Every link matching ``filters``, page after page."""
        found: list[dict[str, Any]] = []
        cursor: dict[str, str] = {}
        while True:
            response = await self.links.get(
                "/v1/links", params=filters | cursor, headers=self.clinic.headers
            )
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            cursor = {"cursor": page["next_cursor"]}

    async def wait_links(self, count: int = 1, **filters: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.links_of(**filters)
            return len(found) >= count

        await eventually(enough, what=f"{count} link(s) for {filters}")
        return found

    async def link(self, kind: str, **filters: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}

        async def issued() -> bool:
            nonlocal found
            matching = [x for x in await self.links_of(**filters) if x["kind"] == kind]
            if matching:
                found = matching[-1]
            return bool(matching)

        await eventually(issued, what=f"a {kind} link for {filters}")
        return found

    async def client_room(
        self, practitioner: dict[str, Any], client: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A room of ``practitioner`` for ``client``, and its link once issued."""
        room: dict[str, Any] = await self.clinic.ok(
            "POST",
            f"/v1/clients/{client['client_id']}/rooms",
            201,
            json={"practitioner_id": practitioner["practitioner_id"], "title": "Weekly"},
        )
        return room, await self.link("client_room", room_id=room["room_id"])

    async def resolve(self, url: str, **params: Any) -> httpx.Response:
        path = url.removeprefix(PUBLIC_URL)
        if path.startswith("/r/"):
            _, _, clinic, room = path.split("/")
            query = {"clinic": clinic, "room": room}
        else:
            query = {"token": path.split("/")[-1]}
        return await self.links.get("/v1/links/resolve", params=query | params)


async def linked_clinic(platform: Platform, **clinic_settings: Any) -> LinkedClinic:
    clinic = await register_clinic(platform.scheduling, **clinic_settings)
    return LinkedClinic(clinic, platform.links)


@pytest.fixture
async def clinic(platform: Platform) -> LinkedClinic:
    return await linked_clinic(platform)


__all__ = ["replace"]
