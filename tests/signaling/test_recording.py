"""Recording a call through signaling: only hosts start and stop it, everyone in the room
(waiting guests too) is told, the node writes an MP4 the clinic downloads through a signed,
expiring URL, and ending the call stops the recording."""

import asyncio
import io
import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import av
import pytest

from runtime.embedded import NatsServer
from runtime.pagination import encode_cursor
from services.media import recordings
from services.media.recorder import Recorder, playable_duration
from tests.links.conftest import Clock
from tests.signaling.conftest import (
    PARTICIPANT_KEY,
    Calls,
    calls_platform,
    host_and_admitted_guest,
    knocking_guest,
    query,
    room_events,
)
from tests.support import assert_problem, eventually

AT_ONCE = {"recording_consent": "notice"}
"""The clinic's recording policy in these tests of the recording itself: it starts at once,
with a notice (test_recording_consent.py asks everyone first)."""


async def recording_available(dsn: str, recording_id: str, status: str = "available") -> None:
    """Wait until the node has written the recording's file (and it is ``status``)."""

    async def available() -> bool:
        rows = await query(
            dsn, "SELECT status FROM media.recordings WHERE recording_id = $1", recording_id
        )
        return bool(rows) and rows[0]["status"] == status

    await eventually(available, timeout=30, what=f"the recording {status}")


async def media_events(dsn: str, recording_id: str) -> list[str]:
    return [kind for kind, _ in await media_events_with_data(dsn, recording_id)]


async def media_events_with_data(dsn: str, recording_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await query(
        dsn,
        "SELECT type, data FROM media.events WHERE stream_id = $1 ORDER BY version",
        f"recording-{recording_id}",
    )
    return [(r["type"], json.loads(r["data"])) for r in rows]


def recorder_of(recording_id: str) -> multiprocessing.process.BaseProcess:
    """The child process that writes the recording."""
    (child,) = [p for p in multiprocessing.active_children() if recording_id in p.name]
    return child


async def test_a_host_records_everyone_is_told_and_the_clinic_downloads_the_mp4(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, call=AT_ONCE)
    waiting, _ = await knocking_guest(calls, call.room, name="Later", replica=0)

    await call.guest.send("start_recording")
    refused = await call.guest.next("error")
    assert refused["code"] == "only_hosts"

    await call.host.send("start_recording")
    for browser in (call.host, call.guest, waiting):
        told = await browser.next("recording", on=True)
        assert told["message"].startswith("This call is being recorded.")
    await call.host.send("start_recording")
    assert (await call.host.next("error"))["code"] == "already_recording"

    room_id = call.welcome["room_id"]
    started = [d for t, d in await room_events(postgres_dsn, room_id) if t == "RecordingStarted"]
    assert len(started) == 1
    recording_id = started[0]["recording_id"]
    await asyncio.sleep(1.5)  # a recording with no media yet is a black, silent picture

    await call.host.send("stop_recording")
    for browser in (call.host, call.guest, waiting):
        await browser.next("recording", on=False)

    await recording_available(postgres_dsn, recording_id)
    assert await media_events(postgres_dsn, recording_id) == ["RecordingAvailable"]

    clinic = call.room.clinic.clinic
    listed = await calls.media.get("/v1/recordings", headers=clinic.headers)
    assert listed.status_code == 200
    assert [r["recording_id"] for r in listed.json()["items"]] == [recording_id]
    assert listed.json()["items"][0]["room_id"] == room_id
    for forged in (["9999-12-31T22:00:00-14:00", recording_id], ["2026-01-01T00:00Z", "x"]):
        cursor = encode_cursor(*forged)
        refused = await calls.media.get(
            "/v1/recordings", params={"cursor": cursor}, headers=clinic.headers
        )
        assert refused.status_code == 400, refused.text  # it was a 500
        assert refused.json()["code"] == "invalid_cursor"

    link = await calls.media.post(f"/v1/recordings/{recording_id}/download", headers=clinic.headers)
    assert link.status_code == 200, link.text
    url = urlsplit(link.json()["url"])
    got = await calls.media.get(f"{url.path}?{url.query}")  # no API key: the URL is enough
    assert got.status_code == 200
    assert got.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(got.content)) as container:
        kinds = sorted(s.type for s in container.streams)
        assert kinds == ["audio", "video"]
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


