"""In-call chat over real WebSockets on two replicas: everyone in the call gets each message (the
sender too) and in one order; a waiting guest, a long message and a fast sender are refused with
their own codes; events count messages and never carry their text; a clinic that keeps chat
keeps it sealed with the session, reads it through the API (no other clinic can), and it is
deleted when its retention is over."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from contracts.signaling import CallRole, ChatMessageSent, SessionEnded, SessionStarted
from contracts.signaling_protocol import MAX_CHAT_LENGTH
from runtime.refusals import Conflict
from services.signaling import domain
from services.signaling.domain import Room
from tests.signaling.conftest import (
    Browser,
    Calls,
    host_and_admitted_guest,
    host_in_call,
    knocking_guest,
    practitioner_room,
    query,
    room_events,
)

# --- the room counts, with no server -------------------------------------------------------

ROOM, HOST = UUID(int=1), UUID(int=10)
T0 = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)


def test_the_room_counts_chat_per_call_and_the_end_of_the_call_tells_the_total() -> None:
    joined = domain.enter(
        Room(room_id=ROOM), HOST, CallRole.host, "Dr Ada", None, None, "m1", None, 16, T0
    )
    room = Room(room_id=ROOM)
    for event in joined:
        room = domain.evolve(room, event)
    for n in (1, 2):
        [sent] = domain.chat(room, HOST, uuid4())
        assert isinstance(sent, ChatMessageSent)
        assert sent.count == n
        room = domain.evolve(room, sent)
    ended = domain.leave(room, HOST, domain.LeftBecause.left, T0)
    assert [e.chat_messages for e in ended if isinstance(e, SessionEnded)] == [2]
    for event in ended:
        room = domain.evolve(room, event)
    again = domain.enter(room, HOST, CallRole.host, "Dr Ada", None, None, "m1", None, 16, T0)
    assert any(isinstance(e, SessionStarted) for e in again)
    for event in again:
        room = domain.evolve(room, event)
    [first] = domain.chat(room, HOST, uuid4())
    assert isinstance(first, ChatMessageSent)
    assert first.count == 1  # a new call counts anew
    with pytest.raises(Conflict) as refused:
        domain.chat(room, UUID(int=99), uuid4())
    assert refused.value.code == "not_in_call"


# --- over the WebSocket ----------------------------------------------------------------------


async def admitted(calls: Calls, host: Browser, room: Any, name: str, replica: int) -> Browser:
    guest, welcome = await knocking_guest(calls, room, name=name, replica=replica)
    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    return guest


async def chats(browser: Browser, count: int) -> list[dict[str, Any]]:
    """The next ``count`` chat frames this browser gets, as they arrive."""
    return [await browser.next("chat") for _ in range(count)]


async def still_open(browser: Browser) -> None:
    await browser.send("ping")
    await browser.next("pong")


async def test_everyone_in_the_call_gets_each_message_in_one_order_across_replicas(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, host_replica=0, guest_replica=1)
    second = await admitted(calls, call.host, call.room, "Gita", replica=0)
    await call.host.latest("room", participants=lambda p: len(p) == 3)
    waiting, _ = await knocking_guest(calls, call.room, name="Wanda", replica=1)
    people = {"Dr Ada": call.host, "Grace": call.guest, "Gita": second}

    # One at a time: each arrives everywhere before the next is sent, in the same order.
    for round_ in range(2):
        for name, sender in people.items():
            await sender.send("chat", text=f"  {name} says {round_}  ")
            for browser in people.values():
                frame = await browser.next("chat")
                assert (frame["sender_name"], frame["text"]) == (name, f"{name} says {round_}")
    # All at once from both replicas: everyone gets every message, and numbers order them
    # the same way for everyone.
    for n in range(3):
        await asyncio.gather(
            *(sender.send("chat", text=f"{name} at once {n}") for name, sender in people.items())
        )
    got = {name: await chats(browser, 9) for name, browser in people.items()}
    ordered = {
        name: [
            (f["number"], f["message_id"], f["text"])
            for f in sorted(frames, key=lambda f: f["number"])
        ]
        for name, frames in got.items()
    }
    assert ordered["Dr Ada"] == ordered["Grace"] == ordered["Gita"]
    assert [n for n, _, _ in ordered["Dr Ada"]] == list(range(7, 16))
    everyone = [f for frames in got.values() for f in frames]
    for name, browser in people.items():
        mine = [f for f in got[name] if f["sender_name"] == name]
        assert len(mine) == 3, "the sender gets its own messages"
        assert {f["participant_id"] for f in mine} == {browser.seen("welcome")[0]["participant_id"]}
    assert {f["role"] for f in everyone if f["sender_name"] == "Dr Ada"} == {"host"}
    assert {f["role"] for f in everyone if f["sender_name"] != "Dr Ada"} == {"guest"}
    assert not waiting.seen("chat"), "the waiting room has no chat"

    counts = [
        d["count"]
        for t, d in await room_events(postgres_dsn, call.welcome["room_id"])
        if t == "ChatMessageSent"
    ]
    assert counts == list(range(1, 16))


async def test_a_waiting_guest_cannot_chat(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room)
    guest, _ = await knocking_guest(calls, room)
    await guest.send("chat", text="Hello?")
    error = await guest.next("error")
    assert error["code"] == "not_in_call"
    assert "waiting room" in error["message"]
    await still_open(guest)
    await host.send("chat", text="Only for the call")
    await host.next("chat")
    await still_open(guest)
    assert not guest.seen("chat")


async def test_a_long_or_empty_message_is_refused_with_its_own_code(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls)
    await call.guest.send("chat", text="x" * (MAX_CHAT_LENGTH + 1))
    error = await call.guest.next("error")
    assert error["code"] == "chat_too_long"
    assert f"at most {MAX_CHAT_LENGTH} characters; this one has 1001" in error["message"]
    await call.guest.send("chat", text="   ")
    assert (await call.guest.next("error"))["code"] == "chat_empty"
    await call.guest.send("chat", text="a\u0000b")
    assert (await call.guest.next("error"))["code"] == "chat_invalid"
    await still_open(call.guest)
    longest = "é" * MAX_CHAT_LENGTH
    await call.guest.send("chat", text=f"\n {longest} \n")  # trimmed, it fits
    assert (await call.host.next("chat"))["text"] == longest
    assert (await call.guest.next("chat"))["text"] == longest
    assert not call.host.seen("error")


async def test_a_fast_sender_is_told_when_to_try_again(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls)
    burst = calls.signalings[1].settings.chat_burst
    for n in range(burst + 1):
        await call.guest.send("chat", text=f"message {n}")
    error = await call.guest.next("error")
    assert error["code"] == "chat_rate_limited"
    assert error["message"].endswith("try again in 1 second.")
    assert [f["text"] for f in await chats(call.host, burst)] == [
        f"message {n}" for n in range(burst)
    ]
    await still_open(call.guest)
    await asyncio.sleep(1.05)  # the time the refusal gave
    await call.guest.send("chat", text="after waiting")
    assert (await call.host.next("chat"))["text"] == "after waiting"
    # The host has a bucket of their own.
    await call.host.send("chat", text="host too")
    await call.guest.next("chat", text="host too")


async def test_events_count_messages_and_never_carry_their_text(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    secret = f"my blood pressure is {uuid4().hex}"
    await call.guest.send("chat", text=secret)
    await call.host.next("chat")
    await call.host.send("chat", text="Thank you")
    await call.guest.next("chat", text="Thank you")
    await call.host.send("end_for_all")
    await call.guest.next("ended")
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    sent = [data for type_, data in events if type_ == "ChatMessageSent"]
    assert [d["count"] for d in sent] == [1, 2]
    assert sent[0]["participant_id"] == call.guest_id
    assert all(set(d) >= {"message_id", "count", "participant_id"} for d in sent)
    assert secret not in json.dumps(events)
    assert "Thank you" not in json.dumps(events)
    [ended] = [data for type_, data in events if type_ == "SessionEnded"]
    assert ended["chat_messages"] == 2
    # Nothing is kept by default.
    room_id = call.welcome["room_id"]
    assert not await query(
        postgres_dsn, "SELECT 1 FROM signaling.chat_messages WHERE room_id = $1", UUID(room_id)
    )
    async with httpx.AsyncClient(base_url=calls.replicas[0]) as signaling:
        response = await signaling.get(
            f"/v1/rooms/{room_id}/chat", headers=call.room.clinic.clinic.headers
        )
        assert response.status_code == 404


# --- kept with the session -------------------------------------------------------------------


async def session_call(calls: Calls, **clinic_settings: Any) -> tuple[Browser, Browser, Any, str]:
    """A session open now, its host and an admitted guest (each on a replica of its own): the
    host, the guest, the room (its clinic) and the session's id."""
    room = await practitioner_room(calls, **clinic_settings)
    clinic = room.clinic
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    session = await clinic.clinic.ok(
        "POST",
        "/v1/sessions",
        201,
        json={
            "practitioner_id": room.practitioner["practitioner_id"],
            "client_ids": [(await clinic.clinic.client())["client_id"]],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
            "link_sharing": True,
        },
    )
    session_id = session["session_id"]
    guest_link = await clinic.link("guest", session_id=session_id)
    host = await calls.join(room.host_url, "Dr Ada", replica=0, session_id=session_id)
    await host.next("admitted")
    guest = await calls.join(guest_link["url"], "Grace", replica=1)
    welcome = await guest.next("welcome")
    await guest.next("waiting")
    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    return host, guest, room, session_id


