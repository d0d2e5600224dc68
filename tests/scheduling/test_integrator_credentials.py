"""Integrators' NATS credentials: issued and revoked through the clinic API, enforced by a real
nats-server on plain nats-py clients (none of our client code on the integrator's side)."""

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import nkeys
import pytest
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from contracts.scheduling import IntegratorCredentialIssued, IntegratorCredentialRevoked
from runtime.embedded import NatsServer
from runtime.nats_auth import ADMIN_USER, Issuer, decode_jwt, public_key, read_creds
from runtime.refusals import Conflict, Invalid, NotFound
from runtime.service import build_app
from runtime.settings import RuntimeSettings
from services.scheduling import app as scheduling
from services.scheduling import credentials, integrators_api
from services.scheduling.config import SchedulingSettings
from tests.scheduling.conftest import (
    OPERATOR,
    OPERATOR_KEY,
    SEALER,
    ClinicHandle,
    register_clinic,
    scheduling_app,
)
from tests.support import assert_problem, eventually, harness_auth, serving

SCHEDULING = "ANTECHAMBER_SCHEDULING"
LINKS = "ANTECHAMBER_LINKS"
REFUSAL_WAIT_S = 2.0


# -- an integrator, as plain nats-py ----------------------------------------------------------


@dataclass
class Integrator:
    """One connection with one credential, and what the server told it."""

    nc: NATS
    name: str
    errors: list[str]
    closed: asyncio.Event

    async def refused(self, subject: str) -> bool:
        """Whether the server reported a permissions violation on ``subject``."""
        wanted = f'"{subject.lower()}"'
        deadline = time.monotonic() + REFUSAL_WAIT_S
        while time.monotonic() < deadline:
            if any("permissions violation" in e and wanted in e for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


async def connect(url: str, issued: dict[str, Any], creds: Any = None) -> Integrator:
    errors: list[str] = []
    closed = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(
        url,
        user_credentials=creds or RawCredentials(issued["creds"]),
        inbox_prefix=issued["inbox_prefix"],
        error_cb=on_error,
        closed_cb=on_closed,
        allow_reconnect=False,
        connect_timeout=2,
    )
    return Integrator(nc, issued["nats_user"], errors, closed)


async def refused_at_connect(url: str, issued: dict[str, Any] | None) -> str:
    """The error with which the server refuses a connection (fails if it accepts it)."""
    options: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": 2}
    if issued is not None:
        options |= {
            "user_credentials": RawCredentials(issued["creds"]),
            "inbox_prefix": issued["inbox_prefix"],
        }
    try:
        nc = await nats.connect(url, **options)
    except Exception as exc:  # nats-py raises its plain Error for an authorization violation
        return str(exc).lower()
    await nc.close()
    raise AssertionError("the server accepted the connection")


async def issue(clinic: ClinicHandle, **body: Any) -> dict[str, Any]:
    issued: dict[str, Any] = await clinic.ok(
        "POST", "/v1/integrator-credentials", 201, json={"label": "Records system"} | body
    )
    return issued


@pytest.fixture
async def integrator(
    clinic: ClinicHandle, nats_server: NatsServer
) -> AsyncIterator[tuple[dict[str, Any], Integrator]]:
    issued = await issue(clinic)
    connection = await connect(nats_server.url, issued)
    yield issued, connection
    await connection.nc.close()


# -- the API -----------------------------------------------------------------------------------


async def test_a_credential_is_issued_for_the_clinics_events_and_its_seed_shown_once(
    clinic: ClinicHandle,
) -> None:
    response = await clinic.call(
        "POST", "/v1/integrator-credentials", json={"label": "Records system"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    name = issued["nats_user"]
    assert name == f"int_{uuid.UUID(issued['credential_id']).hex}"
    assert response.headers["location"] == f"/v1/integrator-credentials/{issued['credential_id']}"
    assert issued["consumer_name"] == name
    assert issued["inbox_prefix"] == f"_INBOX_{name}"
    assert issued["subjects"] == [f"antechamber.{clinic.clinic_id}.>"]
    assert issued["streams"] == [
        "ANTECHAMBER_SCHEDULING",
        "ANTECHAMBER_LINKS",
        "ANTECHAMBER_SIGNALING",
        "ANTECHAMBER_MEDIA",
        "ANTECHAMBER_NOTIFY",
    ]
    assert issued["status"] == "active"
    expires_at = datetime.fromisoformat(issued["expires_at"])
    assert abs(expires_at - datetime.now(UTC) - timedelta(days=90)) < timedelta(minutes=1)
    token, seed = read_creds(issued["creds"])
    assert token == issued["jwt"]
    assert seed.startswith("SU")
    claims = decode_jwt(token)
    assert claims["name"] == name
    assert claims["sub"] == issued["public_key"]
    assert claims["exp"] == int(expires_at.timestamp())
    assert f"clinic:{clinic.clinic_id}" in claims["nats"]["tags"]

    shown = await clinic.ok("GET", f"/v1/integrator-credentials/{issued['credential_id']}")
    assert shown == {k: v for k, v in issued.items() if k not in ("creds", "jwt")}


async def test_credentials_are_listed_page_by_page_with_their_state(clinic: ClinicHandle) -> None:
    ids = [(await issue(clinic, label=f"n{i}"))["credential_id"] for i in range(3)]
    await clinic.ok("DELETE", f"/v1/integrator-credentials/{ids[1]}", 204)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await clinic.ok("GET", "/v1/integrator-credentials", params=params)
        assert len(page["items"]) <= 2
        assert all("creds" not in item and "jwt" not in item for item in page["items"])
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [c["credential_id"] for c in seen] == ids
    assert [c["status"] for c in seen] == ["active", "revoked", "active"]
    assert seen[1]["revoked_at"] is not None


@pytest.mark.parametrize(
    "body",
    [
        {"label": "x", "expires_in_days": 0},
        {"label": "x", "expires_in_days": 366},
        {"label": ""},
        {"label": "x", "public_key": "not a key"},
        {"label": "x", "public_key": "SUAM" + "A" * 54},  # a seed: never send one
        {"label": "x", "public_key": "A" + "B" * 55},
    ],
)
async def test_a_bad_request_is_refused(clinic: ClinicHandle, body: dict[str, Any]) -> None:
    response = await clinic.call("POST", "/v1/integrator-credentials", json=body)
    assert response.status_code == 422, response.text
    listed = await clinic.ok("GET", "/v1/integrator-credentials")
    assert listed["items"] == []


async def test_an_integrators_own_key_gets_a_jwt_and_no_creds(
    clinic: ClinicHandle, nats_server: NatsServer, tmp_path: Path
) -> None:
    seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    public_key = bytes(nkeys.from_seed(bytearray(seed)).public_key).decode()
    response = await clinic.call(
        "POST", "/v1/integrator-credentials", json={"label": "own key", "public_key": public_key}
    )
    assert response.status_code == 201, response.text
    assert "no-store" not in response.headers.get("cache-control", "")
    issued = response.json()
    assert issued["creds"] is None
    assert issued["public_key"] == public_key
    assert decode_jwt(issued["jwt"])["sub"] == public_key
    # The integrator pairs the JWT with its own seed, as nats-py reads two files.
    (tmp_path / "user.jwt").write_text(issued["jwt"])
    (tmp_path / "user.nk").write_bytes(seed)
    connection = await connect(
        nats_server.url, issued, creds=(str(tmp_path / "user.jwt"), str(tmp_path / "user.nk"))
    )
    assert connection.nc.is_connected
    await connection.nc.close()
    # NATS revokes by key: a key belongs to one credential.
    again = await clinic.call(
        "POST", "/v1/integrator-credentials", json={"label": "again", "public_key": public_key}
    )
    assert_problem(again, 409, "public_key_in_use")


async def test_a_key_of_the_platforms_own_users_is_refused(
    clinic: ClinicHandle, nats_server: NatsServer
) -> None:
    """Revoking a credential revokes its key in NATS: issued with scheduling's own key, a
    revocation would cut scheduling off."""
    auth = harness_auth()
    seeds = [read_creds(auth.creds(user).read_text())[1] for user in ("scheduling", ADMIN_USER)]
    seeds.append(read_creds(Issuer.load(auth.issuer_file).system_creds)[1])  # claims updater
    for seed in seeds:
        response = await clinic.call(
            "POST",
            "/v1/integrator-credentials",
            json={"label": "x", "public_key": public_key(seed)},
        )
        assert_problem(response, 409, "public_key_reserved")
        assert "belongs to the platform" in response.json()["detail"]
    assert (await clinic.ok("GET", "/v1/integrator-credentials"))["items"] == []


async def test_another_clinics_credential_answers_404(
    api: httpx.AsyncClient,
    integrator: tuple[dict[str, Any], Integrator],
) -> None:
    issued, connection = integrator
    other = await register_clinic(api)
    path = f"/v1/integrator-credentials/{issued['credential_id']}"
    for method in ("GET", "DELETE"):
        response = await other.call(method, path)
        assert_problem(response, 404, "integrator_credential_not_found")
        unknown = await other.call(method, f"/v1/integrator-credentials/{uuid.uuid4()}")
        assert_problem(unknown, 404, "integrator_credential_not_found")
        assert unknown.json()["detail"] == response.json()["detail"]
    assert (await other.ok("GET", "/v1/integrator-credentials"))["items"] == []
    await asyncio.sleep(0.5)
    assert connection.nc.is_connected  # untouched


async def test_without_nats_authentication_the_endpoints_say_so(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    app = scheduling_app(postgres_dsn, nats_server.url, nats_issuer_file=None)
    async with serving(app) as api:
        clinic = await register_clinic(api)
        some = uuid.uuid4()
        for method, path in [
            ("POST", "/v1/integrator-credentials"),
            ("GET", "/v1/integrator-credentials"),
            ("GET", f"/v1/integrator-credentials/{some}"),
            ("DELETE", f"/v1/integrator-credentials/{some}"),
        ]:
            body = {"label": "x"} if method == "POST" else None
            response = await clinic.call(method, path, json=body)
            assert_problem(response, 503, "nats_auth_not_configured")
            assert "NATS authentication" in response.json()["detail"]
        # The caller is still checked first.
        anonymous = await api.get("/v1/integrator-credentials")
        assert anonymous.status_code == 401


# -- what the server lets a credential do -------------------------------------------------------


async def test_without_credentials_the_server_refuses_the_connection(
    nats_server: NatsServer,
) -> None:
    assert "authorization violation" in await refused_at_connect(nats_server.url, None)


async def test_a_credential_reads_its_clinics_events_live_and_through_a_pull_consumer(
    api: httpx.AsyncClient,
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    issued, connection = integrator
    other = await register_clinic(api)
    live: list[str] = []

    async def on_event(msg: Any) -> None:
        live.append(msg.subject)

    await connection.nc.subscribe(f"antechamber.{clinic.clinic_id}.>", cb=on_event)
    await connection.nc.flush()
    mine = await clinic.practitioner()
    await other.practitioner()
    await other.client()

    async def added_live() -> bool:
        return f"antechamber.{clinic.clinic_id}.scheduling.RoomCreated" in live

    await eventually(added_live, timeout=10, what="A's events on the core subscription")
    assert all(s.startswith(f"antechamber.{clinic.clinic_id}.") for s in live), live

    # A JetStream pull consumer, named as the credential, filtered to the clinic, as the
    # integrator docs show it.
    js = connection.nc.jetstream()
    sub = await js.pull_subscribe(
        f"antechamber.{clinic.clinic_id}.>", durable=issued["consumer_name"], stream=SCHEDULING
    )
    received: list[Any] = []

    async def all_of_a() -> bool:
        try:
            batch = await sub.fetch(50, timeout=0.5)
        except TimeoutError:
            return False
        for msg in batch:
            await msg.ack()
        received.extend(batch)
        return any(m.subject.endswith(".PractitionerAdded") for m in received)

    await eventually(all_of_a, timeout=10, what="A's events through the pull consumer")
    subjects = [m.subject for m in received]
    assert all(s.startswith(f"antechamber.{clinic.clinic_id}.scheduling.") for s in subjects)
    assert subjects[0].endswith(".ClinicRegistered")  # from the start of the stream
    [added] = [json.loads(m.data) for m in received if m.subject.endswith(".PractitionerAdded")]
    assert added["data"]["practitioner_id"] == mine["practitioner_id"]
    info = await nc.jetstream().consumer_info(SCHEDULING, issued["consumer_name"])
    assert info.config.filter_subject == f"antechamber.{clinic.clinic_id}.>"
    assert info.num_ack_pending == 0  # acknowledged


async def test_a_credential_may_not_read_other_subjects(
    api: httpx.AsyncClient,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    _, connection = integrator
    other = await register_clinic(api)
    forbidden = [
        f"antechamber.{other.clinic_id}.>",
        "antechamber.>",
        ">",
        "rpc.>",
        "$KV.>",
        "$KV.media-rooms.>",
        "_INBOX_scheduling.>",
        "_INBOX.>",
        "$JS.API.>",
    ]
    leaked: list[str] = []

    async def leak(msg: Any) -> None:
        leaked.append(msg.subject)

    for subject in forbidden:
        await connection.nc.subscribe(subject, cb=leak)
    for subject in forbidden:
        assert await connection.refused(subject), (subject, connection.errors)
    # Nothing arrives on them either, whoever publishes.
    for subject in forbidden:
        probe = subject.replace(">", "probe").replace("*", "x")
        await nc.publish(probe, b"{}")
    await nc.flush()
    await other.client()
    await asyncio.sleep(0.5)
    assert leaked == []
    assert connection.nc.is_connected  # a refusal is reported, the connection stays


async def test_a_credential_may_publish_nothing(
    clinic: ClinicHandle, integrator: tuple[dict[str, Any], Integrator], nc: NATS
) -> None:
    _, connection = integrator
    subjects = [
        f"antechamber.{clinic.clinic_id}.scheduling.SessionCancelled",
        "rpc.links.resolve",
        "rpc.scheduling.authenticate",
        "rpc.media.node.x.record",
        "$KV.media-rooms.x",
    ]
    api_subjects = [f"$JS.API.STREAM.INFO.{SCHEDULING}", "$JS.API.STREAM.NAMES", "$JS.API.INFO"]
    arrived: list[str] = []

    async def spy(msg: Any) -> None:
        arrived.append(msg.subject)

    for subject in subjects:
        await nc.subscribe(subject, cb=spy)
    await nc.flush()
    for subject in [*subjects, *api_subjects]:
        await connection.nc.publish(subject, b'{"forged": true}')
    for subject in [*subjects, *api_subjects]:
        assert await connection.refused(subject), (subject, connection.errors)
    await asyncio.sleep(0.3)
    assert arrived == []
    with pytest.raises(NotFoundError):
        await nc.jetstream().get_last_msg(SCHEDULING, subjects[0])


async def _no_consumer(nc: NATS, stream: str, *names: str) -> None:
    for name in names:
        with pytest.raises(NotFoundError):
            await nc.jetstream().consumer_info(stream, name)


async def test_a_credential_may_create_no_other_consumer(
    api: httpx.AsyncClient,
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    """Refused means a permissions violation or an error answer, and never a consumer."""
    issued, connection = integrator
    name = issued["consumer_name"]
    other = await register_clinic(api)
    own, theirs = f"antechamber.{clinic.clinic_id}.>", f"antechamber.{other.clinic_id}.>"
    js = connection.nc.jetstream(timeout=1)
    # Through nats-py: filtered to the other clinic, unfiltered, under another name.
    attempts = [
        js.pull_subscribe(theirs, durable=name, stream=LINKS),
        js.add_consumer(LINKS, ConsumerConfig(name=name, durable_name=name)),
        js.add_consumer(LINKS, ConsumerConfig(name=name, durable_name=name, filter_subject=">")),
        js.add_consumer(LINKS, ConsumerConfig(name="x", durable_name="x", filter_subject=own)),
        js.add_consumer(LINKS, ConsumerConfig(filter_subject=own)),  # ephemeral: a server name
    ]
    for attempt in attempts:
        with pytest.raises(nats.errors.TimeoutError):  # nothing answers a refused request
            await attempt
    # Raw requests, every consumer-create subject shape the JetStream API has.
    named = {"durable_name": name, "name": name}
    raw = {
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.{theirs}": {"filter_subject": theirs},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}": {},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.>": {"filter_subject": ">"},
        f"$JS.API.CONSUMER.CREATE.{LINKS}": {},
        f"$JS.API.CONSUMER.DURABLE.CREATE.{LINKS}.{name}": {"filter_subject": own},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.x.{own}": {"filter_subject": own},
    }
    for subject, config in raw.items():
        request = json.dumps({"stream_name": LINKS, "config": named | config}).encode()
        with pytest.raises(nats.errors.TimeoutError):
            await connection.nc.request(subject, request, timeout=0.5)
        assert await connection.refused(subject), (subject, connection.errors)
    # Allowed subject, other filter in the body: the server answers an error (10131).
    mismatch = {"stream_name": LINKS, "config": named | {"filter_subject": theirs}}
    answer = await connection.nc.request(
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.{own}", json.dumps(mismatch).encode(), timeout=2
    )
    assert json.loads(answer.data)["error"]["err_code"] == 10131, answer.data
    await _no_consumer(nc, LINKS, name, "x")
    # Nor can it reach another credential's consumer (its name is the other's).
    theirs_issued = await issue(other)
    await _no_consumer(nc, SCHEDULING, theirs_issued["consumer_name"])
    for verb in ("INFO", "DELETE", "MSG.NEXT"):
        subject = f"$JS.API.CONSUMER.{verb}.{SCHEDULING}.{theirs_issued['consumer_name']}"
        await connection.nc.publish(subject, b"")
        assert await connection.refused(subject), (subject, connection.errors)


@pytest.mark.xfail(
    strict=True,
    reason="nats-server lets a push consumer deliver anywhere: the consumer-create subject "
    "names its filter, not its deliver_subject, so the integrator template cannot limit it",
)
async def test_a_credential_may_not_deliver_its_events_to_another_clinics_subjects(
    api: httpx.AsyncClient,
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    """A push consumer on links' stream, filtered to its own clinic, delivering into another
    clinic's scheduling subjects: once anything subscribes there, the other clinic's
    integrators get the messages and scheduling's stream stores them as that clinic's events
    (the server refuses a deliver subject only when it is in the consumer's own stream)."""
    issued, connection = integrator
    name = issued["consumer_name"]
    other = await register_clinic(api)
    own = f"antechamber.{clinic.clinic_id}.>"
    forged = f"antechamber.{other.clinic_id}.scheduling.SessionCancelled"
    config = {
        "name": name,
        "durable_name": name,
        "filter_subject": own,
        "deliver_subject": forged,
        "ack_policy": "none",
    }
    request = json.dumps({"stream_name": LINKS, "config": config}).encode()
    subject = f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.{own}"
    try:
        answer = json.loads((await connection.nc.request(subject, request, timeout=1)).data)
    except nats.errors.TimeoutError:
        answer = {"error": "refused"}
    if "error" not in answer:
        await nc.jetstream().delete_consumer(LINKS, name)  # leave no pump behind
    assert "error" in answer, answer


# -- revocation, suspension, expiry ---------------------------------------------------------------


async def closed_within(connection: Integrator, seconds: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(connection.closed.wait(), seconds)
    return time.monotonic() - started


async def test_revoking_closes_the_connection_at_once_and_refuses_it_after(
    clinic: ClinicHandle, integrator: tuple[dict[str, Any], Integrator], nats_server: NatsServer
) -> None:
    issued, connection = integrator
    path = f"/v1/integrator-credentials/{issued['credential_id']}"
    started = time.monotonic()
    await clinic.ok("DELETE", path, 204)
    await asyncio.wait_for(connection.closed.wait(), 3)
    took = time.monotonic() - started
    assert "revoked" in str(connection.nc.last_error).lower(), connection.nc.last_error
    assert took < 3, f"revocation to close: {took:.3f}s"
    assert "authorization violation" in await refused_at_connect(nats_server.url, issued)
    shown = await clinic.ok("GET", path)
    assert shown["status"] == "revoked"
    await clinic.ok("DELETE", path, 204)  # again: nothing changes
    assert (await clinic.ok("GET", path))["revoked_at"] == shown["revoked_at"]


async def test_suspending_the_clinic_cuts_every_credential_and_reinstating_restores_them(
    api: httpx.AsyncClient, clinic: ClinicHandle, nats_server: NatsServer
) -> None:
    kept, revoked = await issue(clinic, label="kept"), await issue(clinic, label="revoked")
    await clinic.ok("DELETE", f"/v1/integrator-credentials/{revoked['credential_id']}", 204)
    other = await register_clinic(api)
    bystander = await issue(other)
    connection = await connect(nats_server.url, kept)
    unrelated = await connect(nats_server.url, bystander)

    suspend = await api.post(
        f"/v1/clinics/{clinic.clinic_id}/suspend", headers=OPERATOR, json={"reason": "unpaid"}
    )
    assert suspend.status_code == 200, suspend.text
    await asyncio.wait_for(connection.closed.wait(), 3)
    assert "revoked" in str(connection.nc.last_error).lower()
    assert "authorization violation" in await refused_at_connect(nats_server.url, kept)
    assert unrelated.nc.is_connected  # another clinic's credential is untouched

    reinstate = await api.post(f"/v1/clinics/{clinic.clinic_id}/reinstate", headers=OPERATOR)
    assert reinstate.status_code == 200, reinstate.text
    again = await connect(nats_server.url, kept)
    assert again.nc.is_connected
    assert "authorization violation" in await refused_at_connect(nats_server.url, revoked)
    for c in (again, unrelated):
        await c.nc.close()


async def test_an_expired_credential_is_disconnected_and_refused(
    clinic: ClinicHandle, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issued "a day ago" for a day: it expires three seconds from now.
    a_day_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1) + timedelta(seconds=3)
    monkeypatch.setattr(integrators_api, "now", lambda: a_day_ago)
    issued = await issue(clinic, expires_in_days=1)
    monkeypatch.undo()
    connection = await connect(nats_server.url, issued)
    await asyncio.wait_for(connection.closed.wait(), 8)
    assert "expired" in str(connection.nc.last_error).lower(), connection.nc.last_error
    await asyncio.sleep(1)  # in the very second of `exp` (whole seconds) it may still let in
    assert "authorization violation" in await refused_at_connect(nats_server.url, issued)
    shown = await clinic.ok("GET", f"/v1/integrator-credentials/{issued['credential_id']}")
    assert shown["status"] == "expired"


# -- the seed is kept nowhere -------------------------------------------------------------------


async def test_the_creds_appear_in_no_event_log_line_or_table(
    postgres_dsn: str,
    nats_server: NatsServer,
    nc: NATS,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    verbose = RuntimeSettings(
        DATABASE_URL=postgres_dsn, NATS_URL=nats_server.url, log_format="json", log_level="debug"
    )
    definition = scheduling.build(SchedulingSettings(operator_key=OPERATOR_KEY), SEALER)
    async with serving(build_app(definition, verbose)) as api:
        clinic = await register_clinic(api)
        retry = {"Idempotency-Key": f"creds-{uuid.uuid4()}"}
        first = await clinic.call(
            "POST", "/v1/integrator-credentials", json={"label": "EHR"}, headers=retry
        )
        assert first.status_code == 201, first.text
        issued = first.json()
        replayed = await clinic.call(
            "POST", "/v1/integrator-credentials", json={"label": "EHR"}, headers=retry
        )
        assert_problem(replayed, 409, "idempotent_secret_withheld")
        await clinic.ok("DELETE", f"/v1/integrator-credentials/{issued['credential_id']}", 204)

        token, seed = read_creds(issued["creds"])
        secrets = {"seed": seed, "jwt": token, "jwt signature": token.rsplit(".", 1)[1]}
        clinic_events = f"antechamber.{clinic.clinic_id}.scheduling.>"

        async def published() -> bool:
            found = await _stream_texts(nc, clinic_events)
            return any("IntegratorCredentialRevoked" in text for text in found)

        await eventually(published, timeout=10, what="the credential's events on JetStream")
        places = {
            "stream": "\n".join(await _stream_texts(nc, clinic_events)),
            "tables": await _every_row(postgres_dsn, "scheduling"),
        }
    places["logs"] = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert '"event": "service started"' in places["logs"]  # the JSON logs were captured
    assert "IntegratorCredentialIssued" in places["tables"]
    assert issued["public_key"] in places["tables"]  # not a secret; found where it is kept
    for place, text in places.items():
        found = [what for what, secret in secrets.items() if secret in text]
        assert not found, f"the {found} of a credential is in the {place}"


async def _stream_texts(nc: NATS, subject: str) -> list[str]:
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True)
    texts = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            texts.append(msg.subject + " " + msg.data.decode())
    finally:
        await sub.unsubscribe()
    return texts


async def _every_row(dsn: str, schema: str) -> str:
    """Every row of every table in ``schema``, as text."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            schema,
        )
        rows = []
        for table in tables:
            name = f'"{schema}"."{table["table_name"]}"'
            rows += [r[0] for r in await conn.fetch(f"SELECT t::text FROM {name} t")]
        return "\n".join(rows)
    finally:
        await conn.close()


# -- NATS converges on Postgres -------------------------------------------------------------------


async def test_a_nats_server_that_lost_the_revocations_gets_them_back(
    postgres_dsn: str,
    short_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server restarted from an older copy of its account claims, and pushes that fail while
    it is down, converge on what Postgres holds."""
    folder = short_tmp / f"nats-{uuid.uuid4().hex[:6]}"
    server = NatsServer(folder, monitor_port=0, auth=harness_auth()).start()
    claims_copy = short_tmp / f"claims-{uuid.uuid4().hex[:6]}"
    try:
        app = scheduling_app(postgres_dsn, server.url, integrator_sync_interval_s=0.5)
        async with serving(app) as api:
            clinic = await register_clinic(api)
            issued = await issue(clinic)
            shutil.copytree(folder / "jwt", claims_copy)  # before the revocation
            await clinic.ok("DELETE", f"/v1/integrator-credentials/{issued['credential_id']}", 204)
            assert "authorization violation" in await refused_at_connect(server.url, issued)

            server.stop()
            logs = ""

            async def push_failed() -> bool:
                nonlocal logs
                logs += capsys.readouterr().err
                return "NATS was not told which integrator credentials to refuse" in logs

            await eventually(push_failed, timeout=15, what="a failed push, logged")
            shutil.rmtree(folder / "jwt")
            shutil.copytree(claims_copy, folder / "jwt")
            server.start()

            async def refused_again() -> bool:
                try:
                    await refused_at_connect(server.url, issued)
                except AssertionError:
                    return False
                return True

            await eventually(refused_again, timeout=10, what="the revocation back on the server")
    finally:
        server.stop()
    assert issued["public_key"] not in _revoked_in(claims_copy)  # the copy had lost it
    assert issued["public_key"] in _revoked_in(folder / "jwt")


def _revoked_in(claims_folder: Path) -> dict[str, int]:
    """The platform account's revocations, as a server's claims folder holds them."""
    revoked: dict[str, int] = {}
    for path in claims_folder.rglob("*.jwt"):
        claims = decode_jwt(path.read_text())
        revoked |= claims.get("nats", {}).get("revocations") or {}
    return revoked


# -- the domain -----------------------------------------------------------------------------------


def test_a_credential_is_issued_once_and_revoked_once() -> None:
    credential_id, now = uuid.uuid4(), datetime.now(UTC)
    issued = credentials.issue_credential(
        None, credential_id, "UKEY", "EHR", now, now + timedelta(days=1)
    )
    assert issued == [
        IntegratorCredentialIssued(
            credential_id=credential_id,
            nats_user=f"int_{credential_id.hex}",
            public_key="UKEY",
            label="EHR",
            expires_at=now + timedelta(days=1),
        )
    ]
    state = credentials.evolve_credential(None, issued[0])
    assert credentials.revoke_credential(state) == [
        IntegratorCredentialRevoked(credential_id=credential_id)
    ]
    revoked = credentials.evolve_credential(
        state, IntegratorCredentialRevoked(credential_id=credential_id)
    )
    assert credentials.revoke_credential(revoked) == []
    with pytest.raises(Conflict, match="already exists"):
        credentials.issue_credential(state, credential_id, "UKEY", "EHR", now, now)
    with pytest.raises(NotFound, match="no integrator credential"):
        credentials.revoke_credential(None)
    for expires in (now, now + timedelta(days=366)):
        with pytest.raises(Invalid, match="within 365 days"):
            credentials.issue_credential(None, credential_id, "UKEY", "EHR", now, expires)
