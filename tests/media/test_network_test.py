"""A media node's side of the pre-call network test, through its endpoints' handlers: the test
token's own audience, the window, the limits, the close after ``network_test_max_s``, and
that a test is no participant (no room, no seat)."""

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from prometheus_client import REGISTRY

from contracts.media import MediaSignal, MediaSignalReply, SignalKind
from contracts.network_test import (
    NETWORK_TEST_AUDIENCE,
    NETWORK_TEST_HOST_SUBJECT,
    ProbeAction,
    ProbeHost,
    ProbeHostRequest,
    ProbeReply,
    ProbeSignal,
    probe_subject,
)
from contracts.signaling import CallRole
from runtime.embedded import NatsServer
from runtime.participant_tokens import mint
from runtime.service import ServiceDefinition, build_app
from services.media import app as media_app
from services.media.config import MediaSettings
from services.media.network_test import unthrottled
from services.media.node import Media
from tests.media.conftest import FAST, PARTICIPANT_KEY, clinic, seat_request
from tests.support import eventually, serving, settings


@dataclass
class ProbingNode:
    media: Media
    definition: ServiceDefinition
    ctx: Any

    async def ask(self, subject: str, request: Any) -> bytes:
        endpoint = next(e for e in self.definition.endpoints if e.subject == subject)
        return await endpoint.answer(self.ctx, request.model_dump_json().encode())

    async def probe(self, signal: ProbeSignal) -> ProbeReply:
        reply = await self.ask(probe_subject(self.media.node_id), signal)
        return ProbeReply.model_validate_json(reply)


@contextlib.asynccontextmanager
async def node(dsn: str, nats_url: str, **config: Any) -> AsyncIterator[ProbingNode]:
    media = Media(settings=MediaSettings(**(FAST | config)), key_source=lambda: PARTICIPANT_KEY)
    definition = media_app.build(media)
    app = build_app(definition, settings(dsn, nats_url))
    async with serving(app):
        ctx = app.state.runtime.context
        placement = await media.placement(ctx)

        async def announced() -> bool:
            return media.node_id in placement.cards

        await eventually(announced, what="the node in its own view")
        yield ProbingNode(media, definition, ctx)


def probe_token(
    n: ProbingNode, test_id: uuid.UUID, room_id: uuid.UUID, *, audience: str = NETWORK_TEST_AUDIENCE
) -> str:
    token, _ = mint(
        PARTICIPANT_KEY,
        participant_id=str(test_id),
        room_id=str(room_id),
        clinic_id="c_test",
        role=CallRole.guest,
        node_id=n.media.node_id,
        ttl_s=15,
        audience=audience,
    )
    return token


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def signal(
    n: ProbingNode, action: ProbeAction, *, test_id: uuid.UUID, room_id: uuid.UUID, **fields: Any
) -> ProbeSignal:
    return ProbeSignal(
        test_id=test_id,
        room_id=room_id,
        test_token=fields.pop("token", None) or probe_token(n, test_id, room_id),
        client_address=fields.pop("address", "192.0.2.1"),
        action=action,
        **fields,
    )


async def test_a_test_connects_echoes_and_is_closed_by_the_node_after_max_s(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    async with node(postgres_dsn, nats_server.url, network_test_max_s=3.0) as n:
        room, test_id = uuid.uuid4(), uuid.uuid4()
        host = ProbeHost.model_validate_json(
            await n.ask(
                NETWORK_TEST_HOST_SUBJECT, ProbeHostRequest(clinic_id=clinic(), room_id=room)
            )
        )
        assert (host.node_id, host.placed, host.max_s) == (n.media.node_id, False, 3.0)
        pc, sdp = await offer_sdp()
        echoed: list[str] = []
        pc.on("track", lambda track: echoed.append(track.kind))
        try:
            started = time.monotonic()
            reply = await n.probe(
                signal(n, ProbeAction.offer, test_id=test_id, room_id=room, sdp=sdp)
            )
            assert reply.ok, reply
            assert reply.answer_sdp is not None
            assert "goog-remb" not in reply.answer_sdp
            assert "x-google-start-bitrate=1500" in reply.answer_sdp
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=reply.answer_sdp, type="answer")
            )
            assert sorted(echoed) == ["audio", "video"]  # sent back on the same connection
            # A test is no participant: no room in the SFU, no seat, no placement.
            assert room not in n.media.sfu.rooms
            assert n.media.ledger.taken(room, n.media.clock()) == 0
            assert await (await n.media.placement(n.ctx)).owner(room) is None

            async def closed_by_the_node() -> bool:
                return pc.connectionState in ("closed", "failed")

            await eventually(closed_by_the_node, timeout=10, what="the node closing the test")
            assert 2.5 < time.monotonic() - started < 8
        finally:
            await pc.close()
        done = await n.probe(signal(n, ProbeAction.finish, test_id=test_id, room_id=room))
        assert done.ok, done
        assert done.uplink is not None
        assert done.uplink.connected_s is not None
        assert done.uplink.connected_s <= 3.0
        assert done.uplink.packets_received > 20
        again = await n.probe(signal(n, ProbeAction.offer, test_id=test_id, room_id=room, sdp=sdp))
        assert (again.ok, again.reason) == (False, "test_used")


