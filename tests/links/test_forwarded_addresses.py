"""Unknown tokens are limited per client address, and a client does not choose its address by
sending X-Forwarded-For: only proxies named in ANTECHAMBER_FORWARDED_ALLOW_IPS are believed.

The links service runs behind uvicorn as ``antechamber serve`` runs it, and requests come over
real sockets from 127.0.0.1 (which uvicorn, left to itself, trusts)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import uuid4

import httpx
import pytest

from runtime.embedded import NatsServer
from tests.links.conftest import Clock, links_service
from tests.support import assert_problem, listening

BURST = 3


def unknown() -> dict[str, str]:
    return {"token": "n" + uuid4().hex + uuid4().hex[:10]}


@asynccontextmanager
async def strict_links(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    """A links service that lets one address try ``BURST`` unknown tokens, over a socket."""
    app = links_service(
        postgres_dsn,
        nats_server.url,
        clock,
        consuming=False,
        resolve_unknown_per_minute=1,
        resolve_unknown_burst=BURST,
    )
    async with listening(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def statuses(
    client: httpx.AsyncClient, tries: int, sent: Callable[[int], dict[str, str]]
) -> list[int]:
    """The answers to ``tries`` unknown tokens, the i-th sent with headers ``sent(i)``."""
    answers = []
    for i in range(tries):
        response = await client.get("/v1/links/resolve", params=unknown(), headers=sent(i))
        if response.status_code == 429:
            assert_problem(response, 429, "rate_limited")
            assert 1 <= int(response.headers["retry-after"]) <= 60
        else:
            assert_problem(response, 404, "unknown")
        answers.append(response.status_code)
    return answers


LIMITED = [404] * BURST + [429] * 2


@pytest.mark.parametrize(
    "rotating",
    [
        lambda i: {"X-Forwarded-For": f"203.0.113.{i + 1}"},
        lambda i: {"X-Forwarded-For": f"198.51.100.{i + 1}, 203.0.113.{i + 1}"},
        lambda i: {"Forwarded": f"for=203.0.113.{i + 1}"},
        lambda i: {"Forwarded": f'for="[2001:db8::{i + 1}]:4711"'},
    ],
    ids=["x-forwarded-for", "x-forwarded-for chain", "forwarded", "forwarded ipv6"],
)
async def test_rotating_forwarded_addresses_does_not_escape_the_limit(
    postgres_dsn: str,
    nats_server: NatsServer,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    rotating: Callable[[int], dict[str, str]],
) -> None:
    monkeypatch.delenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", raising=False)  # the default: none
    async with strict_links(postgres_dsn, nats_server, clock) as client:
        assert await statuses(client, len(LIMITED), rotating) == LIMITED
        # The same budget as without the header: it is spent.
        assert await statuses(client, 1, lambda _: {}) == [429]


async def test_without_forwarding_headers_the_limit_is_the_same(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", raising=False)
    async with strict_links(postgres_dsn, nats_server, clock) as client:
        assert await statuses(client, len(LIMITED), lambda _: {}) == LIMITED


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", "127.0.0.1")
    async with strict_links(postgres_dsn, nats_server, clock) as client:

        def guesser(i: int) -> dict[str, str]:
            # What the client wrote to the left of the proxy's entry changes nothing.
            return {"X-Forwarded-For": f"192.0.2.{i + 1}, 203.0.113.7"}

        assert await statuses(client, len(LIMITED), guesser) == LIMITED
        neighbour = {"X-Forwarded-For": "198.51.100.9"}
        assert await statuses(client, len(LIMITED), lambda _: neighbour) == LIMITED
        ipv6 = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'}
        assert await statuses(client, len(LIMITED), lambda _: ipv6) == LIMITED
        # The proxy's own address is untouched by its clients' tries.
        assert await statuses(client, 1, lambda _: {}) == [404]
