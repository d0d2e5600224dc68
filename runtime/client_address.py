"""Whose request it is: the socket peer's address, or, behind trusted proxies, the forwarded one.

A proxy appends the address it was connected from to ``X-Forwarded-For`` (or to ``Forwarded``,
RFC 7239); everything to the left of that entry came from whoever connected to it. So the chain
is read from the right, past the proxies we trust, and the first address that is not one of
them is the client. Anything further left is the client's own word and counts for nothing.
When the peer itself is not a trusted proxy, the headers are the client's own word too.

Per-address rate limits key on this, so it must be something a client cannot choose freely.
"""

import ipaddress
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose forwarding headers are believed; none by default."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "TrustedProxies":
        """From addresses and networks separated by commas (``10.0.0.0/8, 192.0.2.7, fd00::/8``);
        a ValueError names the first entry that is neither."""
        networks = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or network such as 10.0.0.0/8 ({exc})"
                ) from None
        return cls(tuple(networks))

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ",".join(
            str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
            for n in self.networks
        )


def client_address(peer: str | None, headers: Headers, trusted: TrustedProxies) -> str | None:
    """The client's address (normalised), given the socket peer's and the request's headers.

    ``X-Forwarded-For`` is read when present, else ``Forwarded``: the usual proxies (nginx,
    ingress-nginx, cloud load balancers, Envoy) append to the former and pass the latter through
    untouched, so preferring ``Forwarded`` would let a client behind them write its own. An
    entry that is not an address (``unknown``, garbage) ends the walk at the hop to its right.
    None when there is no peer (a Unix socket).
    """
    if peer is None:
        return None
    hop = _address(peer)
    if hop is None or hop not in trusted:
        return peer if hop is None else str(hop)
    for entry in reversed(_forwarded_for(headers)):
        address = _address(entry)
        if address is None:
            break
        hop = address
        if hop not in trusted:
            break
    return str(hop)


def client_address_of(connection: HTTPConnection) -> str | None:
    """:func:`client_address` of a request or WebSocket, behind the proxies its app trusts
    (``app.state.trusted_proxies``, from ``ANTECHAMBER_FORWARDED_ALLOW_IPS``)."""
    trusted: TrustedProxies = connection.app.state.trusted_proxies
    peer = connection.client.host if connection.client else None
    return client_address(peer, connection.headers, trusted)


def _forwarded_for(headers: Headers) -> list[str]:
    """The forwarded chain, client first; repeated header lines are one list (RFC 9110)."""
    if lines := headers.getlist("x-forwarded-for"):
        return ",".join(lines).split(",")
    entries = []
    for element in ",".join(headers.getlist("forwarded")).split(","):
        if not element.strip():
            continue
        pairs = (pair.partition("=") for pair in element.split(";"))
        found = [value for name, _, value in pairs if name.strip().lower() == "for"]
        entries.append(found[0] if found else "")
    return entries


def _address(entry: str) -> IPAddress | None:
    """An entry's address: ``192.0.2.1``, ``192.0.2.1:443``, ``2001:db8::1``, ``[2001:db8::1]``
    or ``[2001:db8::1]:443``, quoted or not; an IPv4-mapped IPv6 address as its IPv4 one."""
    host = entry.strip().strip('"')
    if host.startswith("["):
        host, closed, port = host[1:].partition("]")
        if not closed or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