async def test_a_test_token_opens_no_call_and_a_call_token_no_test(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    async with node(postgres_dsn, nats_server.url) as n:
        c, room, test_id = clinic(), uuid.uuid4(), uuid.uuid4()
        pc, sdp = await offer_sdp()
        try:
            call_token = probe_token(n, test_id, room, audience="antechamber-media")
            refused = await n.probe(
                signal(
                    n, ProbeAction.offer, test_id=test_id, room_id=room, sdp=sdp, token=call_token
                )
            )
            assert (refused.ok, refused.reason) == (False, "token_invalid")

            granted = await n.media.seat(n.ctx, seat_request(c, room, participant_id=test_id))
            assert b'"granted":true' in granted
            as_a_call = MediaSignal(
                participant_token=probe_token(n, test_id, room),
                participant_id=test_id,
                room_id=room,
                kind=SignalKind.offer,
                sdp=sdp,
            )
            reply = MediaSignalReply.model_validate_json(await n.media.signal(n.ctx, as_a_call))
            assert (reply.ok, reply.reason) == (False, "token_invalid")

            other_room = await n.probe(
                signal(
                    n,
                    ProbeAction.offer,
                    test_id=test_id,
                    room_id=uuid.uuid4(),
                    sdp=sdp,
                    token=probe_token(n, test_id, room),
                )
            )
            assert (other_room.ok, other_room.reason) == (False, "token_invalid")

            expired, _ = mint(
                PARTICIPANT_KEY,
                participant_id=str(test_id),
                room_id=str(room),
                clinic_id=c,
                role=CallRole.guest,
                node_id=n.media.node_id,
                ttl_s=15,
                now=time.time() - 30,
                audience=NETWORK_TEST_AUDIENCE,
            )
            late = await n.probe(
                signal(n, ProbeAction.offer, test_id=test_id, room_id=room, sdp=sdp, token=expired)
            )
            assert (late.ok, late.reason) == (False, "token_invalid")
            assert "expired" in late.message
            assert not n.media.sfu.rooms.get(room)
        finally:
            await pc.close()


async def test_tests_at_once_and_per_address_are_limited(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    async with node(
        postgres_dsn,
        nats_server.url,
        network_tests_at_once=1,
        network_tests_per_address_burst=2,
        network_tests_per_address_per_minute=1,
    ) as n:
        room = uuid.uuid4()
        peers = [await offer_sdp() for _ in range(4)]

        async def offer(peer: int, **fields: Any) -> tuple[uuid.UUID, ProbeReply]:
            test_id = uuid.uuid4()
            step = signal(
                n, ProbeAction.offer, test_id=test_id, room_id=room, sdp=peers[peer][1], **fields
            )
            return test_id, await n.probe(step)

        async def finish(test_id: uuid.UUID) -> None:
            done = await n.probe(signal(n, ProbeAction.finish, test_id=test_id, room_id=room))
            assert done.ok, done

        try:
            first, ok = await offer(0)
            assert ok.ok, ok
            _, busy = await offer(1)
            assert (busy.ok, busy.reason) == (False, "node_busy")
            await finish(first)
            second, ok = await offer(1)
            assert ok.ok, ok  # the first test's place is free again
            await finish(second)
            _, limited = await offer(2)
            assert (limited.ok, limited.reason) == (False, "rate_limited")
            counted = {
                outcome: REGISTRY.get_sample_value(
                    "antechamber_media_network_tests_total",
                    {"node": n.media.node_id, "outcome": outcome},
                )
                for outcome in ("started", "node_busy", "rate_limited")
            }
            assert counted == {"started": 2, "node_busy": 1, "rate_limited": 1}
            elsewhere, ok = await offer(3, address="198.51.100.7")
            assert ok.ok, ok  # another address has its own allowance
            await finish(elsewhere)
        finally:
            for pc, _ in peers:
                await pc.close()


def test_the_answer_asks_for_no_remb_and_a_high_start() -> None:
    answer = (
        "m=video 9 UDP/TLS/RTP/SAVPF 97 99\r\na=rtpmap:97 VP8/90000\r\n"
        "a=rtcp-fb:97 goog-remb\r\na=rtcp-fb:97 nack\r\na=rtpmap:99 H264/90000\r\n"
        "a=fmtp:99 packetization-mode=1\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n"
    )
    assert unthrottled(answer) == (
        "m=video 9 UDP/TLS/RTP/SAVPF 97 99\r\na=rtpmap:97 VP8/90000\r\n"
        "a=fmtp:97 x-google-start-bitrate=1500\r\na=rtcp-fb:97 nack\r\n"
        "a=rtpmap:99 H264/90000\r\na=fmtp:99 packetization-mode=1;x-google-start-bitrate=1500\r\n"
        "a=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n"
    )
