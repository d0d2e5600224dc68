"""What links keeps to itself: another clinic's links, the tokens (stored only as hashes, never
logged), and unknown tokens tried in bulk (rate limited per address)."""

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from runtime.embedded import NatsServer
from runtime.rpc import RpcError, call
from runtime.service import build_app
from runtime.settings import RuntimeSettings
from runtime.streams import stream_name
from services.links import app as links_app
from services.links.config import LinksSettings
from services.links.handlers import Links
from services.scheduling import app as scheduling
from services.scheduling.config import SchedulingSettings
from tests.links.conftest import (
    PUBLIC_URL,
    Clock,
    LinkedClinic,
    Platform,
    linked_clinic,
    links_service,
)
from tests.links.test_lifecycle import assert_problem, assert_sentence, moment, shared_session
from tests.scheduling.conftest import OPERATOR, OPERATOR_KEY, SEALER
from tests.support import eventually, serving, stream_messages

SCHEMAS = ("links", "scheduling")
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "USER-DEFINED")


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def every_kind(clinic: LinkedClinic, clock: Clock) -> list[dict[str, Any]]:
    """A flow that issues every kind of link, regenerates and retires some, and resolves them;
    answers every link of the clinic it made (the inactive ones too)."""
    c = clinic.clinic
    session = await shared_session(clinic)
    practitioner = session["practitioner"]
    client = await c.client()
    room, room_link = await clinic.client_room(practitioner, client)
    guest = await clinic.link("guest", session_id=session["session_id"])
    for link in (guest, room_link):
        response = await clinic.links.post(
            f"/v1/links/{link['link_id']}/regenerate", headers=c.headers
        )
        assert response.status_code == 201, response.text
    sunset = moment(session, minutes=30)
    response = await clinic.links.post(
        "/v1/links/retire",
        headers=c.headers,
        json={"sunset_at": sunset.isoformat(), "kind": "session"},
    )
    assert response.json() == {"retired": 1}

    everything: dict[str, dict[str, Any]] = {}
    for filters in (
        {"session_id": session["session_id"]},
        {"practitioner_id": practitioner["practitioner_id"]},
        {"room_id": room["room_id"]},
    ):
        for link in await clinic.links_of(include_inactive=True, **filters):
            everything[link["link_id"]] = link
    kinds = {x["kind"] for x in everything.values()}
    assert kinds == {"session", "guest", "drop_in", "host", "practitioner_room", "client_room"}
    clock.set(moment(session))
    for link in everything.values():
        await clinic.resolve(link["url"], session_id=session["session_id"])
    return list(everything.values())


def tokens_of(links: list[dict[str, Any]]) -> list[str]:
    tokens = [token_of(x["url"]) for x in links if x["kind"] != "practitioner_room"]
    assert len(tokens) >= 8
    assert all(len(t) >= 40 for t in tokens)  # 256 bits, URL-safe base64
    return tokens


async def database_hits(dsn: str, needles: list[str]) -> dict[str, int]:
    """Rows of every text, json and bytea column in the services' schemas holding a needle."""
    conn = await asyncpg.connect(dsn)
    hits: dict[str, int] = {}
    try:
        columns = await conn.fetch(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "USING (table_schema, table_name) "
            "WHERE c.table_schema = ANY($1) AND t.table_type = 'BASE TABLE'",
            list(SCHEMAS),
        )
        assert {r["table_name"] for r in columns} >= {"links", "link_secrets", "events"}
        for col in columns:
            where = f'"{col["table_schema"]}"."{col["table_name"]}"'
            name = f'"{col["column_name"]}"'
            if col["data_type"] == "bytea":
                test = f"position(convert_to(n, 'UTF8') in {name}) > 0"
            elif col["data_type"] in TEXT_TYPES:
                test = f"strpos({name}::text, n) > 0"
            else:
                continue
            count = await conn.fetchval(
                f"SELECT count(*) FROM {where}, unnest($1::text[]) AS n WHERE {test}", needles
            )
            if count:
                hits[f"{col['table_schema']}.{col['table_name']}.{col['column_name']}"] = count
    finally:
        await conn.close()
    return hits


# -- tenancy -----------------------------------------------------------------------------------


