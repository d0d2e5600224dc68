"""The pre-call network test over the WebSocket: its refusals, and its verdict with an aiortc
peer playing the browser, through a lossy UDP relay of the test's own between the peer and
the media node (no network namespace: ``tc netem`` needs root and a namespace per run).

The relay is the only way the peer reaches the node: the node's answer has its candidates
replaced by the relay's address, and the peer's offer goes to the node without candidates,
so the node learns the relay's address from the checks (peer-reflexive). It drops the given
share of RTP and RTCP packets (first byte 128-191) both ways, never STUN or DTLS.
"""

import asyncio
import contextlib
import random
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame

from services.media.network_test import worst_track
from tests.links.conftest import PUBLIC_URL
from tests.signaling.conftest import Browser, Calls, practitioner_room

CANDIDATE = re.compile(r"^a=candidate:\S+ 1 udp \d+ (\d+\.\d+\.\d+\.\d+) (\d+) typ host", re.M)


class NoiseVideo(VideoStreamTrack):
    """Noise at 320x240: an encoder spends its whole budget on it, so the bitrate is the
    link's and the encoder's, not the picture's."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = numpy.random.default_rng(7)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        pixels = self.rng.integers(0, 255, (240, 320, 3), dtype=numpy.uint8)
        frame = VideoFrame.from_ndarray(pixels, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class LossyRelay:
    """UDP both ways between one peer and the node, dropping ``loss`` of RTP/RTCP."""

    def __init__(self, host: str, node: tuple[str, int], loss: float) -> None:
        self.host, self.node, self.loss = host, node, loss
        self.rng = random.Random(23)
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None
        self.dropped = 0

    def _keep(self, data: bytes) -> bool:
        if data and 128 <= data[0] <= 191 and self.rng.random() < self.loss:
            self.dropped += 1
            return False
        return True

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.peer = addr
                if relay.back is not None and relay._keep(data):
                    relay.back.sendto(data, relay.node)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.front and relay.peer and relay._keep(data):
                    relay.front.sendto(data, relay.peer)

        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=(self.host, 0))
        self.back, _ = await loop.create_datagram_endpoint(Back, local_addr=(self.host, 0))
        for transport in (self.front, self.back):
            # Room for a keyframe of noise while the loop is busy: only ``loss`` drops.
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return int(self.front.get_extra_info("sockname")[1])

    def close(self) -> None:
        for transport in (self.front, self.back):
            if transport is not None:
                transport.close()


def without_candidates(sdp: str) -> str:
    return "".join(
        line
        for line in sdp.splitlines(keepends=True)
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


def through(sdp: str, host: str, port: int) -> str:
    """The node's answer with the relay as its only candidate."""
    relay = f"a=candidate:1 1 udp 2130706431 {host} {port} typ host\r\n"
    out: list[str] = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            if relay not in out:
                out.append(relay)
        elif not line.startswith("a=end-of-candidates"):
            out.append(line)
    return "".join(out)


async def downlink(pc: RTCPeerConnection, seconds: float) -> dict[str, Any]:
    """What the peer receives of the echo over ``seconds``, as a browser reports it."""
    peak = 0.0
    last: tuple[float, int] | None = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        report = await pc.getStats()
        received = sum(s.bytesReceived for s in report.values() if s.type == "transport")
        now = time.monotonic()
        if last is not None:
            peak = max(peak, (received - last[1]) * 8 / 1000 / (now - last[0]))
        last = (now, received)
    got, lost, jitter_ms = worst_track(await pc.getStats())
    return {
        "packets_received": got,
        "packets_lost": lost,
        "jitter_ms": round(jitter_ms, 1),
        "peak_kbps": round(peak, 1),
    }


def link_fields(url: str) -> dict[str, str]:
    _, _, clinic, room = url.removeprefix(PUBLIC_URL).split("/")
    return {"clinic": clinic, "room": room}


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection()
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(NoiseVideo())
    try:
        yield pc
    finally:
        await pc.close()


async def run_test(calls: Calls, fields: dict[str, str], loss: float) -> dict[str, Any]:
    """The whole procedure, as docs/signaling.md tells a front end; the result frame."""
    browser = await calls.open()
    await browser.send("network_test", **fields)
    ready = await browser.next("network_test_ready")
    async with peer() as pc:
        await pc.setLocalDescription(await pc.createOffer())
        await browser.send("signal", kind="offer", sdp=without_candidates(pc.localDescription.sdp))
        answer = await browser.next("signal", kind="answer")
        found = CANDIDATE.search(answer["sdp"])
        assert found, answer["sdp"]
        node = (found.group(1), int(found.group(2)))
        relay = LossyRelay(node[0], node, loss)
        port = await relay.start()
        try:
            sdp = through(answer["sdp"], node[0], port)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            async with asyncio.timeout(10):
                while pc.connectionState != "connected":
                    await asyncio.sleep(0.05)
            measured = await downlink(pc, min(5.0, ready["duration_s"]))
            await browser.send(
                "network_test_report", connected=True, rtt_ms=None, downlink=measured
            )
            result = await browser.next("network_test_result", timeout=15)
        finally:
            relay.close()
    assert await browser.closed() == 1000
    result["dropped"] = relay.dropped
    return result


