"""Whole flows through two replicas: knock, admit, mute, lock, end for all."""

from uuid import UUID

import pytest
from nats.aio.client import Client as NATS

from contracts.signaling import signaling_events
from runtime.participant_tokens import ParticipantTokenError, verify
from runtime.streams import stream_name
from tests.signaling.conftest import PARTICIPANT_KEY, Calls, practitioner_room
from tests.support import eventually, stream_messages


async def test_a_guest_on_one_replica_is_admitted_by_a_host_on_the_other(calls: Calls) -> None:
    room = await practitioner_room(calls)
    guest = await calls.join(room.room_url, "Grace", replica=1)
    welcome = await guest.next("welcome")
    assert welcome["role"] == "guest"
    assert len(welcome["resume_token"]) >= 43
    waiting = await guest.next("waiting")
    assert waiting["state"] == "waiting_for_host"  # nobody can slip in before the host

    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    assert (await host.next("welcome"))["role"] == "host"
    assert (await host.next("admitted"))["media_node"] == "mtest"
    view = await host.latest("room", waiting=lambda w: len(w) == 1)
    assert view["waiting"][0]["display_name"] == "Grace"
    assert view["waiting"][0]["muted"] is False
    assert (await guest.next("waiting"))["state"] == "host_notified"

    await host.send("admit", participant_id=welcome["participant_id"])
    admitted = await guest.next("admitted")
    claims = verify(PARTICIPANT_KEY, admitted["participant_token"], room_id=welcome["room_id"])
    assert (claims.sub, claims.role, claims.node) == (welcome["participant_id"], "guest", "mtest")
    with pytest.raises(ParticipantTokenError, match="another room"):
        verify(PARTICIPANT_KEY, admitted["participant_token"], room_id=str(UUID(int=1)))
    both = await guest.latest("participants", participants=lambda p: len(p) == 2)
    assert {p["display_name"] for p in both["participants"]} == {"Dr Ada", "Grace"}
    await host.latest("room", waiting=[], participants=lambda p: len(p) == 2)