async def test_another_clinics_key_sees_and_changes_nothing(
    platform: Platform, clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    practitioner_id = session["practitioner"]["practitioner_id"]
    mine = await clinic.links_of(session_id=sid)
    mine += await clinic.links_of(practitioner_id=practitioner_id)
    guest = next(x for x in mine if x["kind"] == "guest")
    other = await linked_clinic(platform)
    b = other.clinic.headers

    for filters in (
        {"session_id": sid},
        {"practitioner_id": practitioner_id},
        {"room_id": session["practitioner"]["room_id"]},
        {"session_id": sid, "include_inactive": "true"},
    ):
        response = await platform.links.get("/v1/links", params=filters, headers=b)
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_cursor": None}
    for link in mine:
        response = await platform.links.post(f"/v1/links/{link['link_id']}/regenerate", headers=b)
        assert_problem(response, 404, "link_not_found")
        response = await platform.links.get(f"/v1/links/{link['link_id']}/audit", headers=b)
        assert_problem(response, 404, "link_not_found")
    # An unknown id answers exactly like another clinic's.
    unknown = await platform.links.get(f"/v1/links/{uuid4()}/audit", headers=b)
    known = await platform.links.get(f"/v1/links/{guest['link_id']}/audit", headers=b)
    assert unknown.json()["detail"] == known.json()["detail"]

    sunset = {"sunset_at": moment(session, minutes=20).isoformat()}
    for kind in ({}, {"kind": "host"}):  # every kind B may retire: none of A's
        response = await platform.links.post("/v1/links/retire", headers=b, json=sunset | kind)
        assert response.status_code == 200, response.text
        assert response.json() == {"retired": 0}

    clock.set(moment(session))
    after = await clinic.links_of(session_id=sid) + await clinic.links_of(
        practitioner_id=practitioner_id
    )
    assert sorted((x["link_id"], x["state"]) for x in after) == sorted(
        (x["link_id"], "active") for x in mine
    )
    for link in mine:
        response = await clinic.resolve(link["url"], session_id=sid)
        assert response.status_code == 200, response.text
    found = await clinic.links.get(
        f"/v1/links/{guest['link_id']}/audit", headers=clinic.clinic.headers
    )
    assert [e["type"] for e in found.json()["lifecycle"]] == ["LinkIssued"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ac_" + "x" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Bearer {OPERATOR_KEY}"},  # the operator is no clinic
    ],
)
async def test_a_missing_or_unknown_key_is_unauthenticated(
    platform: Platform, clinic: LinkedClinic, headers: dict[str, str]
) -> None:
    guest = await shared_session(clinic)
    link = await clinic.link("guest", session_id=guest["session_id"])
    calls: list[tuple[str, str, dict[str, str], dict[str, str] | None]] = [
        ("GET", "/v1/links", {"session_id": guest["session_id"]}, None),
        ("POST", f"/v1/links/{link['link_id']}/regenerate", {}, None),
        ("GET", f"/v1/links/{link['link_id']}/audit", {}, None),
        ("POST", "/v1/links/retire", {}, {"sunset_at": guest["starts_at"]}),
    ]
    for method, path, params, body in calls:
        response = await platform.links.request(
            method, path, headers=headers, params=params, json=body
        )
        problem = assert_problem(response, 401, "unauthenticated")
        assert "link_id" not in problem
        if not headers:
            assert response.headers["www-authenticate"] == 'Bearer realm="antechamber"'
    assert (await clinic.links_of(session_id=guest["session_id"], kind="guest")) == [link]


async def operator_revokes_the_key(platform: Platform, clinic: LinkedClinic) -> None:
    path = f"/v1/clinics/{clinic.clinic.clinic_id}/api-keys"
    keys = (await platform.scheduling.get(path, headers=OPERATOR)).json()
    for key in keys:
        response = await platform.scheduling.delete(f"{path}/{key['key_id']}", headers=OPERATOR)
        assert response.status_code == 204, response.text


async def test_a_revoked_key_gets_no_replay_of_a_regeneration(
    platform: Platform, clinic: LinkedClinic
) -> None:
    """A retry is answered (without the new link) only to a key that still works."""
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    url = f"/v1/links/{link['link_id']}/regenerate"
    headers = clinic.clinic.headers | {"Idempotency-Key": str(uuid4())}
    first = await platform.links.post(url, headers=headers)
    assert first.status_code == 201, first.text
    again = await platform.links.post(url, headers=headers)
    assert_problem(again, 409, "idempotent_secret_withheld")
    assert first.json()["url"] not in again.text

    await operator_revokes_the_key(platform, clinic)
    refused = await platform.links.post(url, headers=headers)
    assert_problem(refused, 401, "unauthenticated")
    assert first.json()["url"] not in refused.text


