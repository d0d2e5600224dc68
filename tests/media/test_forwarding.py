"""Media through the SFU with real aiortc peers, each in its own process, on loopback.

Each peer publishes a synthetic VP8 picture and an Opus tone, receives everyone else's and
decodes it (counting aiortc's decode errors). Tokens are minted here as signaling would.
"""

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from nats.aio.client import Client as NATS

from contracts.media import (
    MediaSignal,
    MediaSignalReply,
    RecordingAction,
    RecordingCommand,
    RecordingReply,
    SeatRelease,
    SignalKind,
    record_subject,
    signal_subject,
)
from runtime.embedded import NatsServer
from tests.media.conftest import Node, running
from tests.media.peers import (
    peer_process,
)
from tests.media.rooms import CLINIC, Room, first_video_from_each, nats_url_of, receiving
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(
        postgres_dsn, nats_server.url, recordings_dir=tmp_path, silence_timeout_s=3.0
    ) as started:
        yield started


async def test_three_participants_receive_each_other_with_no_decode_errors(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer() as a, room.peer() as b, room.peer() as c:
        peers = {p.config["participant_id"]: p for p in (a, b, c)}
        for pid, peer in peers.items():
            await receiving(peer, [other for other in peers if other != pid])
        reports = [await p.stop() for p in (a, b, c)]
    for report in reports:
        assert report["decode_errors"] == 0
        assert len([t for t in report["tracks"].values() if t["kind"] == "video"]) == 2


async def test_a_late_joiner_decodes_its_first_frame_within_a_second(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer() as a, room.peer() as b:
        await receiving(a, [b.config["participant_id"]])
        async with room.peer(publish=[]) as late:
            await first_video_from_each(late, [a, b], within_s=1.0)
            report = await late.stop()
    assert report["decode_errors"] == 0


async def test_twenty_concurrent_joins_get_exactly_sixteen_seats(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    people = [uuid.uuid4() for _ in range(20)]
    granted = await asyncio.gather(*(room.seat(p) for p in people))
    assert sum(granted) == 16
    seated = [p for p, ok in zip(people, granted, strict=True) if ok]
    refused = [p for p, ok in zip(people, granted, strict=True) if not ok]
    # A refused person's token does not get media either: no seat, no connection.
    async with peer_process(room.config(refused[0], publish=[])) as outsider:
        assert await outsider.exited(timeout=20) == 3
        assert outsider.find("refused")["reason"] == "no_seat"
    # The seated ones connect (all at once) and each holds one of the 16.
    async with contextlib.AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(peer_process(room.config(p, publish=[])))
            for p in seated[:6]
        ]
        for peer in peers:
            await peer.wait_for("ready", timeout=30)
    assert node.media.ledger.taken(room.room_id, node.media.clock()) == 16


async def test_a_token_for_another_room_or_node_or_expired_is_refused(node: Node, nc: NATS) -> None:
    room = Room(node, nats_url_of(node))
    pid = uuid.uuid4()
    assert await room.seat(pid)

    async def offer(token: str, room_id: uuid.UUID = room.room_id) -> MediaSignalReply:
        signal = MediaSignal(
            participant_token=token,
            participant_id=pid,
            room_id=room_id,
            kind=SignalKind.offer,
            sdp="v=0\r\n",
        )
        reply = await nc.request(signal_subject(node.node_id), signal.model_dump_json().encode())
        return MediaSignalReply.model_validate_json(reply.data)

    other_room = await offer(room.token(pid, room_id=uuid.uuid4()))
    assert (other_room.ok, other_room.reason) == (False, "token_invalid")
    assert "another room" in other_room.message
    expired = room.token(pid, ttl_s=1, now=1_000_000)
    assert (await offer(expired)).message.endswith("expired.")
    someone_else = room.token(uuid.uuid4())
    assert "someone else" in (await offer(someone_else)).message
    forged = room.token(pid)[:-4] + "AAAA"
    assert (await offer(forged)).reason == "token_invalid"
    # A token that checks out, with an offer that is not SDP: refused, and no seat leaks.
    bad_sdp = await offer(room.token(pid))
    assert (bad_sdp.ok, bad_sdp.reason) == (False, "sdp_invalid")
    assert node.media.sfu.member(pid) is None


async def test_an_offer_with_no_codec_the_node_forwards_is_refused(node: Node, nc: NATS) -> None:
    room = Room(node, nats_url_of(node))
    pid = uuid.uuid4()
    assert await room.seat(pid)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio", direction="sendrecv")
    pcmu = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
    transceiver.setCodecPreferences(pcmu)  # G.711 only: not forwarded
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    signal = MediaSignal(
        participant_token=room.token(pid),
        participant_id=pid,
        room_id=room.room_id,
        kind=SignalKind.offer,
        sdp=pc.localDescription.sdp,
    )
    reply = await nc.request(
        signal_subject(node.node_id), signal.model_dump_json().encode(), timeout=10
    )
    refused = MediaSignalReply.model_validate_json(reply.data)
    await pc.close()
    assert (refused.ok, refused.reason) == (False, "codec_unsupported")
    assert "Opus" in refused.message
    assert node.media.sfu.member(pid) is None


async def test_a_publisher_that_vanishes_without_bye_is_cleaned_up(node: Node) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer() as stays:
        async with room.peer(vanish=True) as vanishing:
            gone = vanishing.config["participant_id"]
            await receiving(stays, [gone], frames=5)
            before = stays.latest_stats()["renegotiations"]
            vanishing.kill()
        # Its media stopped: the node closes its connection and tells the other to stop
        # receiving it (a new offer without its tracks, answered).

        async def cleaned() -> bool:
            return node.media.sfu.member(uuid.UUID(gone)) is None

        await eventually(cleaned, timeout=20, what="the vanished publisher's connection closed")
        staying = node.media.sfu.member(uuid.UUID(stays.config["participant_id"]))
        assert staying is not None
        # Its seat stays until signaling releases it (the rejoin grace): the other keeps its
        # m-lines, silent, for when it comes back, and is offered nothing.
        await asyncio.sleep(2)
        assert stays.latest_stats()["renegotiations"] == before
        assert uuid.UUID(gone) in {o.publication.owner.participant_id for o in staying.outgoing}
        assert node.media.sfu.counters()["forwards"] == 0  # nothing left to forward

        release = SeatRelease(
            clinic_id=CLINIC, room_id=room.room_id, participant_id=uuid.UUID(gone)
        )
        assert (await node.release(release)).released == 1
        assert node.media.ledger.taken(room.room_id, node.media.clock()) == 1

        async def told() -> bool:
            sent = [o.publication.owner.participant_id for o in staying.outgoing]
            answered = stays.latest_stats()["renegotiations"] > before
            return answered and uuid.UUID(gone) not in sent

        await eventually(told, what="the other participant answered an offer without its tracks")


async def test_a_publisher_far_above_the_bitrate_is_cut_with_a_reason(
    postgres_dsn: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    async with running(
        postgres_dsn, nats_server.url, max_publish_kbps=500, over_bitrate_s=2.0
    ) as small:
        room = Room(small, nats_server.url)
        async with room.peer(source="big", publish=["video"]) as loud:
            bye = await loud.wait_for("bye", timeout=30)
    assert bye["reason"] == "bitrate_exceeded"
    assert "kbit/s" in bye["message"]


async def test_a_ten_second_call_is_recorded_to_one_mp4(node: Node, nc: NATS) -> None:
    room = Room(node, nats_url_of(node))
    recording_id = uuid.uuid4()
    async with room.peer() as a, room.peer() as b:
        await receiving(a, [b.config["participant_id"]], frames=5)
        command = RecordingCommand(
            clinic_id=CLINIC,
            room_id=room.room_id,
            recording_id=recording_id,
            action=RecordingAction.start,
        )
        reply = await nc.request(record_subject(node.node_id), command.model_dump_json().encode())
        assert RecordingReply.model_validate_json(reply.data).ok
        await asyncio.sleep(10)
        stop = command.model_copy(update={"action": RecordingAction.stop})
        await nc.request(record_subject(node.node_id), stop.model_dump_json().encode())
        reports = [await a.stop(), await b.stop()]
    assert all(r["decode_errors"] == 0 for r in reports)  # recording did not disturb the call
    path = node.media.recordings.path_of(CLINIC, recording_id)

    async def written() -> bool:
        row = await node.ctx.pool.fetchrow(
            "SELECT status FROM recordings WHERE recording_id = $1", recording_id
        )
        return row is not None and row["status"] == "available"

    await eventually(written, timeout=30, what="the recording's MP4")
    with av.open(io.BytesIO(path.read_bytes())) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 1
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        duration = float(container.duration or 0) / av.time_base
        pictures = sum(1 for _ in container.decode(video=0))
    assert 9.0 <= duration <= 11.5, duration
    assert pictures >= 9 * 15 * 0.8
