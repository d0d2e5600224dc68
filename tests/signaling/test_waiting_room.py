"""Talking to the waiting room over real WebSockets on two replicas: a host's messages to one
guest or to everyone waiting, guests' replies when the clinic allows them, admit all, and
sending a guest back from the call; every refusal, and events that carry no text."""

import json
from typing import Any
from uuid import UUID, uuid4

from contracts.signaling import CallRole
from tests.signaling.conftest import (
    Browser,
    Calls,
    host_and_admitted_guest,
    host_in_call,
    knocking_guest,
    practitioner_room,
    room_events,
)
from tests.support import eventually

SECRET = "Room 4 is free now"
"""A text no event may hold."""


async def _text_never_recorded(dsn: str, room_id: str, *texts: str) -> list[str]:
    events = await room_events(dsn, room_id)
    stored = json.dumps([data for _, data in events])
    for text in texts:
        assert text not in stored
    return [t for t, _ in events]


async def test_a_hosts_message_reaches_one_guest_or_everyone_waiting_and_every_host(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0, name="Dr Ada")
    other_host = await host_in_call(calls, room, replica=1, name="Dr Bo")
    ana, ana_welcome = await knocking_guest(calls, room, "Ana", replica=1)
    ben, ben_welcome = await knocking_guest(calls, room, "Ben", replica=0)
    ana_id, ben_id = ana_welcome["participant_id"], ben_welcome["participant_id"]
    await host.latest("room", waiting=lambda w: len(w) == 2)

    await host.send("message_waiting", participant_id=ana_id, text=f"  {SECRET}  ")
    got = await ana.next("waiting_message")
    assert got["text"] == SECRET  # trimmed
    assert (got["from_role"], got["participant_id"], got["sender_name"]) == (
        "host",
        ana_id,
        "Dr Ada",
    )
    for copy_holder in (host, other_host):  # both hosts follow the same conversation
        copy = await copy_holder.next("waiting_message")
        assert copy["message_id"] == got["message_id"]
    await host.latest(
        "room",
        waiting=lambda w: (
            {g["participant_id"]: g["attended"] for g in w} == {ana_id: True, ben_id: False}
        ),
    )

    canned = ana_welcome["call"]["waiting_messages"][0]
    await other_host.send("message_waiting", participant_id=None, text=canned)
    for guest in (ana, ben):
        to_all = await guest.next("waiting_message", text=canned)
        assert to_all["participant_id"] is None
        assert to_all["sender_name"] == "Dr Bo"
    await host.next("waiting_message", text=canned)
    await other_host.next("waiting_message", text=canned)
    assert len(ben.seen("waiting_message")) == 1  # the message to Ana was hers alone

    types = await _text_never_recorded(postgres_dsn, ana_welcome["room_id"], SECRET, canned)
    messaged = [d for t, d in await room_events(postgres_dsn, ana_welcome["room_id"])]
    messaged = [d for d in messaged if "canned" in d]
    assert types.count("WaitingRoomMessaged") == 2
    assert [(d["participant_ids"], d["canned"]) for d in messaged] == [
        ([ana_id], False),
        ([ana_id, ben_id], True),  # in the order they came
    ]


async def test_refusals_of_host_messages(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls)
    host, guest = call.host, call.guest
    await host.send("message_waiting", participant_id=None, text="Hello")
    assert (await host.next("error"))["code"] == "nobody_waiting"
    await host.send("message_waiting", participant_id=call.guest_id, text="Hello")
    assert (await host.next("error"))["code"] == "not_waiting"  # in the call, not waiting
    await host.send("message_waiting", participant_id=str(uuid4()), text="Hello")
    assert (await host.next("error"))["code"] == "participant_not_found"
    await host.send("message_waiting", participant_id=None, text="   ")
    assert (await host.next("error"))["code"] == "empty_message"
    await host.send("message_waiting", participant_id=None, text="x" * 501)
    assert (await host.next("error"))["code"] == "invalid_message"

    for frame in ("message_waiting", "admit_all", "send_to_waiting_room"):
        fields: dict[str, Any] = {"text": "Hi"} if frame == "message_waiting" else {}
        if frame == "send_to_waiting_room":
            fields = {"participant_id": call.guest_id}
        await guest.send(frame, **fields)
        error = await guest.next("error")
        assert (error["code"], error["message"]) == ("only_hosts", "Only a host can do that.")