async def test_knocks_after_the_first_admission_are_muted_until_unmuted(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    await host.next("welcome")
    await host.next("admitted")  # in the call: from now on, knocks alert this host
    first = await calls.join(room.room_url, "First", replica=1)
    first_id = (await first.next("welcome"))["participant_id"]
    assert (await host.next("knock"))["participant_id"] == first_id
    await host.send("admit", participant_id=first_id)
    await first.next("admitted")
    await host.latest("room", knocks_muted=True)

    second = await calls.join(room.room_url, "Second", replica=1)
    second_id = (await second.next("welcome"))["participant_id"]
    view = await host.latest("room", waiting=lambda w: len(w) == 1)
    assert view["waiting"][0] == view["waiting"][0] | {"participant_id": second_id, "muted": True}
    assert [k["participant_id"] for k in host.seen("knock")] == [first_id]  # no alert

    await host.send("unmute_knocks")
    await host.latest("room", knocks_muted=False)
    third = await calls.join(room.room_url, "Third", replica=0)
    third_id = (await third.next("welcome"))["participant_id"]
    assert (await host.next("knock"))["participant_id"] == third_id


async def test_deny_and_hold_carry_the_hosts_message(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    await host.next("welcome")
    held = await calls.join(room.room_url, "Held", replica=1)
    held_id = (await held.next("welcome"))["participant_id"]
    turned = await calls.join(room.room_url, "Turned", replica=1)
    turned_id = (await turned.next("welcome"))["participant_id"]
    await host.latest("room", waiting=lambda w: len(w) == 2)

    await host.send("hold", participant_id=held_id, message="Five more minutes, please.")
    on_hold = await held.next("waiting", state="on_hold")
    assert on_hold["message"] == "Five more minutes, please."
    await host.latest("room", waiting=lambda w: any(g["on_hold"] for g in w))

    await host.send("deny", participant_id=turned_id, message="Please book a session first.")
    assert (await turned.next("denied"))["message"] == "Please book a session first."
    assert await turned.closed() == 1000
    await host.latest("room", waiting=lambda w: [g["participant_id"] for g in w] == [held_id])

    await host.send("admit", participant_id=held_id)  # a held guest can still be let in
    await held.next("admitted")


async def test_a_locked_room_refuses_new_knocks_with_a_reason(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    await host.next("welcome")
    await host.send("lock")
    await host.latest("room", locked=True)
    late = await calls.join(room.room_url, "Late", replica=1)
    refused = await late.next("refused")
    assert (refused["reason"], refused["status"]) == ("room_locked", 423)
    assert "locked" in refused["message"]
    await late.closed()
    await host.send("unlock")
    await host.latest("room", locked=False)
    again = await calls.join(room.room_url, "Late", replica=1)
    await again.next("waiting")


async def test_end_for_all_disconnects_everyone_and_ends_once(calls: Calls, nc: NATS) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    await host.next("welcome")
    await host.next("admitted")  # in the call: from now on, knocks alert this host
    cohost = await calls.join(room.host_url, "Dr Bea", replica=1)
    await cohost.next("welcome")
    guest = await calls.join(room.room_url, "Grace", replica=1)
    guest_id = (await guest.next("welcome"))["participant_id"]
    await host.next("knock", participant_id=guest_id)
    await host.send("admit", participant_id=guest_id)
    await guest.next("admitted")
    waiter = await calls.join(room.room_url, "Still waiting", replica=0)
    await waiter.next("waiting")

    await guest.send("end_for_all")  # not a guest's to do
    assert (await guest.next("error"))["code"] == "only_hosts"

    await host.send("end_for_all", message="Thank you, that is all for today.")
    for browser in (host, cohost, guest, waiter):
        ended = await browser.next("ended")
        assert ended == ended | {"because": "ended_for_all"}
        assert await browser.closed() == 1000

    async def one_end() -> bool:
        ends = [
            m
            for m in await stream_messages(nc.jetstream(), stream_name("signaling"))
            if m.subject.endswith(".SessionEnded") and room.clinic.clinic.clinic_id in m.subject
        ]
        return len(ends) == 1

    await eventually(one_end, what="exactly one SessionEnded on the stream")


async def test_leaving_never_ends_the_meeting_for_others(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Ada", replica=0)
    await host.next("welcome")
    await host.next("admitted")  # in the call: from now on, knocks alert this host
    guest = await calls.join(room.room_url, "Grace", replica=1)
    guest_id = (await guest.next("welcome"))["participant_id"]
    await host.next("knock", participant_id=guest_id)
    await host.send("admit", participant_id=guest_id)
    await guest.next("admitted")

    await host.send("leave")
    assert await host.closed() == 1000
    alone = await guest.latest("participants", participants=lambda p: len(p) == 1)
    assert alone["participants"][0]["display_name"] == "Grace"
    assert not guest.seen("ended")


async def test_events_carry_no_personal_data_in_subjects(calls: Calls, nc: NATS) -> None:
    room = await practitioner_room(calls)
    host = await calls.join(room.host_url, "Dr Unique Name", replica=0)
    await host.next("welcome")
    guest = await calls.join(room.room_url, "Guest Unique Name", replica=1)
    await guest.next("waiting")
    clinic_id = room.clinic.clinic.clinic_id

    async def knocked() -> bool:
        messages = await stream_messages(nc.jetstream(), stream_name("signaling"))
        mine = [m for m in messages if f".{clinic_id}." in m.subject]
        return any(m.subject.endswith(".GuestKnocked") for m in mine)

    await eventually(knocked, what="GuestKnocked published")
    for message in await stream_messages(nc.jetstream(), stream_name("signaling")):
        assert "Unique" not in message.subject
        assert message.subject.split(".")[-1] in {c.event_type() for c in signaling_events}
