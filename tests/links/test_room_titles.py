"""A room's title in the resolve answer: stored sealed, opened by scheduling, gone with erasure.

The links service stores a client room's title as scheduling publishes it (sealed for the
client), asks scheduling to open it when a link of that room (or of a session held in it)
resolves, and keeps the plain title in memory only (``services/links/titles.py``).
"""

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.scheduling import UNSEAL_SUBJECT, SealedValues
from runtime.context import ServiceContext
from runtime.embedded import NatsServer
from runtime.personal_data import is_sealed, new_person_key, seal
from services.links.handlers import Links
from services.links.titles import RoomTitles
from services.scheduling.person_keys import answer
from tests.links.conftest import Clock, LinkedClinic, Platform, linked_clinic, links_service
from tests.links.test_lifecycle import allowed, moment
from tests.scheduling.conftest import register_clinic, scheduling_app
from tests.support import eventually, serving

TITLE = "Weekly check-in with Dr Lovelace"


def pool_of(app: FastAPI) -> "asyncpg.Pool[Any]":
    pool: asyncpg.Pool[Any] = app.state.runtime.context.pool
    return pool


def links_of(app: FastAPI) -> Links:
    links: Links = app.state.links
    return links


async def stored_title(app: FastAPI, room_id: str) -> str | None:
    """What links holds of the room's title."""
    title: str | None = await pool_of(app).fetchval(
        "SELECT title FROM rooms WHERE room_id = $1", UUID(room_id)
    )
    return title


