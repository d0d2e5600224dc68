"""What the packet path does for real aiortc peers, each in its own process: retransmission
after loss (RTX or not), sender and receiver reports, the loudest-speakers gate, H.264 late
joiners, and nothing left behind when people leave or vanish."""

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime.embedded import NatsServer
from services.media.rtp import parse
from tests.media.conftest import Node, running
from tests.media.peers import PeerProcess, peer_process
from tests.media.rooms import Room, first_video_from_each, frames_from, nats_url_of, receiving
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(
        postgres_dsn, nats_server.url, recordings_dir=tmp_path, loudest_speakers=2
    ) as started:
        yield started


def tracks(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [t for t in report["tracks"].values() if t["kind"] == kind]


@pytest.mark.parametrize("rtx", [True, False], ids=["rtx", "plain"])
async def test_packets_a_subscriber_lost_are_resent_after_its_nack(node: Node, rtx: bool) -> None:
    room = Room(node, nats_url_of(node))
    async with (
        room.peer() as publisher,
        room.peer(publish=[], drop_video_every=7, rtx=rtx) as lossy,
    ):
        await receiving(lossy, [publisher.config["participant_id"]], frames=45)
        report = await lossy.stop()
    (video,) = tracks(report, "video")
    assert video["dropped_on_purpose"] >= 20
    assert video["nacks_sent"] >= 1
    # Every packet dropped on the way in came again, except perhaps the last few in flight.
    assert video["recovered"] >= video["dropped_on_purpose"] - 3
    if rtx:
        assert video["retransmissions_received"] >= video["recovered"]
    else:
        assert video["retransmissions_received"] == 0
    assert video["rtx_discarded"] == 0
    assert report["decode_errors"] == 0
    assert node.media.sfu.counters()["resent"] >= video["recovered"]


async def test_sender_reports_follow_each_tracks_clock_and_publishers_get_receiver_reports(
    node: Node,
) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer() as publisher, room.peer(publish=[]) as viewer:
        await receiving(viewer, [publisher.config["participant_id"]], frames=15)
        first = {t["kind"]: t["last_sr"] for t in viewer.latest_stats()["tracks"].values()}

        async def later_reports() -> bool:
            now = viewer.latest_stats()["tracks"].values()
            return all(
                t["last_sr"]
                and t["last_sr"]["ntp_timestamp"] > first[t["kind"]]["ntp_timestamp"] + (2 << 32)
                for t in now
            )

        assert all(first.values()), first
        await eventually(later_reports, timeout=20, what="sender reports 2 s apart")
        stats = viewer.latest_stats()
        published = publisher.latest_stats()["published"]
    for track in stats["tracks"].values():
        before, after = first[track["kind"]], track["last_sr"]
        seconds = (after["ntp_timestamp"] - before["ntp_timestamp"]) / (1 << 32)
        ticks = (after["rtp_timestamp"] - before["rtp_timestamp"]) % (1 << 32)
        clock = 90_000 if track["kind"] == "video" else 48_000
        assert ticks / seconds == pytest.approx(clock, rel=0.05), track
        assert 0 < after["packet_count"] <= track["packets"] + 60
        assert after["packet_count"] >= track["packets"] * 0.8
    for kind in ("audio", "video"):
        assert published[kind]["receiver_reports"] >= 2, published
        assert published[kind]["fraction_lost"] == 0
    # The node's REMB is the least of its cap and its viewers' own estimates: the cap while
    # the viewer's estimate is above it, the viewer's when it dips (as under load).
    cap = node.media.settings.max_forward_kbps * 1000
    assert 0 < published["video"]["remb_bps"] <= cap, published["video"]


async def test_only_the_loudest_voices_are_forwarded_and_a_quiet_one_resumes_cleanly(
    node: Node,
) -> None:
    room = Room(node, nats_url_of(node))
    speaking_from = 4.0
    async with (
        room.peer(source="loop") as talker,
        room.peer(source="loop", speaking=[]) as silent,
        room.peer(source="loop", speaking=[[speaking_from, 3600]], voice_level=10) as late,
        room.peer(publish=[]) as listener,
    ):
        ids = [p.config["participant_id"] for p in (talker, silent, late)]
        await receiving(listener, [ids[0]], frames=20)

        def audio(peer: PeerProcess, pid: str) -> int:
            return frames_from(peer, pid, "audio")

        assert audio(listener, ids[1]) == 0
        assert audio(listener, ids[2]) == 0

        async def late_heard() -> bool:
            return audio(listener, ids[2]) >= 50

        await eventually(late_heard, timeout=20, what="the late speaker's voice")
        before = audio(listener, ids[0])
        await asyncio.sleep(1.0)
        assert audio(listener, ids[0]) > before  # two voices fit: the first keeps speaking
        assert audio(listener, ids[1]) == 0
        report = await listener.stop()
    assert report["decode_errors"] == 0
    for track in tracks(report, "audio"):
        assert track["gaps"] == 0, track  # a voice that resumes continues its numbering
    # Video is never gated.
    assert all(t["frames"] > 0 for t in tracks(report, "video"))


async def test_a_late_joiner_decodes_h264_from_every_publisher(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    async with (
        room.peer(source="loop", video_codec="h264") as a,
        room.peer(source="loop", video_codec="h264") as b,
    ):
        await receiving(a, [b.config["participant_id"]])
        async with room.peer(publish=[]) as late:
            await first_video_from_each(late, [a, b], within_s=1.0)
            await receiving(late, [a.config["participant_id"], b.config["participant_id"]])
            report = await late.stop()
    assert report["decode_errors"] == 0


def open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


async def test_leaving_and_vanishing_leave_no_socket_or_forwarding_entry_behind(node: Node) -> None:
    sfu = node.media.sfu
    sockets = open_sockets()
    room = Room(node, nats_url_of(node))
    async with room.peer() as stays:
        async with room.peer() as leaves, room.peer(vanish=True) as vanishes:
            everyone = [p.config["participant_id"] for p in (stays, leaves, vanishes)]
            for peer in (stays, leaves):
                others = [p for p in everyone if p != peer.config["participant_id"]]

                async def seeing(peer: PeerProcess = peer, others: list[str] = others) -> bool:
                    return all(frames_from(peer, p, "video") >= 5 for p in others)

                await eventually(seeing, timeout=20, what="video from both others")
            assert sfu.counters()["forwards"] == 3 * 2 * 2  # 3 people x 2 tracks x 2 others
            await leaves.stop()  # mid-stream, saying bye
            vanishes.kill()  # mid-stream, saying nothing

            async def alone() -> bool:
                return set(sfu.rooms[room.room_id].members) == {uuid.UUID(everyone[0])}

            await eventually(alone, timeout=20, what="the two others gone from the node")
        assert sfu.counters()["forwards"] == 0
        await stays.stop()

    async def empty() -> bool:
        return room.room_id not in sfu.rooms

    await eventually(empty, what="the room gone")
    deadline = time.monotonic() + 10
    while open_sockets() > sockets and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert open_sockets() <= sockets


async def test_packets_lost_on_the_way_in_are_asked_for_and_forwarded_when_they_come(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    sfu = node.media.sfu
    ingress = sfu._ingress
    seen: dict[int, int] = {}

    def lossy(member: Any, data: bytes, now: float) -> None:
        # Every 10th new video packet of the publisher is lost between it and the node.
        view = parse(data)
        if view.payload_type in {u.payload_type for u in video_upstreams(member)}:
            seen[view.ssrc] = seen.get(view.ssrc, 0) + 1
            if seen[view.ssrc] % 10 == 0:
                return
        ingress(member, data, now)

    monkeypatch.setattr(sfu, "_ingress", lossy)
    room = Room(node, nats_url_of(node))
    async with room.peer(source="loop") as publisher, room.peer(publish=[]) as viewer:
        pid = publisher.config["participant_id"]

        async def enough() -> bool:
            return frames_from(viewer, pid, "video") >= 60

        await eventually(enough, timeout=30, what="60 frames despite the losses")
        member = sfu.member(uuid.UUID(pid))
        assert member is not None
        repaired = member.repaired
        report = await viewer.stop()
    assert sum(seen.values()) >= 100
    assert repaired >= sum(seen.values()) // 10 - 5  # each loss came back as RTX
    assert report["decode_errors"] == 0


def video_upstreams(member: Any) -> list[Any]:
    return [p.upstream for p in member.publications if p.kind == "video" and p.upstream]


async def test_a_publisher_who_reconnects_stays_one_stream_for_the_others(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    pid = uuid.uuid4()
    assert await room.seat(pid)
    config = room.config(pid, source="loop")
    async with room.peer(publish=[]) as viewer, peer_process(config) as first:
        await first.wait_for("ready", timeout=20)
        await receiving(viewer, [str(pid)], frames=15)
        renegotiations = viewer.latest_stats()["renegotiations"]
        mids = {
            m for m, t in viewer.latest_stats()["tracks"].items() if t["participant_id"] == str(pid)
        }
        # The page reloads: a new connection for the same person, while the old one is open.
        async with peer_process(config) as second:
            await second.wait_for("ready", timeout=20)
            before = frames_from(viewer, str(pid), "video")

            async def continues() -> bool:
                return frames_from(viewer, str(pid), "video") >= before + 30

            await eventually(continues, timeout=20, what="the reconnected publisher's video")
            report = await viewer.stop()
    assert report["renegotiations"] == renegotiations  # nobody else had to negotiate again
    for mid in mids:
        track = report["tracks"][mid]
        assert track["gaps"] == 0, track  # the same SSRC, its numbering unbroken
    assert report["decode_errors"] == 0


async def test_a_publisher_whose_connection_was_lost_comes_back_on_the_same_m_lines(
    node: Node,
) -> None:
    room = Room(node, nats_url_of(node))
    pid = uuid.uuid4()
    assert await room.seat(pid)
    config = room.config(pid, source="loop")
    async with room.peer(publish=[]) as viewer:
        async with peer_process(config | {"vanish": True}) as first:
            await first.wait_for("ready", timeout=20)
            await receiving(viewer, [str(pid)], frames=15)
            renegotiations = viewer.latest_stats()["renegotiations"]
            mids = {
                m
                for m, t in viewer.latest_stats()["tracks"].items()
                if t["participant_id"] == str(pid)
            }
            first.kill()  # the network went: no bye, no DTLS close

        async def lost() -> bool:
            return node.media.sfu.member(pid) is None

        await eventually(lost, timeout=30, what="the node to notice the lost connection")
        # Back within their seat: a new connection, the same m-lines for the viewer.
        async with peer_process(config) as second:
            await second.wait_for("ready", timeout=20)
            before = frames_from(viewer, str(pid), "video")

            async def continues() -> bool:
                return frames_from(viewer, str(pid), "video") >= before + 30

            await eventually(continues, timeout=20, what="the publisher's video again")
            report = await viewer.stop()
    assert report["renegotiations"] == renegotiations  # no offer when it went, none when back
    assert {m for m, t in report["tracks"].items() if t["participant_id"] == str(pid)} == mids
    for mid in mids:
        track = report["tracks"][mid]
        assert track["gaps"] == 0, track  # the same SSRC, its numbering unbroken
    assert report["decode_errors"] == 0
