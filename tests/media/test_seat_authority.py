"""One media node answering ``rpc.media.seat`` and ``rpc.media.release`` on the real NATS:
the cap under concurrent joins, reservations, releases, refusals as events, bad requests."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    SeatAnswer,
    SeatRefusal,
    SeatRelease,
    SeatReleased,
    node_subject,
)
from contracts.signaling import CallRole
from runtime.embedded import NatsServer
from runtime.rpc import call
from services.media.node import Action
from services.media.placement import ROOMS_BUCKET
from tests.media.conftest import Node, clinic, events_of, running, seat_request
from tests.support import eventually


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer) -> AsyncIterator[Node]:
    async with running(postgres_dsn, nats_server.url, reservation_s=1.0) as started:
        yield started


async def test_twenty_people_joining_at_once_get_sixteen_seats(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    answers = await asyncio.gather(
        *(
            call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=16), SeatAnswer, 5)
            for _ in range(20)
        )
    )
    granted = [a for a in answers if a.granted]
    refused = [a for a in answers if not a.granted]
    assert len(granted) == 16
    assert len(refused) == 4
    assert {a.node_id for a in answers} == {node.node_id}
    assert all(a.media_url == node.media.settings.public_url for a in granted)
    assert sorted(a.taken for a in granted) == list(range(1, 17))
    for answer in refused:
        assert answer.reason is SeatRefusal.room_full
        assert answer.taken == 16
        assert answer.message == "This room is full: it holds at most 16 people."

    events = await events_of(nc, clinic_id, 5)  # placed once, refused four times
    types = sorted(e["type"] for e in events)
    assert types == ["RoomPlaced"] + ["SeatRefused"] * 4
    refusal = next(e for e in events if e["type"] == "SeatRefused")
    assert refusal["stream_id"] == f"room-{room}"
    assert refusal["data"]["reason"] == "room_full"
    assert refusal["data"]["cap"] == 16


async def test_asking_again_for_the_same_person_keeps_one_seat(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    request = seat_request(clinic_id, room, role=CallRole.host, cap=2)
    first = await call(nc, SEAT_SUBJECT, request, SeatAnswer, 5)
    again = await call(nc, SEAT_SUBJECT, request, SeatAnswer, 5)
    assert first.granted
    assert again.granted
    assert first.taken == again.taken == 1
    assert first.reserved_until is not None
    assert again.reserved_until is not None
    assert again.reserved_until >= first.reserved_until


async def test_the_clinics_voice_limit_comes_with_the_seat_and_the_room_keeps_it(
    node: Node, nc: NATS
) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    request = seat_request(clinic_id, room).model_copy(update={"loudest_speakers": 1})
    assert (await call(nc, SEAT_SUBJECT, request, SeatAnswer, 5)).granted
    sfu = node.media.sfu
    assert sfu.room(room, clinic_id).speakers.limit == 1
    other = seat_request(clinic_id, uuid.uuid4())  # no limit said: the node's default
    assert (await call(nc, SEAT_SUBJECT, other, SeatAnswer, 5)).granted
    assert sfu.room(other.room_id, clinic_id).speakers.limit == node.media.settings.loudest_speakers
    changed = seat_request(clinic_id, room).model_copy(update={"loudest_speakers": 0})
    assert (await call(nc, SEAT_SUBJECT, changed, SeatAnswer, 5)).granted
    assert sfu.room(room, clinic_id).speakers.limit == 0


async def test_a_seat_nobody_claims_lapses(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    first = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=1), SeatAnswer, 5)
    assert first.granted
    second = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=1), SeatAnswer, 5)
    assert not second.granted
    assert second.reason is SeatRefusal.room_full
    await asyncio.sleep(1.1)  # reservation_s=1.0
    third = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=1), SeatAnswer, 5)
    assert third.granted
    assert third.taken == 1


async def test_a_claimed_seat_does_not_lapse(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    request = seat_request(clinic_id, room, cap=1)
    assert (await call(nc, SEAT_SUBJECT, request, SeatAnswer, 5)).granted
    assert node.media.ledger.claim(room, request.participant_id, node.media.clock())
    await asyncio.sleep(1.1)
    other = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=1), SeatAnswer, 5)
    assert not other.granted


async def test_releasing_a_seat_frees_it(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    host = seat_request(clinic_id, room, role=CallRole.host, cap=2)
    guest = seat_request(clinic_id, room, cap=2)
    for request in (host, guest):
        assert (await call(nc, SEAT_SUBJECT, request, SeatAnswer, 5)).granted
    assert not (
        await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=2), SeatAnswer)
    ).granted

    release = SeatRelease(clinic_id=clinic_id, room_id=room, participant_id=guest.participant_id)
    assert await call(nc, RELEASE_SUBJECT, release, SeatReleased, 5) == SeatReleased(
        released=1, taken=1
    )
    assert await call(nc, RELEASE_SUBJECT, release, SeatReleased, 5) == SeatReleased(
        released=0, taken=1
    )
    newcomer = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=2), SeatAnswer, 5)
    assert newcomer.granted
    assert newcomer.taken == 2


async def test_the_end_of_the_call_frees_every_seat_and_the_room(node: Node, nc: NATS) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    for _ in range(3):
        assert (await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room), SeatAnswer, 5)).granted
    everyone = SeatRelease(clinic_id=clinic_id, room_id=room)
    assert await call(nc, RELEASE_SUBJECT, everyone, SeatReleased, 5) == SeatReleased(
        released=3, taken=0
    )
    placement = await node.placement()

    async def unplaced() -> bool:  # the next heartbeat gives the empty room up
        return await placement.owner(room) is None and room not in node.media.owned

    await eventually(unplaced, timeout=5, what="the empty room unplaced")
    again = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room), SeatAnswer, 5)
    assert again.granted
    assert again.taken == 1


async def test_releasing_a_room_nobody_holds_frees_nothing(node: Node, nc: NATS) -> None:
    release = SeatRelease(clinic_id=clinic(), room_id=uuid.uuid4())
    assert await call(nc, RELEASE_SUBJECT, release, SeatReleased, 5) == SeatReleased(
        released=0, taken=0
    )


async def test_a_node_with_no_room_left_refuses_for_want_of_capacity(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS
) -> None:
    async with running(postgres_dsn, nats_server.url, max_rooms=1):
        clinic_id = clinic()
        first = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, uuid.uuid4()), SeatAnswer, 5)
        assert first.granted
        room = uuid.uuid4()
        refused = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room, cap=8), SeatAnswer, 5)
        assert not refused.granted
        assert refused.reason is SeatRefusal.no_capacity
        assert refused.taken == 0
        assert refused.cap == 8
        assert refused.message.endswith(".")
        assert len(refused.message.split()) > 4
        events = await events_of(nc, clinic_id, 2)
        assert [e["type"] for e in events] == ["RoomPlaced", "SeatRefused"]
        assert events[1]["data"]["reason"] == "no_capacity"
        assert events[1]["data"]["room_id"] == str(room)


@pytest.mark.parametrize("action", ["seat", "release"])
async def test_a_malformed_request_gets_an_error_not_a_timeout(
    node: Node, nc: NATS, action: Action
) -> None:
    subjects = {"seat": SEAT_SUBJECT, "release": RELEASE_SUBJECT}
    for subject in (subjects[action], node_subject(node.node_id, action)):
        for body in (b"not json", b"{}", json.dumps({"room_id": "nope"}).encode()):
            reply = await nc.request(subject, body, timeout=5)
            assert json.loads(reply.data)["error"].startswith("malformed request"), reply.data


async def test_a_cap_above_sixteen_is_a_malformed_request(node: Node, nc: NATS) -> None:
    too_many = seat_request(clinic(), uuid.uuid4()).model_dump(mode="json") | {"cap": 17}
    reply = await nc.request(SEAT_SUBJECT, json.dumps(too_many).encode(), timeout=5)
    assert json.loads(reply.data)["error"].startswith("malformed request: cap:")


async def test_a_room_is_placed_under_its_id_in_hex(node: Node, nc: NATS) -> None:
    room = uuid.uuid4()
    await call(nc, SEAT_SUBJECT, seat_request(clinic(), room), SeatAnswer, 5)
    rooms = await nc.jetstream().key_value(ROOMS_BUCKET)
    assert (await rooms.get(room.hex)).value == node.node_id.encode()