async def test_the_verdict_turns_when_the_link_loses_packets(calls: Calls) -> None:
    room = await practitioner_room(calls)
    fields = link_fields(room.room_url)
    clean = await run_test(calls, fields, loss=0.0)
    assert clean["dropped"] == 0
    assert clean["uplink"]["packets_received"] > 100, clean
    assert clean["uplink"]["packets_lost"] / clean["uplink"]["packets_received"] < 0.02, clean
    assert "loss" not in clean["reasons"], clean
    assert clean["verdict"] != "video_will_not_work", clean
    assert clean["uplink"]["peak_kbps"] > 100, clean
    assert clean["rtt_ms"] is not None, clean  # the node's, from the peer's receiver reports

    lossy = await run_test(calls, fields, loss=0.2)
    assert lossy["dropped"] > 50
    up, down = lossy["uplink"], lossy["downlink"]
    assert up["packets_lost"] / (up["packets_received"] + up["packets_lost"]) > 0.1, lossy
    assert down["packets_lost"] / (down["packets_received"] + down["packets_lost"]) > 0.1, lossy
    assert lossy["verdict"] == "video_will_not_work", lossy
    assert "loss" in lossy["reasons"]
    assert any("Wi-Fi" in a for a in lossy["advice"])


async def refused(browser: Browser, **fields: Any) -> dict[str, Any]:
    await browser.send("network_test", **fields)
    frame = await browser.next("refused")
    assert await browser.closed() == 1000
    return frame


async def test_a_test_needs_a_link_that_may_join_now(calls: Calls) -> None:
    nothing = await refused(await calls.open())
    assert (nothing["reason"], nothing["status"]) == ("unknown", 404)

    unknown = await refused(await calls.open(), token="no-such-token-" + "x" * 30)
    assert unknown["status"] == 404

    room = await practitioner_room(calls)
    c = room.clinic.clinic
    session = await c.session(room.practitioner, [await c.client()])  # tomorrow
    link = await room.clinic.link("session", session_id=session["session_id"])
    early = await refused(await calls.open(), token=link["url"].rsplit("/", 1)[1])
    assert (early["reason"], early["status"]) == ("not_yet_open", 423)
    assert early["opens_at"] is not None


async def test_a_test_socket_carries_the_test_only_and_takes_no_seat(calls: Calls) -> None:
    room = await practitioner_room(calls)
    browser = await calls.open()
    await browser.send("network_test", **link_fields(room.room_url))
    ready = await browser.next("network_test_ready")
    assert ready["media_node"] == "mtest"
    assert ready["placed"] is False  # nobody in the call: where it would go
    assert 5 <= ready["duration_s"] <= 10
    assert ready["max_s"] <= 12
    await browser.send("join", **link_fields(room.room_url), name="Sneaky")
    error = await browser.next("error")
    assert error["code"] == "test_running"
    await browser.send("signal", kind="answer", sdp="v=0")
    assert (await browser.next("error"))["code"] == "no_offer"
    await browser.send("signal", kind="offer", sdp="not an sdp")
    bad = await browser.next("refused")
    assert bad["reason"] == "sdp_invalid"
    assert await browser.closed() == 1000
    assert not browser.seen("welcome")
    assert not browser.seen("admitted")


async def test_tests_from_one_address_are_rate_limited(calls: Calls) -> None:
    room = await practitioner_room(calls)
    fields = link_fields(room.room_url)
    burst = calls.signalings[0].settings.network_tests_per_address_burst
    for _ in range(burst):
        browser = await calls.open()
        await browser.send("network_test", **fields)
        await browser.next("network_test_ready")
        await browser.aclose()
    limited = await refused(await calls.open(), **fields)
    assert (limited["reason"], limited["status"]) == ("rate_limited", 429)
    assert limited["retry_after_s"] > 0


def test_relay_rewrites_only_candidates() -> None:
    sdp = "v=0\r\na=candidate:x 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\nm=x\r\n"
    assert through(sdp, "10.0.0.2", 7) == (
        "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.2 7 typ host\r\nm=x\r\n"
    )
    assert without_candidates(sdp) == "v=0\r\nm=x\r\n"


async def test_a_socket_that_goes_ends_its_test_on_the_node_at_once(calls: Calls) -> None:
    room = await practitioner_room(calls)
    browser = await calls.open()
    await browser.send("network_test", **link_fields(room.room_url))
    ready = await browser.next("network_test_ready")
    async with peer() as pc:
        await pc.setLocalDescription(await pc.createOffer())
        await browser.send("signal", kind="offer", sdp=pc.localDescription.sdp)
        answer = await browser.next("signal", kind="answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        async with asyncio.timeout(10):
            while pc.connectionState != "connected":
                await asyncio.sleep(0.05)
        dropped = time.monotonic()
        await browser.drop()
        async with asyncio.timeout(ready["max_s"]):
            while pc.connectionState not in ("closed", "failed"):
                await asyncio.sleep(0.05)
        assert time.monotonic() - dropped < ready["max_s"] / 2
