"""Calls under pressure: a full room, dropped connections, a lost replica, other clinics.

Everything runs against two (or three) real signaling replicas; a browser's connection is
dropped by aborting its TCP connection, and a replica is lost by stopping its runtime before
its sockets go, so it records nothing.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from fastapi import FastAPI

from runtime.embedded import NatsServer
from runtime.participant_tokens import verify
from runtime.service import build_app
from services.signaling import app as signaling_app
from services.signaling.calls import Signaling
from tests.signaling.conftest import (
    PARTICIPANT_KEY,
    Browser,
    Calls,
    host_and_admitted_guest,
    host_in_call,
    knocking_guest,
    practitioner_room,
    query,
    room_events,
    signaling_settings,
)
from tests.support import eventually, listening, settings


def connected(participants: list[dict[str, Any]], pid: str) -> bool | None:
    """Whether ``pid`` is listed as connected (None when not listed at all)."""
    for p in participants:
        if p["participant_id"] == pid:
            return not p["disconnected"]
    return None


# --- a full room ----------------------------------------------------------------------------


async def test_thirty_knocks_and_thirty_admits_fill_sixteen_seats_and_no_more(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)  # max_participants 16, the default
    host = await host_in_call(calls, room)
    knocks = await asyncio.gather(
        *(knocking_guest(calls, room, f"Guest {i}", replica=i % 2) for i in range(30))
    )
    ids = [welcome["participant_id"] for _, welcome in knocks]
    assert len(set(ids)) == 30
    await host.latest("room", waiting=lambda w: len(w) == 30)

    for pid in ids:  # as fast as the host can click
        await host.send("admit", participant_id=pid)
    final = await host.latest("room", participants=lambda p: len(p) == 16)
    for _ in range(15):
        await host.next("seat_refused")

    async def outcome(guest: Browser) -> str:
        async def decided() -> bool:
            return bool(guest.seen("admitted")) or room_full(guest)

        await eventually(decided, timeout=10, what="the guest let in or told the room is full")
        return "admitted" if guest.seen("admitted") else "room_full"

    outcomes = await asyncio.gather(*(outcome(guest) for guest, _ in knocks))
    assert outcomes.count("admitted") == 15
    assert outcomes.count("room_full") == 15
    for guest, _ in knocks:
        assert not (guest.seen("admitted") and room_full(guest))
    full = next(g for g, _ in knocks if room_full(g)).seen("waiting")[-1]
    assert "16" in full["message"]
    admitted = {pid for pid, r in zip(ids, outcomes, strict=True) if r == "admitted"}
    assert {p["participant_id"] for p in final["participants"]} == admitted | {host_id(host)}
    assert len(final["waiting"]) == 15  # the others keep their place
    await asyncio.sleep(0.5)  # nothing comes in late
    assert len(host.seen("seat_refused")) == 15
    assert not host.seen("error")
    assert len((await host.latest("room"))["participants"]) == 16
    events = await room_events(postgres_dsn, host.seen("welcome")[0]["room_id"])
    assert sum(t == "ParticipantJoined" for t, _ in events) == 16


def room_full(guest: Browser) -> bool:
    return any(w["state"] == "room_full" for w in guest.seen("waiting"))


def host_id(host: Browser) -> str:
    return str(host.seen("welcome")[0]["participant_id"])


# --- dropping and coming back ---------------------------------------------------------------


async def test_an_admitted_guest_who_drops_resumes_on_the_other_replica(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, host_replica=0, guest_replica=1)
    first = call.guest.seen("admitted")[-1]
    await call.guest.drop()
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is False)

    back = await calls.open(replica=0)
    await back.send("join", resume=call.welcome["resume_token"])
    welcome = await back.next("welcome")
    assert welcome["participant_id"] == call.guest_id
    assert (welcome["role"], welcome["room_id"]) == ("guest", call.welcome["room_id"])
    admitted = await back.next("admitted")
    claims = verify(PARTICIPANT_KEY, admitted["participant_token"], room_id=welcome["room_id"])
    assert (claims.sub, claims.role, claims.node) == (call.guest_id, "guest", "mtest")
    assert admitted["expires_at"] >= first["expires_at"]  # minted anew for this connection
    assert (admitted["media_node"], admitted["media_url"]) == (
        first["media_node"],
        first["media_url"],
    )
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is True)
    await back.latest("participants", participants=lambda p: len(p) == 2)

    await call.host.send("lock")  # the resumed guest still hears the room change
    await back.latest("participants", participants=lambda p: len(p) == 2)
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    mine = [t for t, d in events if d.get("participant_id") == call.guest_id]
    assert mine[-2:] == ["ParticipantDisconnected", "ParticipantReconnected"]
    assert "ParticipantLeft" not in mine


async def test_a_waiting_guest_who_drops_finds_their_place_in_the_waiting_room(
    calls: Calls,
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    first, _ = await knocking_guest(calls, room, "First", replica=1)
    guest, welcome = await knocking_guest(calls, room, "Second", replica=1)
    pid = welcome["participant_id"]
    view = await host.latest("room", waiting=lambda w: len(w) == 2)
    since = {g["participant_id"]: g["waiting_since"] for g in view["waiting"]}

    await guest.drop()
    await host.latest("room", waiting=lambda w: any(g["disconnected"] for g in w))
    back = await calls.open(replica=0)
    await back.send("join", resume=welcome["resume_token"])
    assert (await back.next("welcome"))["participant_id"] == pid
    assert (await back.next("waiting"))["state"] == "host_notified"
    view = await host.latest("room", waiting=lambda w: not any(g["disconnected"] for g in w))
    assert [g["participant_id"] for g in view["waiting"]][-1] == pid  # still second in line
    assert {g["participant_id"]: g["waiting_since"] for g in view["waiting"]} == since
    assert not back.seen("admitted")

    await host.send("admit", participant_id=pid)
    await back.next("admitted")
    assert not first.seen("admitted")


async def test_a_place_lapses_when_the_grace_runs_out(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls, rejoin_grace_minutes=1)
    assert call.welcome["rejoin_grace_s"] == 60
    await call.guest.drop()
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is False)
    calls.clock.advance(seconds=50)
    await asyncio.sleep(0.6)  # three sweeps: still within the grace
    assert connected((await call.host.latest("room"))["participants"], call.guest_id) is False

    calls.clock.advance(seconds=11)
    gone = await call.host.latest("room", participants=lambda p: len(p) == 1)
    assert connected(gone["participants"], call.guest_id) is None
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    left = [d for t, d in events if t == "ParticipantLeft"]
    assert [(d["participant_id"], d["reason"]) for d in left] == [(call.guest_id, "disconnected")]
    assert "SessionEnded" not in [t for t, _ in events]  # the host is still in the call

    late = await calls.open(replica=1)
    await late.send("join", resume=call.welcome["resume_token"])
    refused = await late.next("refused")
    assert (refused["reason"], refused["status"]) == ("resume_expired", 410)
    assert await late.closed() == 1000


async def test_a_page_that_went_away_keeps_its_place_long_enough_for_a_reload(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)  # the default grace: 5 minutes
    gone_at = calls.clock()
    await call.guest.ws.close(code=1001)  # what a browser sends as its page unloads
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is False)
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    (away,) = [d for t, d in events if t == "ParticipantDisconnected"]
    until = datetime.fromisoformat(away["grace_until"])
    assert until - gone_at == timedelta(seconds=30)  # not the clinic's 5 minutes

    # A reload within it takes the place back, as from any drop.
    calls.clock.advance(seconds=20)
    await asyncio.sleep(0.6)
    reloaded = await calls.open(replica=1)
    await reloaded.send("join", resume=call.welcome["resume_token"])
    assert (await reloaded.next("welcome"))["participant_id"] == call.guest_id
    await reloaded.next("admitted")
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is True)

    # Closed for good: the place lapses 30 s later, not 5 minutes later.
    await reloaded.ws.close(code=1001)
    await call.host.latest("room", participants=lambda p: connected(p, call.guest_id) is False)
    calls.clock.advance(seconds=31)
    gone = await call.host.latest("room", participants=lambda p: len(p) == 1)
    assert connected(gone["participants"], call.guest_id) is None
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    left = [d for t, d in events if t == "ParticipantLeft"]
    assert [(d["participant_id"], d["reason"]) for d in left] == [(call.guest_id, "disconnected")]


async def test_a_hosts_brief_drop_ends_nothing(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls, host_replica=0, guest_replica=1)
    host_welcome = call.host.seen("welcome")[0]
    host_id = host_welcome["participant_id"]
    await call.host.drop()
    await call.guest.latest("participants", participants=lambda p: connected(p, host_id) is False)
    calls.clock.advance(minutes=4)  # within the default grace of 5 minutes
    await asyncio.sleep(0.5)

    host = await calls.open(replica=1)
    await host.send("join", resume=host_welcome["resume_token"])
    assert (await host.next("welcome"))["participant_id"] == host_id
    await host.next("admitted")
    view = await host.latest("room", participants=lambda p: all(not x["disconnected"] for x in p))
    assert len(view["participants"]) == 2
    await call.guest.latest("participants", participants=lambda p: connected(p, host_id) is True)
    assert not call.guest.seen("ended")
    types = [t for t, _ in await room_events(postgres_dsn, call.welcome["room_id"])]
    assert "SessionEnded" not in types
    assert "ParticipantLeft" not in types

    late, late_welcome = await knocking_guest(calls, call.room, "Late", replica=0)
    await host.send("admit", participant_id=late_welcome["participant_id"])
    await late.next("admitted")  # the resumed host can still run the call


async def test_a_resumed_host_keeps_the_clinics_cap(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls, max_participants=2, loudest_speakers=1)
    assert (await call.host.latest("room"))["max_participants"] == 2
    host_welcome = call.host.seen("welcome")[0]
    await call.host.drop()
    host = await calls.open(replica=1)
    await host.send("join", resume=host_welcome["resume_token"])
    await host.next("admitted")
    view = await host.latest("room", participants=lambda p: all(not x["disconnected"] for x in p))
    assert view["max_participants"] == 2
    rows = await query(
        postgres_dsn,
        "SELECT loudest_speakers FROM signaling.connections WHERE room_id = $1",
        UUID(call.welcome["room_id"]),
    )
    assert [r["loudest_speakers"] for r in rows] == [1, 1]  # told to media with each seat

    third, welcome = await knocking_guest(calls, call.room, "Third", replica=0)
    await host.send("admit", participant_id=welcome["participant_id"])
    assert (await host.next("seat_refused"))["participant_id"] == welcome["participant_id"]
    assert (await third.next("waiting", state="room_full"))["message"]
    assert len((await host.latest("room"))["participants"]) == 2
    assert not third.seen("admitted")


# --- a replica lost ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def extra_replica(
    calls: Calls, dsn: str, nats_url: str, replica_id: str
) -> AsyncIterator[FastAPI]:
    """One more signaling replica, reachable as ``calls.replicas[-1]`` while it serves."""
    signaling = Signaling(
        signaling_settings(replica_id), key_source=lambda: PARTICIPANT_KEY, clock=calls.clock
    )
    app = build_app(signaling_app.build(signaling), settings(dsn, nats_url))
    async with listening(app) as url:
        calls.replicas.append(url)
        try:
            yield app
        finally:
            calls.replicas.remove(url)


async def die(app: FastAPI) -> None:
    """The replica's process is gone: no heartbeat, no database, nothing recorded."""
    await app.state.runtime.stop()