async def titled_room(
    clinic: LinkedClinic, title: str = TITLE
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A practitioner, a client, the client's room titled ``title`` and its link (issued
    with the room, its title stored in the same transaction)."""
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room = await c.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": title},
    )
    link = await clinic.link("client_room", room_id=room["room_id"])
    return practitioner, client, room, link


async def test_a_client_rooms_title_is_kept_sealed_and_shown_opened_renamed_too(
    clinic: LinkedClinic, platform: Platform
) -> None:
    practitioner, _, room, link = await titled_room(clinic)
    kept = await stored_title(platform.links_app, room["room_id"])
    assert is_sealed(kept)  # links' database holds it sealed only

    assert (await allowed(clinic, link))["room_title"] == TITLE
    await clinic.clinic.ok("PATCH", f"/v1/rooms/{room['room_id']}", json={"title": "Fortnightly"})

    async def renamed() -> bool:
        return (await allowed(clinic, link))["room_title"] == "Fortnightly"

    await eventually(renamed, what="the new title on the room's link")
    assert is_sealed(await stored_title(platform.links_app, room["room_id"]))

    # A practitioner's room: its title is not the client's, and is stored as it came.
    own = await clinic.link("practitioner_room", practitioner_id=practitioner["practitioner_id"])
    assert (await allowed(clinic, own))["room_title"] == "Dr Ada Lovelace's room"


async def test_a_session_held_in_a_room_carries_the_rooms_title_and_a_session_link_none(
    clinic: LinkedClinic, platform: Platform, clock: Clock
) -> None:
    practitioner, client, room, _ = await titled_room(clinic)
    c = clinic.clinic
    held = await c.session(
        practitioner,
        [client],
        video_mode="client_room",
        room_id=room["room_id"],
        link_sharing=True,
    )
    own = await c.session(practitioner, [client], link_sharing=True)  # a link of its own
    guest = await clinic.link("guest", session_id=held["session_id"])
    session_link = await clinic.link("session", session_id=own["session_id"])
    clock.set(moment(held))
    decision = await allowed(clinic, guest)
    assert (decision["room_id"], decision["room_title"]) == (room["room_id"], TITLE)
    assert (await allowed(clinic, session_link))["room_title"] is None


async def test_an_erased_clients_room_has_no_title_anywhere(
    clinic: LinkedClinic, platform: Platform, clock: Clock
) -> None:
    practitioner, client, room, _ = await titled_room(clinic)
    c = clinic.clinic
    held = await c.session(
        practitioner,
        [client],
        video_mode="client_room",
        room_id=room["room_id"],
        link_sharing=True,
    )
    guest = await clinic.link("guest", session_id=held["session_id"])
    clock.set(moment(held))
    assert (await allowed(clinic, guest))["room_title"] == TITLE  # opened, and kept in memory
    titles = links_of(platform.links_app).titles
    assert titles.keeps(TITLE)

    await c.ok("POST", f"/v1/clients/{client['client_id']}/erasure")

    async def untitled() -> bool:
        return (await allowed(clinic, guest))["room_title"] is None

    await eventually(untitled, what="no title for an erased client's room")
    assert await stored_title(platform.links_app, room["room_id"]) is None
    assert not titles.keeps(TITLE), "the opened title is forgotten at once"


async def test_a_resolve_answers_without_the_title_while_scheduling_is_down(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> None:
    links_app = links_service(postgres_dsn, nats_server.url, clock)
    async with serving(links_app) as links_client:
        async with serving(scheduling_app(postgres_dsn, nats_server.url)) as scheduling:
            clinic = LinkedClinic(await register_clinic(scheduling), links_client)
            _, _, _, link = await titled_room(clinic)
        # Scheduling has stopped: nobody opens the title.
        titles = links_of(links_app).titles
        started = time.monotonic()
        decision = await allowed(clinic, link)
        assert decision["room_title"] is None
        assert time.monotonic() - started < 1.0
        asked = titles.requests
        assert (await allowed(clinic, link))["room_title"] is None
        assert titles.requests == asked, "not asked again at once: resolving stays fast"


# -- one process's opened titles ----------------------------------------------------------------


CLINIC = "c_titles"


@pytest.fixture
async def scheduling_stand_in(nc: NATS) -> AsyncIterator[dict[str, Any]]:
    """Answers ``UNSEAL_SUBJECT`` as scheduling would, from ``keys`` and ``erased``."""
    state: dict[str, Any] = {"keys": {}, "erased": set(), "asked": 0, "delay_s": 0.0}

    async def on_request(msg: Msg) -> None:
        state["asked"] += 1
        await asyncio.sleep(state["delay_s"])
        request = SealedValues.model_validate_json(msg.data)
        await msg.respond(
            answer(request, state["keys"], state["erased"]).model_dump_json().encode()
        )

    subscription = await nc.subscribe(UNSEAL_SUBJECT, queue="scheduling", cb=on_request)
    yield state
    await subscription.unsubscribe()


async def test_opened_titles_are_asked_once_kept_briefly_and_erased_ones_are_none(
    nc: NATS, scheduling_stand_in: dict[str, Any]
) -> None:
    ctx = cast(ServiceContext, SimpleNamespace(nats=nc, identity=None))
    client, erased = uuid4(), uuid4()
    keys = {client: new_person_key(), erased: new_person_key()}
    scheduling_stand_in["keys"] = {client: keys[client]}
    scheduling_stand_in["erased"] = {erased}
    titles = RoomTitles(wait_s=2.0, ttl_s=0.5)
    mine = seal(TITLE, keys[client], CLINIC, client)
    gone = seal("Erased", keys[erased], CLINIC, erased)

    assert await titles.open(ctx, CLINIC, "Dr Ada's room") == "Dr Ada's room"  # plain
    assert await titles.open(ctx, CLINIC, None) is None
    assert titles.requests == 0

    scheduling_stand_in["delay_s"] = 0.1
    together = await asyncio.gather(*(titles.open(ctx, CLINIC, mine) for _ in range(10)))
    assert together == [TITLE] * 10
    assert (titles.requests, scheduling_stand_in["asked"]) == (1, 1)  # one for all ten
    assert await titles.open(ctx, CLINIC, mine) == TITLE
    assert titles.requests == 1  # kept

    assert await titles.open(ctx, CLINIC, gone) is None  # scheduling says: erased
    assert await titles.open(ctx, "c_other", mine) is None  # not that clinic's to open

    await asyncio.sleep(0.6)  # past the TTL: nothing opened is kept any more
    assert await titles.open(ctx, CLINIC, "plain") == "plain"
    assert len(titles) == 0
    assert await titles.open(ctx, CLINIC, mine) == TITLE
    titles.forget([client])
    assert len(titles) == 0


async def test_a_client_room_link_resolves_for_a_clinic_whose_scheduling_is_slow(
    platform: Platform,
) -> None:
    """The wait for scheduling is bounded: a title not opened in time is left out."""
    clinic = await linked_clinic(platform)
    _, _, _, link = await titled_room(clinic)
    links = links_of(platform.links_app)
    links.titles.wait_s = 0.0001  # no answer can come this fast
    decision = await allowed(clinic, link)
    assert decision["room_title"] is None
