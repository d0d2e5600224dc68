"""The node's ICE candidates: its UDP ports come from the configured range, on the configured
addresses, and a range with no free port is a clear error."""

import re
import socket

import aiortc.rtcicetransport
import pytest
from aiortc import RTCPeerConnection

from services.media import ice
from services.media.config import MediaSettings


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> "type[MediaSettings]":
    monkeypatch.setattr(aiortc.rtcicetransport, "Connection", aiortc.rtcicetransport.Connection)
    monkeypatch.setattr(ice, "_settings", None)
    return MediaSettings


async def host_candidates(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    found = re.findall(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", pc.localDescription.sdp)
    return [(host, int(port)) for host, port in found]


def free_range(size: int) -> int:
    """The first port of ``size`` consecutive ports that are free now."""
    for start in range(42000, 60000, 97):
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("0.0.0.0", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return start
    raise AssertionError("no free port range")


async def test_host_candidates_use_the_port_range_and_the_chosen_address(
    installed: type[MediaSettings],
) -> None:
    address = ice.host_addresses()[0]
    start = free_range(4)
    ice.install(installed(udp_port_min=start, udp_port_max=start + 3, ice_addresses=[address]))
    pcs = [RTCPeerConnection() for _ in range(3)]
    try:
        ports = []
        for pc in pcs:
            candidates = await host_candidates(pc)
            assert {host for host, _ in candidates} == {address}
            ports += [port for _, port in candidates]
        assert len(ports) == len(set(ports)) == 3
        assert all(start <= port <= start + 3 for port in ports)
    finally:
        for pc in pcs:
            await pc.close()


async def test_a_range_with_no_free_port_gathers_nothing_and_says_why(
    installed: type[MediaSettings], caplog: pytest.LogCaptureFixture
) -> None:
    address = ice.host_addresses()[0]
    start = free_range(1)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind((address, start))
    ice.install(installed(udp_port_min=start, udp_port_max=start, ice_addresses=[address]))
    pc = RTCPeerConnection()
    try:
        with caplog.at_level("INFO", logger="aioice.ice"):
            assert await host_candidates(pc) == []
        assert "widen ANTECHAMBER_MEDIA_UDP_PORT_MIN/_MAX" in caplog.text
    finally:
        taken.close()
        await pc.close()


def test_half_a_port_range_is_refused() -> None:
    with pytest.raises(ValueError, match="set both"):
        MediaSettings(udp_port_min=40000)
    with pytest.raises(ValueError, match="above"):
        MediaSettings(udp_port_min=40010, udp_port_max=40000)