async def test_the_people_of_a_lost_replica_find_their_place_on_another(
    calls: Calls, postgres_dsn: str, nats_server: NatsServer
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    async with extra_replica(calls, postgres_dsn, nats_server.url, f"sx{uuid4().hex[:8]}") as app:
        guest, welcome = await knocking_guest(calls, room, "Grace", replica=2)
        waiter, waiter_welcome = await knocking_guest(calls, room, "Walter", replica=2)
        await host.send("admit", participant_id=welcome["participant_id"])
        first = await guest.next("admitted")
        await die(app)
    await guest.closed()
    await waiter.closed()
    gid, wid = welcome["participant_id"], waiter_welcome["participant_id"]

    # Its heartbeat stops; after replica_timeout_s the others treat its people as dropped.
    dropped = await host.latest(
        "room",
        participants=lambda p: connected(p, gid) is False,
        waiting=lambda w: [g["disconnected"] for g in w] == [True],
    )
    assert [g["participant_id"] for g in dropped["waiting"]] == [wid]

    back = await calls.open(replica=1)
    await back.send("join", resume=welcome["resume_token"])
    assert (await back.next("welcome"))["participant_id"] == gid
    admitted = await back.next("admitted")
    assert (admitted["media_node"], admitted["media_url"]) == (
        first["media_node"],
        first["media_url"],
    )
    waiting_again = await calls.open(replica=0)
    await waiting_again.send("join", resume=waiter_welcome["resume_token"])
    assert (await waiting_again.next("welcome"))["participant_id"] == wid
    await waiting_again.next("waiting")
    view = await host.latest(
        "room",
        participants=lambda p: connected(p, gid) is True,
        waiting=lambda w: [(g["participant_id"], g["disconnected"]) for g in w] == [(wid, False)],
    )
    assert len(view["participants"]) == 2
    types = [t for t, _ in await room_events(postgres_dsn, welcome["room_id"])]
    assert "ParticipantLeft" not in types
    assert "KnockWithdrawn" not in types


async def test_a_replica_restarted_under_the_same_name_lets_its_old_places_lapse(
    calls: Calls, postgres_dsn: str, nats_server: NatsServer
) -> None:
    call_room = await practitioner_room(calls, rejoin_grace_minutes=1)
    host = await host_in_call(calls, call_room, replica=0)
    name = f"sx{uuid4().hex[:8]}"
    async with extra_replica(calls, postgres_dsn, nats_server.url, name) as app:
        guest, welcome = await knocking_guest(calls, call_room, "Grace", replica=2)
        await host.send("admit", participant_id=welcome["participant_id"])
        await guest.next("admitted")
        await die(app)
    gid = welcome["participant_id"]
    async with extra_replica(calls, postgres_dsn, nats_server.url, name):
        # Back within replica_timeout_s, under its old name: it holds none of the old sockets.
        await host.latest("room", participants=lambda p: connected(p, gid) is False)
        calls.clock.advance(minutes=2)
        await host.latest("room", participants=lambda p: connected(p, gid) is None)


# --- hosts and guests, across replicas and clinics ------------------------------------------


async def test_a_host_removes_a_guest_on_the_other_replica(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls, host_replica=0, guest_replica=1)
    await call.host.send("remove", participant_id=call.guest_id, message="Let us stop here.")
    assert (await call.guest.next("removed"))["message"] == "Let us stop here."
    assert await call.guest.closed() == 1000
    view = await call.host.latest("room", participants=lambda p: len(p) == 1)
    assert connected(view["participants"], call.guest_id) is None

    events = await room_events(postgres_dsn, call.welcome["room_id"])
    mine = [(t, d) for t, d in events if d.get("participant_id") == call.guest_id]
    assert [t for t, _ in mine][-2:] == ["ParticipantRemoved", "ParticipantLeft"]
    assert mine[-2][1]["message"] == "Let us stop here."
    assert mine[-1][1]["reason"] == "removed"
    assert "SessionEnded" not in [t for t, _ in events]

    back = await calls.open(replica=1)  # a removed guest cannot come back with their token
    await back.send("join", resume=call.welcome["resume_token"])
    assert (await back.next("refused"))["reason"] == "resume_expired"


async def test_a_host_cannot_act_on_another_clinics_guest(calls: Calls, postgres_dsn: str) -> None:
    ours = await practitioner_room(calls)
    theirs = await practitioner_room(calls)
    host = await host_in_call(calls, ours, replica=0)
    their_host = await host_in_call(calls, theirs, replica=1, name="Dr Bea")
    stranger, welcome = await knocking_guest(calls, theirs, "Stranger", replica=1)
    pid = welcome["participant_id"]
    await their_host.latest("room", waiting=lambda w: len(w) == 1)

    for command in ("admit", "deny", "hold", "remove"):
        await host.send(command, participant_id=pid)
        error = await host.next("error")
        assert error["code"] == "participant_not_found", error
        assert error["message"].endswith(".")
    await host.send("ping")
    await host.next("pong")  # every command was answered, and the socket is still open

    view = await their_host.latest("room")
    assert [(g["participant_id"], g["on_hold"]) for g in view["waiting"]] == [(pid, False)]
    assert stranger.seen("waiting")[-1]["state"] == "host_notified"
    assert not stranger.seen("admitted")
    assert not stranger.seen("denied")
    theirs_events = await room_events(postgres_dsn, welcome["room_id"])
    assert [t for t, d in theirs_events if d.get("participant_id") == pid] == ["GuestKnocked"]


async def test_a_guest_cannot_run_the_call(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls)
    other, other_welcome = await knocking_guest(calls, call.room, "Other", replica=0)
    before = await room_events(postgres_dsn, call.welcome["room_id"])
    target = {"participant_id": other_welcome["participant_id"]}
    for command, fields in (
        ("admit", target),
        ("deny", target),
        ("lock", {}),
        ("end_for_all", {}),
    ):
        await call.guest.send(command, **fields)
        error = await call.guest.next("error")
        assert (error["code"], error["message"]) == ("only_hosts", "Only a host can do that.")
    await call.guest.send("ping")
    await call.guest.next("pong")
    assert await room_events(postgres_dsn, call.welcome["room_id"]) == before
    view = await call.host.latest("room")
    assert (view["locked"], len(view["participants"]), len(view["waiting"])) == (False, 2, 1)
    assert not other.seen("admitted")


async def test_a_person_keeps_the_call_features_they_arrived_with_when_they_resume(
    calls: Calls,
) -> None:
    """The clinic's call features reach the page in the welcome, and a resume (on the other
    replica, which never saw the links decision) tells the same."""
    features = {"guest_replies": True, "recording_consent": "notice", "chat_retention_days": 7}
    call = await host_and_admitted_guest(calls, call=features)
    assert call.welcome["call"]["guest_replies"] is True
    assert call.welcome["call"]["recording_consent"] == "notice"
    await call.guest.drop()
    back = await calls.open(0)
    await back.send("join", resume=call.welcome["resume_token"])
    again = await back.next("welcome")
    assert again["call"] == call.welcome["call"]
    assert again["call"]["chat_retention_days"] == 7