async def test_a_clinic_that_keeps_chat_reads_it_sealed_at_rest_until_it_is_deleted(
    calls: Calls, postgres_dsn: str
) -> None:
    host, guest, room, session_id = await session_call(calls, call={"chat_retention_days": 7})
    assert guest.seen("welcome")[0]["call"]["chat_retention_days"] == 7
    texts = ["Can you hear me?", "Yes, loud and clear.", "Here is the worksheet link."]
    for sender, text in zip((guest, host, host), texts, strict=True):
        await sender.send("chat", text=text)
        await guest.next("chat", text=text)

    rows = await query(
        postgres_dsn,
        "SELECT * FROM signaling.chat_messages WHERE session_id = $1 ORDER BY number",
        UUID(session_id),
    )
    assert [r["number"] for r in rows] == [1, 2, 3]
    assert {r["clinic_id"] for r in rows} == {room.clinic.clinic.clinic_id}
    assert [r["role"] for r in rows] == ["guest", "host", "host"]
    for row, text in zip(rows, texts, strict=True):
        assert row["text"].startswith("chat1.")
        assert text not in row["text"]
        assert row["sender_name"].startswith("chat1.")
        assert row["delete_after"] == row["sent_at"] + timedelta(days=7)

    async with httpx.AsyncClient(base_url=calls.replicas[1]) as signaling:
        mine = room.clinic.clinic.headers
        response = await signaling.get(f"/v1/sessions/{session_id}/chat", headers=mine)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        page = response.json()
        assert [(m["sender_name"], m["text"]) for m in page["items"]] == [
            ("Grace", texts[0]),
            ("Dr Ada", texts[1]),
            ("Dr Ada", texts[2]),
        ]
        assert page["next_cursor"] is None
        first = await signaling.get(
            f"/v1/sessions/{session_id}/chat", headers=mine, params={"limit": 2}
        )
        rest = await signaling.get(
            f"/v1/sessions/{session_id}/chat",
            headers=mine,
            params={"limit": 2, "cursor": first.json()["next_cursor"]},
        )
        assert [m["text"] for m in first.json()["items"] + rest.json()["items"]] == texts
        by_room = await signaling.get(f"/v1/rooms/{session_id}/chat", headers=mine)
        assert [m["text"] for m in by_room.json()["items"]] == texts  # a session link's room

        other = await calls.clinic(call={"chat_retention_days": 7})
        theirs = await signaling.get(
            f"/v1/sessions/{session_id}/chat", headers=other.clinic.headers
        )
        assert theirs.status_code == 404
        assert theirs.json()["code"] == "chat_not_found"
        assert (await signaling.get(f"/v1/sessions/{session_id}/chat")).status_code == 401
        forged = await signaling.get(
            f"/v1/sessions/{session_id}/chat", headers=mine, params={"cursor": "bm9wZQ"}
        )
        assert forged.status_code == 400

    # Deleted after its retention: not a day before, and at once after.
    chat = calls.signalings[0].chat
    calls.clock.set(datetime.fromisoformat(page["items"][-1]["delete_after"]) - timedelta(days=1))
    await chat.purge()
    assert len(await kept_rows(postgres_dsn, session_id)) == 3
    calls.clock.advance(days=1)
    await chat.purge()  # (or the sweep, if it came first: either deletes what is due)
    assert await kept_rows(postgres_dsn, session_id) == []
    async with httpx.AsyncClient(base_url=calls.replicas[0]) as signaling:
        gone = await signaling.get(f"/v1/sessions/{session_id}/chat", headers=mine)
        assert gone.status_code == 404


async def kept_rows(dsn: str, session_id: str) -> list[Any]:
    return await query(
        dsn,
        "SELECT message_id FROM signaling.chat_messages WHERE session_id = $1",
        UUID(session_id),
    )
