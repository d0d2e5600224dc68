"""Screen sharing through signaling: who may share, one share at a time, a host stops anyone's,
and the share ends with its sharer. Everyone in the call sees ``screen_share`` (joiners too);
the events say who, never what was shown."""

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.media import ScreenShareAction, ScreenShareCommand, share_subject
from tests.signaling.conftest import (
    Calls,
    host_and_admitted_guest,
    knocking_guest,
    room_events,
)
from tests.support import eventually

pytestmark = pytest.mark.timeout(120)
ALLOW_GUESTS = {"call": {"guest_screen_share": True}}


def screen_events(events: list[tuple[str, dict[str, object]]]) -> list[tuple[str, object, object]]:
    return [
        (kind, data["participant_id"], data.get("because"))
        for kind, data in events
        if kind.startswith("ScreenShare")
    ]


async def test_a_host_shares_and_a_guest_may_not_unless_the_clinic_allows_it(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    host_id = str((await call.host.latest("welcome"))["participant_id"])
    # Nobody shares yet: both know it.
    await call.guest.latest("screen_share", participant_id=None)
    await call.host.latest("screen_share", participant_id=None)

    await call.guest.send("start_screen_share")
    refused = await call.guest.next("error")
    assert refused["code"] == "screen_share_not_allowed"
    assert "guests" in refused["message"]

    await call.host.send("start_screen_share")
    for browser in (call.host, call.guest):
        shown = await browser.latest("screen_share", participant_id=host_id)
        assert shown["sender_name"] == "Dr Ada"
    room_id = str(call.welcome["room_id"])
    assert screen_events(await room_events(postgres_dsn, room_id)) == [
        ("ScreenShareStarted", host_id, None)
    ]
    # Someone let in mid-share is told at once.
    late, welcome = await knocking_guest(calls, call.room, name="Lin")
    await call.host.send("admit", participant_id=welcome["participant_id"])
    await late.next("admitted")
    await late.latest("screen_share", participant_id=host_id)
    # The sharer stops it; stopping again is refused with a reason.
    await call.host.send("stop_screen_share")
    await call.guest.latest("screen_share", participant_id=None)
    await late.latest("screen_share", participant_id=None)
    await call.host.send("stop_screen_share")
    assert (await call.host.next("error"))["code"] == "not_sharing"
    assert screen_events(await room_events(postgres_dsn, room_id))[-1] == (
        "ScreenShareStopped",
        host_id,
        "stopped",
    )


async def test_a_second_share_is_refused_while_one_is_on(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls, **ALLOW_GUESTS)
    await call.guest.send("start_screen_share")
    await call.host.latest("screen_share", participant_id=call.guest_id)
    await call.host.send("start_screen_share")
    busy = await call.host.next("error")
    assert busy["code"] == "screen_share_busy"
    assert busy["message"] == "Grace is sharing their screen; ask them to stop first."
    # Asking again as the sharer changes nothing and refuses nothing.
    await call.guest.send("start_screen_share")
    await call.guest.send("ping")
    await call.guest.next("pong")
    assert not call.guest.seen("error")
    await call.host.latest("screen_share", participant_id=call.guest_id)


async def test_a_host_stops_a_guests_share_and_a_guest_cannot_stop_a_hosts(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, **ALLOW_GUESTS)
    host_id = str((await call.host.latest("welcome"))["participant_id"])
    await call.guest.send("start_screen_share")
    await call.host.latest("screen_share", participant_id=call.guest_id)
    await call.host.send("stop_screen_share", participant_id=call.guest_id)
    await call.guest.latest("screen_share", participant_id=None)
    events = await room_events(postgres_dsn, str(call.welcome["room_id"]))
    stopped = [data for kind, data in events if kind == "ScreenShareStopped"]
    assert [(d["participant_id"], d["by"], d["because"]) for d in stopped] == [
        (call.guest_id, host_id, "host_stopped")
    ]

    await call.host.send("start_screen_share")
    await call.guest.latest("screen_share", participant_id=host_id)
    await call.guest.send("stop_screen_share", participant_id=host_id)
    assert (await call.guest.next("error"))["code"] == "only_hosts"
    await call.host.send("ping")
    await call.host.next("pong")
    await call.guest.latest("screen_share", participant_id=host_id)


async def test_the_share_ends_when_the_sharer_leaves(
    calls: Calls, postgres_dsn: str, nc: NATS
) -> None:
    # What the media node is told, read off the wire (the node answers; this only listens).
    told: list[ScreenShareCommand] = []

    async def heard(msg: Msg) -> None:
        told.append(ScreenShareCommand.model_validate_json(msg.data))

    listening = await nc.subscribe(share_subject("mtest"), cb=heard)
    await nc.flush()
    call = await host_and_admitted_guest(calls, **ALLOW_GUESTS)
    await call.guest.send("start_screen_share")
    await call.host.latest("screen_share", participant_id=call.guest_id)
    assert [(str(c.participant_id), c.action) for c in told] == [
        (call.guest_id, ScreenShareAction.grant)
    ]
    await call.guest.send("leave")
    await call.host.latest("screen_share", participant_id=None)

    async def revoked() -> bool:
        return [c.action for c in told] == [ScreenShareAction.grant, ScreenShareAction.revoke]

    await eventually(revoked, what="the node told that the share ended")
    await listening.unsubscribe()
    events = await room_events(postgres_dsn, str(call.welcome["room_id"]))
    kinds = [kind for kind, _ in events]
    # Before they leave, so that a reader of the stream never sees a share without a sharer.
    assert kinds.index("ScreenShareStopped") < kinds.index("ParticipantLeft")
    assert screen_events(events)[-1] == ("ScreenShareStopped", call.guest_id, "left")
    # Another may share now.
    await call.host.send("start_screen_share")
    await call.host.latest("screen_share", participant_id=lambda p: p is not None)
