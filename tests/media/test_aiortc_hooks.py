"""The private parts of aiortc the packet path uses, checked against the installed aiortc,
so that an upgrade that moves one fails here (and at a node's start) instead of forwarding
nothing; and the hooks themselves, on two real peer connections in this process."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiortc
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender

from services.media import aiortc_hooks
from services.media._fastpath import Outlet
from services.media.aiortc_hooks import (
    AIORTC_VERSION,
    CLASS_ATTRIBUTES,
    INSTANCE_ATTRIBUTES,
    SRTP_PROTECT,
    IncompatibleAiortc,
    Wire,
    check_aiortc,
    idle_sender,
    negotiated,
    on_rtp,
    srtp_context,
)
from tests.media.rtp_packets import packet
from tests.support import eventually


async def test_the_installed_aiortc_is_the_pinned_one_with_every_hook() -> None:
    assert aiortc.__version__ == AIORTC_VERSION
    check_aiortc()


async def test_a_different_aiortc_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortc, match=r"aiortc 1\.17\.0 is installed"):
        check_aiortc()


@pytest.mark.parametrize(
    ("owner", "name"), CLASS_ATTRIBUTES, ids=lambda x: getattr(x, "__name__", x)
)
async def test_each_method_the_packet_path_replaces_is_checked(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(IncompatibleAiortc, match=name):
        check_aiortc()


@pytest.mark.parametrize(("owner", "name"), INSTANCE_ATTRIBUTES)
async def test_each_attribute_the_packet_path_reads_is_checked(
    monkeypatch: pytest.MonkeyPatch, owner: str, name: str
) -> None:
    renamed = tuple(
        (o, f"{n}_moved" if (o, n) == (owner, name) else n) for o, n in INSTANCE_ATTRIBUTES
    )
    monkeypatch.setattr(aiortc_hooks, "INSTANCE_ATTRIBUTES", renamed)
    with pytest.raises(IncompatibleAiortc, match=f"{name}_moved"):
        check_aiortc()


@contextlib.asynccontextmanager
async def connected_pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    """A node-like connection with an idle sending m-line, and a peer receiving on it."""
    node, peer = RTCPeerConnection(), RTCPeerConnection()
    transceiver = node.addTransceiver("video", direction="sendonly")
    idle_sender(transceiver.sender)
    vp8 = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType in ("video/VP8", "video/rtx")
    ]
    transceiver.setCodecPreferences(vp8)
    try:
        await node.setLocalDescription(await node.createOffer())
        await peer.setRemoteDescription(node.localDescription)
        await peer.setLocalDescription(await peer.createAnswer())
        await node.setRemoteDescription(peer.localDescription)

        async def up() -> bool:
            return node.connectionState == peer.connectionState == "connected"

        await eventually(up, what="the two connections up")
        yield node, peer
    finally:
        await node.close()
        await peer.close()


async def test_a_wire_sends_protected_rtp_the_other_side_decrypts_byte_for_byte() -> None:
    async with connected_pair() as (node, peer):
        received: list[bytes] = []
        on_rtp(peer, lambda data, now: received.append(data))
        node_wire = Wire(node, lambda data, now: None)
        peer_wire = Wire(peer, lambda data, now: received.append(data))
        sent = [packet(bytes([0x10, i]), sequence=i, timestamp=i * 3000) for i in range(20)]
        for data in sent:
            node_wire.send_rtp(data)

        async def all_in() -> bool:
            return len(received) == len(sent)

        await eventually(all_in, what="every packet decrypted")
        assert received == sent
        assert node_wire.sent == len(sent)
        peer_wire.close()
        node_wire.close()


async def test_a_closed_wire_sends_nothing_and_gives_the_sockets_back() -> None:
    async with connected_pair() as (node, peer):
        received: list[bytes] = []
        peer_wire = Wire(peer, lambda data, now: received.append(data))
        node_wire = Wire(node, lambda data, now: None)
        protocols = node_wire._connection._protocols
        hooked = [p.datagram_received for p in protocols]
        node_wire.close()
        node_wire.send_rtp(packet(b"\x10\x00", sequence=1, timestamp=1))
        await asyncio.sleep(0.2)
        assert received == []
        assert node_wire.sent == 0
        assert all(p.datagram_received != h for p, h in zip(protocols, hooked, strict=True))
        peer_wire.close()


def sending_wires(node: RTCPeerConnection, peer: RTCPeerConnection) -> tuple[Wire, Wire]:
    """Wires on both connections, the node's having sent one packet through its C outlet."""
    peer_wire = Wire(peer, lambda data, now: None)
    node_wire = Wire(node, lambda data, now: None)
    node_wire.send_rtp(packet(b"\x10\x00", sequence=1, timestamp=1))
    assert node_wire.outlet.sending
    return node_wire, peer_wire