async def test_hosts_are_rate_limited(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room)
    guest, _ = await knocking_guest(calls, room)
    for n in range(10):  # a burst of ten goes through
        await host.send("message_waiting", text=f"Message {n}")
    await host.send("message_waiting", text="One too many")
    error = await host.next("error")
    assert error["code"] == "messages_too_fast"
    assert "try again" in error["message"]
    await host.latest("waiting_message", text="Message 9")
    got = [f["text"] for f in guest.seen("waiting_message")]
    assert "One too many" not in got
    await guest.latest("waiting_message", text="Message 9")
    assert len(guest.seen("waiting_message")) == 10


async def test_a_guest_replies_only_when_the_clinic_allows_it(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)  # replies are off by default
    host = await host_in_call(calls, room)
    guest, _ = await knocking_guest(calls, room)
    await guest.send("reply_waiting", text="OK")
    error = await guest.next("error")
    assert error == error | {
        "code": "replies_off",
        "message": "This clinic does not take replies in the waiting room.",
    }
    assert not host.seen("waiting_message")

    allowing = await practitioner_room(calls, call={"guest_replies": True})
    host = await host_in_call(calls, allowing, replica=0)
    second_host = await host_in_call(calls, allowing, replica=1, name="Dr Bo")
    guest, welcome = await knocking_guest(calls, allowing, "Ana", replica=1)
    await host.send("message_waiting", participant_id=welcome["participant_id"], text="5 min")
    await guest.next("waiting_message")
    await guest.send("reply_waiting", text=SECRET)
    for reader in (host, second_host, guest):  # the guest sees their own reply in the thread
        reply = await reader.next("waiting_message", from_role="guest")
        assert (reply["participant_id"], reply["sender_name"], reply["text"]) == (
            welcome["participant_id"],
            "Ana",
            SECRET,
        )
    await guest.send("reply_waiting", text="x" * 201)
    assert (await guest.next("error"))["code"] == "invalid_message"

    for n in range(2):  # three in a burst, then one every ten seconds
        await guest.send("reply_waiting", text=f"Reply {n}")
    await guest.send("reply_waiting", text="Too soon")
    assert (await guest.next("error"))["code"] == "messages_too_fast"
    await host.latest("waiting_message", text="Reply 1")
    assert "Too soon" not in [f["text"] for f in host.seen("waiting_message")]

    types = await _text_never_recorded(postgres_dsn, welcome["room_id"], SECRET)
    assert types.count("WaitingGuestReplied") == 3

    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    await guest.send("reply_waiting", text="In now")
    assert (await guest.next("error"))["code"] == "not_waiting"


async def test_admit_all_lets_everyone_waiting_in_in_the_order_they_came(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room)
    guests = [await knocking_guest(calls, room, f"G{n}", replica=n % 2) for n in range(3)]
    held_id = guests[1][1]["participant_id"]
    await host.latest("room", waiting=lambda w: len(w) == 3)
    await host.send("hold", participant_id=held_id, message="")
    await host.latest("room", waiting=lambda w: any(g["on_hold"] for g in w))

    await host.send("admit_all")
    for guest, _ in guests:
        await guest.next("admitted")
    await host.latest("room", waiting=[], participants=lambda p: len(p) == 4)
    events = await room_events(postgres_dsn, guests[0][1]["room_id"])
    admitted = [d["participant_id"] for t, d in events if t == "ParticipantAdmitted"]
    assert admitted == [w["participant_id"] for _, w in guests]

    await host.send("admit_all")
    assert (await host.next("error"))["code"] == "nobody_waiting"