async def test_a_suspended_clinic_gets_no_replay_of_a_regeneration(
    platform: Platform, clinic: LinkedClinic
) -> None:
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    url = f"/v1/links/{link['link_id']}/regenerate"
    headers = clinic.clinic.headers | {"Idempotency-Key": str(uuid4())}
    first = await platform.links.post(url, headers=headers)
    assert first.status_code == 201, first.text
    response = await platform.scheduling.post(
        f"/v1/clinics/{clinic.clinic.clinic_id}/suspend", headers=OPERATOR, json={"reason": "x"}
    )
    assert response.status_code == 200, response.text
    refused = await platform.links.post(url, headers=headers)
    assert_problem(refused, 403, "clinic_suspended")
    assert first.json()["url"] not in refused.text


# -- no token at rest --------------------------------------------------------------------------


async def test_no_raw_token_is_stored_or_published(
    postgres_dsn: str, clinic: LinkedClinic, clock: Clock, nc: NATS
) -> None:
    links = await every_kind(clinic, clock)
    tokens = tokens_of(links)
    # Let scheduling keep what links published (its join_links) before looking.
    ids = [UUID(x["link_id"]) for x in links]

    async def all_kept() -> bool:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            kept = await conn.fetchval(
                "SELECT count(*) FROM scheduling.join_links WHERE link_id = ANY($1)", ids
            )
        finally:
            await conn.close()
        return bool(kept == len(ids))

    await eventually(all_kept, what="scheduling's copy of every link")

    # The scan finds what is there: the clinic's slug is in both schemas.
    control = await database_hits(postgres_dsn, [clinic.clinic.slug])
    assert {key.split(".")[0] for key in control} == set(SCHEMAS), control
    assert await database_hits(postgres_dsn, tokens) == {}

    js = nc.jetstream()
    for service in ("links", "scheduling"):
        for message in await stream_messages(js, stream_name(service)):
            data = message.data.decode()
            assert not [t for t in tokens if t in data], message.subject


async def test_an_idempotent_regeneration_stores_no_raw_token(
    postgres_dsn: str, clinic: LinkedClinic
) -> None:
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    headers = clinic.clinic.headers | {"Idempotency-Key": str(uuid4())}
    path = f"/v1/links/{link['link_id']}/regenerate"
    response = await clinic.links.post(path, headers=headers)
    assert response.status_code == 201, response.text
    assert await database_hits(postgres_dsn, [token_of(response.json()["url"])]) == {}
    # The retry is told it happened and where, without the new link.
    again = await clinic.links.post(path, headers=headers)
    assert_problem(again, 409, "idempotent_secret_withheld")
    assert again.headers["location"] == response.headers["location"]
    assert token_of(response.json()["url"]) not in again.text


# -- no token in logs or traces ----------------------------------------------------------------


@asynccontextmanager
async def verbose_platform(dsn: str, nats_url: str, links: Links) -> AsyncIterator[Platform]:
    """Scheduling and links as in production (JSON logs), but logging at debug."""
    runtime = RuntimeSettings(
        DATABASE_URL=dsn, NATS_URL=nats_url, log_format="json", log_level="debug"
    )
    definition = replace(
        scheduling.definition,
        routes=partial(
            scheduling.routes,
            settings=SchedulingSettings(operator_key=OPERATOR_KEY),
            sealer=SEALER,
        ),
    )
    sched_app = build_app(definition, runtime)
    links_fastapi = build_app(links_app.build(links), runtime)
    async with AsyncExitStack() as stack:
        sched = await stack.enter_async_context(serving(sched_app))
        links_client = await stack.enter_async_context(serving(links_fastapi))
        yield Platform(sched, links_client, links_fastapi)


class FailingClock(Clock):
    failing: bool = False

    def __call__(self) -> Any:
        if self.failing:
            raise RuntimeError("the clock stopped")
        return self.now