async def test_download_urls_are_signed_expire_and_stay_in_their_clinic(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, call=AT_ONCE)
    await call.host.send("start_recording")
    await call.host.next("recording", on=True)
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    recording_id = next(d for t, d in events if t == "RecordingStarted")["recording_id"]
    clinic = call.room.clinic.clinic

    still = await calls.media.post(
        f"/v1/recordings/{recording_id}/download", headers=clinic.headers
    )
    assert_problem(still, 409, "still_recording")

    await call.host.send("stop_recording")
    await call.host.next("recording", on=False)

    await recording_available(postgres_dsn, recording_id)

    other = (await calls.clinic()).clinic
    for path in (f"/v1/recordings/{recording_id}", f"/v1/recordings/{recording_id}/download"):
        method = "GET" if path.endswith(recording_id) else "POST"
        response = await calls.media.request(method, path, headers=other.headers)
        assert_problem(response, 404, "recording_not_found")
    assert (await calls.media.get("/v1/recordings", headers=other.headers)).json()["items"] == []
    assert_problem(await calls.media.get("/v1/recordings"), 401)

    answer = await calls.media.post(
        f"/v1/recordings/{recording_id}/download", headers=clinic.headers
    )
    assert answer.headers["cache-control"] == "no-store"  # no cache keeps the signed URL
    link = answer.json()
    url = urlsplit(link["url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    forged = f"{url.path}?expires={int(query['expires']) + 3600}&signature={query['signature']}"
    assert_problem(await calls.media.get(forged), 403, "bad_signature")
    past = int(time.time()) - 5
    key = recordings.download_key(PARTICIPANT_KEY)
    expired = recordings.sign(key, UUID(recording_id), past)
    old = f"{url.path}?expires={past}&signature={expired}"
    assert_problem(await calls.media.get(old), 410, "link_expired")
    assert (await calls.media.get(f"{url.path}?{url.query}")).status_code == 200


async def test_ending_the_call_stops_the_recording(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls, call=AT_ONCE)
    await call.host.send("start_recording")
    await call.guest.next("recording", on=True)
    await call.host.send("end_for_all")
    await call.guest.next("ended")
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    types = [t for t, _ in events]
    assert types.index("RecordingStopped") < types.index("SessionEnded")
    stopped = next(d for t, d in events if t == "RecordingStopped")
    assert stopped["because"] == "session_ended"

    await recording_available(postgres_dsn, stopped["recording_id"])


async def test_a_recording_whose_recorder_is_killed_is_kept_as_partial(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, call=AT_ONCE)
    await call.host.send("start_recording")
    await call.host.next("recording", on=True)
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    recording_id = next(d for t, d in events if t == "RecordingStarted")["recording_id"]
    child = recorder_of(recording_id)
    await asyncio.sleep(3.0)  # a black, silent picture: nobody sends media
    child.kill()

    await recording_available(postgres_dsn, recording_id, status="partial")
    ((kind, event),) = await media_events_with_data(postgres_dsn, recording_id)
    assert kind == "RecordingAvailable"
    assert event["partial"] is True
    assert "stopped unexpectedly" in event["reason"]
    clinic = call.room.clinic.clinic
    view = (await calls.media.get(f"/v1/recordings/{recording_id}", headers=clinic.headers)).json()
    assert view["status"] == "partial"
    assert 2.0 <= view["duration_s"] <= 3.2
    assert view["duration_s"] == pytest.approx(event["duration_s"])
    assert view["failure"] == event["reason"]

    link = await calls.media.post(f"/v1/recordings/{recording_id}/download", headers=clinic.headers)
    assert link.status_code == 200, link.text
    url = urlsplit(link.json()["url"])
    got = await calls.media.get(f"{url.path}?{url.query}")
    assert got.status_code == 200
    with av.open(io.BytesIO(got.content)) as container:
        pictures = sum(1 for _ in container.decode(video=0))
    assert pictures >= 2.0 * 15

    # The host's stop, later, finds nothing to stop: the recording stays as it was.
    await call.host.send("stop_recording")
    await call.host.next("recording", on=False)
    await asyncio.sleep(0.5)
    assert await media_events(postgres_dsn, recording_id) == ["RecordingAvailable"]
    again = await calls.media.get(f"/v1/recordings/{recording_id}", headers=clinic.headers)
    assert again.json() == view


async def test_a_node_that_restarts_finishes_what_its_earlier_life_was_recording(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock, tmp_path: Path
) -> None:
    node = {"node_id": f"mrestart{uuid4().hex[:6]}", "recordings_dir": tmp_path}
    async with calls_platform(postgres_dsn, nats_server.url, clock, media_overrides=node):
        pass  # the node's tables, as its earlier life left them
    # That life was killed with two recordings under way: one had written 3 s, the other
    # nothing that plays.
    clinic_id, kept, lost = "clinic-of-a-crash", uuid4(), uuid4()
    folder = tmp_path / clinic_id
    folder.mkdir(mode=0o700)
    recorder = Recorder(folder / f"{kept}.mp4", width=320, height=240)
    recorder.start()
    await asyncio.sleep(3.0)
    recorder_of(str(kept)).kill()
    (folder / f"{lost}.mp4").write_bytes(b"")
    started = datetime.now(UTC) - timedelta(minutes=1)
    for recording_id in (kept, lost):
        await query(
            postgres_dsn,
            "INSERT INTO media.recordings (recording_id, clinic_id, room_id, node_id, "
            "media_url, status, started_at) VALUES ($1, $2, $3, $4, '', 'recording', $5)",
            recording_id,
            clinic_id,
            uuid4(),
            node["node_id"],
            started,
        )

    async with calls_platform(postgres_dsn, nats_server.url, clock, media_overrides=node):
        await recording_available(postgres_dsn, str(kept), status="partial")
        await recording_available(postgres_dsn, str(lost), status="failed")
        (row,) = await query(
            postgres_dsn,
            "SELECT duration_s, size_bytes, stopped_at, failure FROM media.recordings "
            "WHERE recording_id = $1",
            kept,
        )
        assert 2.0 <= row["duration_s"] <= 3.2
        assert row["duration_s"] == pytest.approx(playable_duration(folder / f"{kept}.mp4"))
        assert row["size_bytes"] == (folder / f"{kept}.mp4").stat().st_size
        assert row["stopped_at"] == started + timedelta(seconds=row["duration_s"])
        assert "video server stopped" in row["failure"]
        ((kind, event),) = await media_events_with_data(postgres_dsn, str(kept))
        assert (kind, event["partial"]) == ("RecordingAvailable", True)
        assert [k for k, _ in await media_events_with_data(postgres_dsn, str(lost))] == [
            "RecordingFailed"
        ]


async def test_the_last_one_out_ends_the_call_and_its_recording(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, call=AT_ONCE)
    await call.host.send("start_recording")
    await call.guest.next("recording", on=True)
    room_id = call.welcome["room_id"]
    for browser in (call.guest, call.host):
        await browser.send("leave")
        assert await browser.closed() == 1000

    async def ended() -> bool:
        return "SessionEnded" in [t for t, _ in await room_events(postgres_dsn, room_id)]

    await eventually(ended, what="the call ended")
    events = await room_events(postgres_dsn, room_id)
    types = [t for t, _ in events]
    assert types.index("RecordingStopped") < types.index("SessionEnded")
    stopped = next(d for t, d in events if t == "RecordingStopped")
    assert stopped["because"] == "session_ended"
    assert next(d for t, d in events if t == "SessionEnded")["because"] == "last_left"
    await recording_available(postgres_dsn, stopped["recording_id"])
    assert await media_events(postgres_dsn, stopped["recording_id"]) == ["RecordingAvailable"]