async def test_a_closed_wire_lets_go_of_its_socket_and_srtp_session_before_the_connection() -> None:
    """The C loop holds a descriptor number and a libsrtp context's address: both go when the
    wire closes, before the connection frees them, and nothing is sent after."""
    async with connected_pair() as (node, peer):
        node_wire, peer_wire = sending_wires(node, peer)
        node_wire.close()
        assert not node_wire.outlet.sending
        assert not node_wire.outlet.protecting
        node_wire.send_rtp(packet(b"\x10\x00", sequence=2, timestamp=2))
        assert node_wire.sent == 1
        peer_wire.close()


async def test_a_socket_lost_under_the_wire_is_dropped_by_the_c_loop_before_it_closes() -> None:
    """asyncio calls ``connection_lost`` before it closes a socket: the outlet stops using
    the descriptor then, so a number the kernel hands out again is never written to."""
    async with connected_pair() as (node, peer):
        node_wire, peer_wire = sending_wires(node, peer)
        pair = node_wire._connection._nominated[1]
        closed_at_loss: list[bool] = []
        lost = pair.protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            closed_at_loss.append(pair.protocol.transport.get_extra_info("socket").fileno() >= 0)
            lost(exc)

        pair.protocol.connection_lost = connection_lost
        pair.protocol.transport.close()

        async def dropped() -> bool:
            return not node_wire.outlet.sending and bool(closed_at_loss)

        await eventually(dropped, what="the outlet closed on the socket's loss")
        assert closed_at_loss == [True]  # the socket was still open when the outlet let go
        for sequence in range(2, 5):
            node_wire.send_rtp(packet(b"\x10\x00", sequence=sequence, timestamp=sequence))
        assert node_wire.outlet.sent == 1
        node_wire.close()
        peer_wire.close()


async def test_an_idle_sender_stops_and_has_its_negotiated_terms() -> None:
    async with connected_pair() as (node, _):
        transceiver = node.getTransceivers()[0]
        terms = negotiated(transceiver)
        assert terms is not None
        assert terms.mid == transceiver.mid
        payload_type = terms.payload_type("video/vp8")
        assert payload_type is not None
        assert terms.rtx_for(payload_type) is not None
        assert terms.feedback(payload_type, "nack")
        await asyncio.wait_for(transceiver.sender.stop(), 5)


def test_the_fast_protection_writes_what_pylibsrtp_writes() -> None:
    key = bytes(range(30))

    def session() -> pylibsrtp.Session:
        return pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )

    theirs, mine = session(), session()
    ours = Outlet()
    ours.protect_with(srtp_context(mine), SRTP_PROTECT, mine)
    packets = [packet(bytes([0x10, i % 256]) * 400, sequence=i, timestamp=i) for i in range(300)]
    assert [ours.protect(p) for p in packets] == [theirs.protect(p) for p in packets]
    with pytest.raises(ValueError, match="too long"):
        ours.protect(bytes(1400))
    ours.close()
    with pytest.raises(ValueError, match="no SRTP session"):
        ours.protect(packets[0])