async def test_no_raw_token_is_logged_or_traced(
    postgres_dsn: str,
    nats_server: NatsServer,
    nc: NATS,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    spans: InMemorySpanExporter,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FailingClock()
    links = Links(
        settings=LinksSettings(public_url=PUBLIC_URL, audit_flush_s=0.2),
        sealer_source=lambda: SEALER,
        clock=clock,
    )
    async with verbose_platform(postgres_dsn, nats_server.url, links) as platform:
        clinic = await linked_clinic(platform)
        issued = await every_kind(clinic, clock)
        tokens = tokens_of(issued)
        unknown = ["u" + t[1:] for t in tokens[:3]] + ["x" * 43]
        for token in [*tokens, *unknown]:
            await platform.links.get("/v1/links/resolve", params={"token": token})
            await call(nc, RESOLVE_SUBJECT, ResolveRequest(token=token), Decision)
        # Malformed requests, over HTTP and NATS.
        too_long = tokens[0] * 5
        response = await platform.links.get("/v1/links/resolve", params={"token": too_long})
        assert response.status_code == 422
        assert_sentence(response.json()["detail"])
        assert too_long not in response.text
        raw = json.dumps({"token": tokens[0], "unexpected": True}).encode()
        reply = await nc.request(RESOLVE_SUBJECT, raw, timeout=2)
        assert b"error" in reply.data
        assert tokens[0].encode() not in reply.data
        # A failure while a token is being resolved is logged with its traceback.
        clock.failing = True
        transport = httpx.ASGITransport(app=platform.links_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as front:
            response = await front.get("/v1/links/resolve", params={"token": tokens[0]})
        assert response.status_code == 500
        assert tokens[0] not in response.text
        with pytest.raises(RpcError):
            await call(nc, RESOLVE_SUBJECT, ResolveRequest(token=tokens[1]), Decision)
        clock.failing = False
        for link in issued:
            await platform.links.get(
                f"/v1/links/{link['link_id']}/audit", headers=clinic.clinic.headers
            )

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = {line.get("event") for line in lines}
    assert {"service started", "request failed", "rpc failed"} <= events, events
    assert any("RuntimeError: the clock stopped" in line.get("exception", "") for line in lines)
    stdlib = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    traced = "\n".join(
        f"{s.name} {dict(s.attributes or {})} {[dict(e.attributes or {}) for e in s.events]}"
        for s in spans.get_finished_spans()
    )
    assert traced
    for token in [*tokens, *unknown]:
        assert token not in err
        assert token not in stdlib
        assert token not in traced


# -- unknown tokens, rate limited per address --------------------------------------------------


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_unknown_tokens_are_rate_limited_per_address(
    postgres_dsn: str, nats_server: NatsServer, clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    valid = {"token": token_of(link["url"])}
    clock.set(moment(session))
    strict = links_service(
        postgres_dsn,
        nats_server.url,
        clock,
        resolve_unknown_per_minute=1,
        resolve_unknown_burst=3,
    )

    def unknown() -> dict[str, str]:
        return {"token": "n" + uuid4().hex + uuid4().hex[:10]}

    async with (
        serving(strict),
        client_at(strict, "203.0.113.7") as guesser,
        client_at(strict, "198.51.100.9") as neighbour,
    ):
        # Known tokens cost nothing.
        for _ in range(10):
            response = await guesser.get("/v1/links/resolve", params=valid)
            assert response.status_code == 200, response.text
        for _ in range(3):  # the burst
            response = await guesser.get("/v1/links/resolve", params=unknown())
            assert_problem(response, 404, "unknown")
        for params in (unknown(), unknown(), valid):
            # Blocked before the lookup (so a flood never reaches the database): a valid
            # token from this address waits too.
            response = await guesser.get("/v1/links/resolve", params=params)
            problem = assert_problem(response, 429, "rate_limited")
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 60
            assert 0 < problem["retry_after_s"] <= 60
            assert "seconds" in problem["detail"]
            assert response.headers["referrer-policy"] == "no-referrer"
            assert problem.get("link_id") is None

        # Another address is not held up by it, and has its own budget.
        response = await neighbour.get("/v1/links/resolve", params=valid)
        assert response.status_code == 200, response.text
        for _ in range(3):
            assert_problem(
                await neighbour.get("/v1/links/resolve", params=unknown()), 404, "unknown"
            )
        assert_problem(
            await neighbour.get("/v1/links/resolve", params=unknown()), 429, "rate_limited"
        )
        # The clinic's own service (default limits) still answers the guesser's address.
        response = await clinic.resolve(link["url"])
        assert response.status_code == 200, response.text
