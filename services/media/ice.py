"""Where the node's ICE candidates come from: chosen addresses, a UDP port range, STUN/TURN.

aiortc (through aioice) binds every host candidate to an ephemeral port on every interface
but loopback. Behind a Kubernetes Service or a firewall the ports must come from a known
range, and a node with several interfaces may have to use only one. aioice has no setting
for either, so the node installs :class:`RangedConnection` in place of aioice's
``Connection`` in aiortc's ICE transport (the one module-level name aiortc builds it from).
STUN (server-reflexive) and TURN (relayed) candidates work as in aioice.
"""

import asyncio
import random
import socket

import aioice.ice
import aiortc.rtcicetransport
from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses, server_reflexive_candidate

from services.media.config import MediaSettings

_settings: MediaSettings | None = None


class NoPortFree(OSError):
    """Every port of the configured range is taken."""


class RangedConnection(Connection):
    """aioice's ICE agent with host candidates from the configured addresses and ports."""

    async def get_component_candidates(
        self,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 - aioice's signature
    ) -> list[Candidate]:
        settings = _settings
        if settings is None or (settings.udp_port_min is None and not settings.ice_addresses):
            return await super().get_component_candidates(component, addresses, timeout)
        if settings.ice_addresses:
            addresses = list(settings.ice_addresses)
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        protocols: list[StunProtocol] = []
        for address in addresses:
            try:
                _, protocol = await _bind(loop, self, address, settings)
            except OSError as exc:
                aioice.ice.logger.info("Could not bind to %s - %s", address, exc)
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            protocols.append(protocol)
        self._protocols += protocols
        tasks = [
            asyncio.create_task(server_reflexive_candidate(protocol, self.stun_server))
            for protocol in protocols
            if self.stun_server and ":" not in protocol.local_candidate.host
        ]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in done:
                if task.exception() is None:
                    candidates.append(task.result()[0])
            for task in pending:
                task.cancel()
        if self.turn_server:  # aioice's own TURN allocation (its ports are the TURN server's)
            candidates += await super().get_component_candidates(component, [], timeout)
        return candidates


async def _bind(
    loop: asyncio.AbstractEventLoop, connection: Connection, address: str, settings: MediaSettings
) -> tuple[asyncio.BaseTransport, StunProtocol]:
    if settings.udp_port_min is None or settings.udp_port_max is None:
        return await loop.create_datagram_endpoint(
            lambda: StunProtocol(connection), local_addr=(address, 0)
        )
    ports = list(range(settings.udp_port_min, settings.udp_port_max + 1))
    start = random.randrange(len(ports))  # noqa: S311 - spreading, not security
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in ports[start:] + ports[:start]:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        return await loop.create_datagram_endpoint(lambda: StunProtocol(connection), sock=sock)
    raise NoPortFree(
        f"no free UDP port between {settings.udp_port_min} and {settings.udp_port_max} "
        f"on {address}: widen ANTECHAMBER_MEDIA_UDP_PORT_MIN/_MAX"
    )


def install(settings: MediaSettings) -> None:
    """Use the settings' addresses and port range for every ICE agent of this process."""
    global _settings
    _settings = settings
    aiortc.rtcicetransport.Connection = RangedConnection  # type: ignore[attr-defined]


def host_addresses() -> list[str]:
    """The addresses aioice would gather on (every interface but loopback)."""
    return get_host_addresses(use_ipv4=True, use_ipv6=False)