async def test_admit_all_seats_whoever_fits_and_tells_the_rest(calls: Calls) -> None:
    room = await practitioner_room(calls, max_participants=3)  # two guests and the host
    host = await host_in_call(calls, room)
    guests = [await knocking_guest(calls, room, f"G{n}", replica=n % 2) for n in range(4)]
    await host.latest("room", waiting=lambda w: len(w) == 4)

    await host.send("admit_all")
    for guest, _ in guests[:2]:
        await guest.next("admitted")
    refused_ids = set()
    for guest, welcome in guests[2:]:
        full = await guest.latest("waiting", state="room_full")
        assert "full" in full["message"]
        assert not guest.seen("admitted")
        refused_ids.add(welcome["participant_id"])
    told = {f["participant_id"] for f in host.seen("seat_refused")}
    assert told == refused_ids
    view = await host.latest("room", participants=lambda p: len(p) == 3)
    assert {g["participant_id"] for g in view["waiting"]} == refused_ids


async def _holders(calls: Calls, guest: Browser, welcome: dict[str, Any]) -> set[str]:
    """Who holds a seat in the guest's room on the media node (asked with a probe seat that
    is given back at once)."""
    signaling = calls.signalings[0]
    room_id = UUID(welcome["room_id"])
    clinic_id = next(
        c.clinic_id
        for s in calls.signalings
        for c in s.replica.local.get(room_id, {}).values()
        if c.clinic_id
    )
    probe = uuid4()
    answer = await signaling.seats.seat_in(clinic_id, room_id, probe, CallRole.guest, 16, None)
    await signaling.seats.release(clinic_id, room_id, probe)
    return {str(p) for p in answer.holders} - {str(probe)}


async def test_a_guest_sent_back_waits_without_a_seat_and_can_be_admitted_again(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    host, guest, gid = call.host, call.guest, call.guest_id
    assert gid in await _holders(calls, guest, call.welcome)

    await host.send("send_to_waiting_room", participant_id=gid, message=SECRET)
    back = await guest.next("waiting", state="sent_back")
    assert back["message"] == SECRET
    view = await host.latest("room", participants=lambda p: len(p) == 1)
    assert [(g["participant_id"], g["attended"]) for g in view["waiting"]] == [(gid, True)]
    assert gid not in await _holders(calls, guest, call.welcome)  # released before the answer

    await host.send("send_to_waiting_room", participant_id=gid)
    assert (await host.next("error"))["code"] == "not_in_call"
    host_id = (host.seen("welcome")[0])["participant_id"]
    await host.send("send_to_waiting_room", participant_id=host_id)
    assert (await host.next("error"))["code"] == "send_back_self"

    await host.send("admit", participant_id=gid)
    await guest.next("admitted")  # a new token for a new seat: media comes back
    await guest.latest("participants", participants=lambda p: len(p) == 2)
    await host.latest("room", waiting=[], participants=lambda p: len(p) == 2)

    async def seated_again() -> bool:
        return gid in await _holders(calls, guest, call.welcome)

    await eventually(seated_again)
    await host.send("send_to_waiting_room", participant_id=gid)  # again, with no message
    again = await guest.next("waiting", state="sent_back")
    assert "waiting room" in again["message"]

    events = await room_events(postgres_dsn, call.welcome["room_id"])
    sent = [d for t, d in events if t == "ParticipantSentToWaitingRoom"]
    assert [d["participant_id"] for d in sent] == [gid, gid]
    assert sent[0]["message"] == SECRET  # personal data, as a hold's message is
    assert [t for t, _ in events].count("ParticipantLeft") == 0


async def test_a_host_cannot_be_sent_back(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    other = await host_in_call(calls, room, replica=1, name="Dr Bo")
    other_id = other.seen("welcome")[0]["participant_id"]
    await host.latest("room", participants=lambda p: len(p) == 2)
    await host.send("send_to_waiting_room", participant_id=other_id)
    error = await host.next("error")
    assert error["code"] == "cannot_send_back_host"
    view = await host.latest("room")
    assert other_id in [p["participant_id"] for p in view["participants"]]
