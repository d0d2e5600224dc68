"""Integrators' NATS credentials: issued and revoked through the clinic API, enforced by a real
nats-server on plain nats-py clients (none of our client code on the integrator's side)."""

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import textwrap
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
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.scheduling import (
    ConsumerStart,
    IntegratorCredentialIssued,
    IntegratorCredentialRevoked,
)
from runtime.embedded import NatsServer
from runtime.nats_auth import ADMIN_USER, Issuer
from runtime.nats_jwt import decode_jwt, public_key, read_creds
from runtime.refusals import Conflict, Invalid, NotFound
from runtime.service import build_app
from runtime.settings import RuntimeSettings
from runtime.streams import EVENT_STREAMS, ensure_stream, service_stream
from services.scheduling import app as scheduling
from services.scheduling import credentials, integrators_api
from services.scheduling.config import SchedulingSettings
from services.scheduling.integrator_consumers import MAX_ACK_PENDING
from tests.scheduling.conftest import (
    OPERATOR,
    OPERATOR_KEY,
    SEALER,
    ClinicHandle,
    register_clinic,
    scheduling_app,
)
from tests.support import assert_problem, eventually, harness_auth, serving

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrators.md"
SCHEDULING = "ANTECHAMBER_SCHEDULING"
LINKS = "ANTECHAMBER_LINKS"
MEDIA = "ANTECHAMBER_MEDIA"
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


async def consumers_of(nc: NATS, name: str) -> dict[str, ConsumerInfo]:
    """The consumers named ``name`` on the event streams, by stream, as the admin sees them."""
    found = {}
    for stream in EVENT_STREAMS:
        try:
            found[stream] = await nc.jetstream().consumer_info(stream, name)
        except NotFoundError:  # no such consumer, or no such stream
            continue
    return found


async def streams_there(nc: NATS) -> list[str]:
    """The event streams that exist (a service that never ran on this server has none)."""
    there = []
    for stream in EVENT_STREAMS:
        try:
            await nc.jetstream().stream_info(stream)
        except NotFoundError:
            continue
        there.append(stream)
    return there


async def fetch_all(sub: Any, until: str) -> list[Any]:
    """Messages pulled (and acknowledged, synchronously) until one whose subject ends with
    ``until`` has arrived."""
    received: list[Any] = []

    async def arrived() -> bool:
        try:
            batch = await sub.fetch(50, timeout=0.5)
        except nats.errors.TimeoutError:
            return False
        for msg in batch:
            await msg.ack_sync()
        received.extend(batch)
        return any(m.subject.endswith(until) for m in received)

    await eventually(arrived, timeout=10, what=f"{until} through the consumer")
    return received


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
    assert issued["start"] == "all"
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

    # The durable pull consumer made for it, bound as the integrator docs show it.
    js = connection.nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=issued["consumer_name"], stream=SCHEDULING)
    received = await fetch_all(sub, until=".PractitionerAdded")
    subjects = [m.subject for m in received]
    assert all(s.startswith(f"antechamber.{clinic.clinic_id}.scheduling.") for s in subjects)
    assert subjects[0].endswith(".ClinicRegistered")  # from the start of the stream
    [added] = [json.loads(m.data) for m in received if m.subject.endswith(".PractitionerAdded")]
    assert added["data"]["practitioner_id"] == mine["practitioner_id"]
    info = await nc.jetstream().consumer_info(SCHEDULING, issued["consumer_name"])
    assert info.num_ack_pending == 0  # acknowledged
    # nats-py's pull_subscribe binds too: it asks for the consumer's info first and, finding
    # it, creates nothing.
    bound = await js.pull_subscribe(
        f"antechamber.{clinic.clinic_id}.>", durable=issued["consumer_name"], stream=LINKS
    )
    with pytest.raises(nats.errors.TimeoutError):  # nothing of A's in links' stream: no error
        await bound.fetch(1, timeout=0.5)
    assert not any("permissions violation" in e for e in connection.errors), connection.errors


async def test_the_integrator_docs_examples_work_as_they_are_written(
    clinic: ClinicHandle,
    nats_server: NatsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/integrators.md's Python, every block in order, with this credential's values in
    place of the example's: it connects, prints live events and handles the pulled ones."""
    issued = await issue(clinic)
    creds = tmp_path / "clinic.creds"
    creds.write_text(issued["creds"])
    code = "\n".join(re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL))
    for example, real in {
        '["nats://nats.example.org:4222"]': repr([nats_server.url]),
        '"clinic.creds"': repr(str(creds)),
        '"int_3f2b9c1d4e5a46b7a8c9d0e1f2a3b4c5"': repr(issued["nats_user"]),
        '"c_5b1f0e3a9d2c4e7f"': repr(clinic.clinic_id),
    }.items():
        assert example in code, example
        code = code.replace(example, real)
    # Top-level await, as in `python -m asyncio`: run as the body of a coroutine.
    source = (
        "async def example(handle):\n    try:\n"
        + textwrap.indent(code, " " * 8)
        + "\n    finally:\n        await nc.close()\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    handled: list[dict[str, Any]] = []

    async def handle(envelope: dict[str, Any]) -> None:
        handled.append(envelope)

    running = asyncio.create_task(namespace["example"](handle))
    try:
        await asyncio.sleep(0.5)  # connected and subscribed
        mine = await clinic.practitioner()

        async def pulled() -> bool:
            return any(e["data"].get("practitioner_id") == mine["practitioner_id"] for e in handled)

        await eventually(pulled, timeout=10, what="the practitioner through the example")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert handled[0]["type"] == "ClinicRegistered"  # from the start
    assert {e["clinic_id"] for e in handled} == {clinic.clinic_id}
    assert "PractitionerAdded" in capsys.readouterr().out  # the live subscription's print


async def test_consumers_are_made_at_issuance_for_the_clinic_and_deliver_nowhere(
    clinic: ClinicHandle, integrator: tuple[dict[str, Any], Integrator], nc: NATS
) -> None:
    issued, _ = integrator
    name = issued["consumer_name"]
    there = await streams_there(nc)
    assert {SCHEDULING, LINKS} <= set(there)  # scheduling's own, and one it consumes
    made = await consumers_of(nc, name)
    assert sorted(made) == sorted(there)
    assert issued["streams"] == list(EVENT_STREAMS)
    for info in made.values():
        assert info.config.durable_name == name
        assert info.config.filter_subject == f"antechamber.{clinic.clinic_id}.>"
        assert info.config.deliver_subject is None  # a pull consumer
        assert info.config.ack_policy == AckPolicy.EXPLICIT
        assert info.config.deliver_policy == DeliverPolicy.ALL
        assert info.config.max_ack_pending == MAX_ACK_PENDING


async def test_a_credential_issued_for_new_events_reads_from_its_issuance_on(
    clinic: ClinicHandle, nats_server: NatsServer, nc: NATS
) -> None:
    before = await clinic.practitioner("Dr Before")
    last_before = f"antechamber.{clinic.clinic_id}.scheduling.PractitionerAdded"

    async def stored() -> bool:
        try:
            await nc.jetstream().get_last_msg(SCHEDULING, last_before)
        except NotFoundError:
            return False
        return True

    await eventually(stored, timeout=10, what="the earlier events in the stream")
    await asyncio.sleep(1.1)  # "new" is from the second of issuance
    issued = await issue(clinic, start="new")
    assert issued["start"] == "new"
    after = await clinic.practitioner("Dr After")
    connection = await connect(nats_server.url, issued)
    try:
        js = connection.nc.jetstream()
        sub = await js.pull_subscribe_bind(durable=issued["consumer_name"], stream=SCHEDULING)
        received = await fetch_all(sub, until=".PractitionerAdded")
    finally:
        await connection.nc.close()
    added = [json.loads(m.data) for m in received if m.subject.endswith(".PractitionerAdded")]
    assert [a["data"]["practitioner_id"] for a in added] == [after["practitioner_id"]]
    assert before["practitioner_id"] not in {a["data"]["practitioner_id"] for a in added}
    assert not any(m.subject.endswith(".ClinicRegistered") for m in received)
    info = await nc.jetstream().consumer_info(SCHEDULING, issued["consumer_name"])
    assert info.config.deliver_policy == DeliverPolicy.BY_START_TIME
    issued_at = datetime.fromisoformat(issued["issued_at"])
    assert info.config.opt_start_time == issued_at.replace(microsecond=0)


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


async def test_a_credential_may_create_or_delete_no_consumer(
    api: httpx.AsyncClient,
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    """Refused means a permissions violation and never a consumer: not even one named as the
    credential and filtered to its clinic, the shape scheduling makes for it."""
    issued, connection = integrator
    name = issued["consumer_name"]
    other = await register_clinic(api)
    own, theirs = f"antechamber.{clinic.clinic_id}.>", f"antechamber.{other.clinic_id}.>"
    made = (await consumers_of(nc, name))[LINKS].config
    js = connection.nc.jetstream(timeout=1)
    # Through nats-py: as scheduling makes it, filtered to the other clinic, unfiltered, under
    # another name, ephemeral.
    attempts = [
        js.add_consumer(LINKS, ConsumerConfig(name=name, durable_name=name, filter_subject=own)),
        js.pull_subscribe(theirs, durable="x", stream=LINKS),
        js.add_consumer(LINKS, ConsumerConfig(name=name, durable_name=name)),
        js.add_consumer(LINKS, ConsumerConfig(name=name, durable_name=name, filter_subject=">")),
        js.add_consumer(LINKS, ConsumerConfig(name="x", durable_name="x", filter_subject=own)),
        js.add_consumer(LINKS, ConsumerConfig(filter_subject=own)),  # ephemeral: a server name
        js.delete_consumer(LINKS, name),
    ]
    for attempt in attempts:
        with pytest.raises(nats.errors.TimeoutError):  # nothing answers a refused request
            await attempt
    # Raw requests, every consumer-create subject shape the JetStream API has.
    named = {"durable_name": name, "name": name}
    raw = {
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.{own}": {"filter_subject": own},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.{theirs}": {"filter_subject": theirs},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}": {},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.{name}.>": {"filter_subject": ">"},
        f"$JS.API.CONSUMER.CREATE.{LINKS}": {},
        f"$JS.API.CONSUMER.DURABLE.CREATE.{LINKS}.{name}": {"filter_subject": own},
        f"$JS.API.CONSUMER.CREATE.{LINKS}.x.{own}": {"filter_subject": own},
        f"$JS.API.CONSUMER.DELETE.{LINKS}.{name}": None,
    }
    for subject, config in raw.items():
        request = {"stream_name": LINKS, "config": named | config} if config is not None else {}
        with pytest.raises(nats.errors.TimeoutError):
            await connection.nc.request(subject, json.dumps(request).encode(), timeout=0.5)
        assert await connection.refused(subject), (subject, connection.errors)
    await _no_consumer(nc, LINKS, "x")
    assert (await consumers_of(nc, name))[LINKS].config == made  # untouched
    # It may read its own consumer, but not reach another credential's (named as the other).
    assert (await js.consumer_info(LINKS, name)).config.filter_subject == own
    theirs_issued = await issue(other)
    for verb in ("INFO", "DELETE", "MSG.NEXT"):
        subject = f"$JS.API.CONSUMER.{verb}.{SCHEDULING}.{theirs_issued['consumer_name']}"
        await connection.nc.publish(subject, b"")
        assert await connection.refused(subject), (subject, connection.errors)


async def test_a_credential_may_not_deliver_its_events_to_another_clinics_subjects(
    api: httpx.AsyncClient,
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nc: NATS,
) -> None:
    """A push consumer on links' stream, filtered to its own clinic, delivering into another
    clinic's scheduling subjects would have the other clinic's integrators receive its events,
    and scheduling's stream store them as the other clinic's: integrators create no consumer,
    push or pull, under any name."""
    issued, connection = integrator
    name = issued["consumer_name"]
    other = await register_clinic(api)
    own = f"antechamber.{clinic.clinic_id}.>"
    forged = f"antechamber.{other.clinic_id}.scheduling.SessionCancelled"
    landed: list[str] = []

    async def on_forged(msg: Any) -> None:
        landed.append(msg.subject)

    await nc.subscribe(forged, cb=on_forged)
    await nc.flush()
    for stream in (LINKS, SCHEDULING):
        for consumer in (name, "pump"):
            config = {
                "name": consumer,
                "durable_name": consumer,
                "filter_subject": own,
                "deliver_subject": forged,
                "ack_policy": "none",
            }
            request = json.dumps({"stream_name": stream, "config": config}).encode()
            subject = f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{own}"
            with pytest.raises(nats.errors.TimeoutError):
                await connection.nc.request(subject, request, timeout=0.5)
            assert await connection.refused(subject), (subject, connection.errors)
    push = connection.nc.jetstream(timeout=1).subscribe(
        own, durable="pump", stream=LINKS, config=ConsumerConfig(deliver_subject=forged)
    )
    with pytest.raises(nats.errors.TimeoutError):
        await push
    await _no_consumer(nc, LINKS, "pump")
    await _no_consumer(nc, SCHEDULING, "pump")
    for info in (await consumers_of(nc, name)).values():
        assert info.config.deliver_subject is None  # still the pull consumer scheduling made
    await clinic.practitioner()  # A's events flow; none of them into B's subjects
    await asyncio.sleep(0.5)
    assert landed == []
    with pytest.raises(NotFoundError):
        await nc.jetstream().get_last_msg(SCHEDULING, forged)


# -- revocation, suspension, expiry ---------------------------------------------------------------


async def closed_within(connection: Integrator, seconds: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(connection.closed.wait(), seconds)
    return time.monotonic() - started


async def test_revoking_closes_the_connection_at_once_and_refuses_it_after(
    clinic: ClinicHandle,
    integrator: tuple[dict[str, Any], Integrator],
    nats_server: NatsServer,
    nc: NATS,
) -> None:
    issued, connection = integrator
    path = f"/v1/integrator-credentials/{issued['credential_id']}"
    assert SCHEDULING in await consumers_of(nc, issued["consumer_name"])
    started = time.monotonic()
    await clinic.ok("DELETE", path, 204)
    await asyncio.wait_for(connection.closed.wait(), 3)
    took = time.monotonic() - started
    assert "revoked" in str(connection.nc.last_error).lower(), connection.nc.last_error
    assert took < 3, f"revocation to close: {took:.3f}s"
    assert "authorization violation" in await refused_at_connect(nats_server.url, issued)
    assert await consumers_of(nc, issued["consumer_name"]) == {}  # deleted before the answer
    shown = await clinic.ok("GET", path)
    assert shown["status"] == "revoked"
    await clinic.ok("DELETE", path, 204)  # again: nothing changes
    assert (await clinic.ok("GET", path))["revoked_at"] == shown["revoked_at"]


async def test_suspending_the_clinic_cuts_every_credential_and_reinstating_restores_them(
    api: httpx.AsyncClient, clinic: ClinicHandle, nats_server: NatsServer, nc: NATS
) -> None:
    kept, revoked = await issue(clinic, label="kept"), await issue(clinic, label="revoked")
    await clinic.ok("DELETE", f"/v1/integrator-credentials/{revoked['credential_id']}", 204)
    other = await register_clinic(api)
    bystander = await issue(other)
    connection = await connect(nats_server.url, kept)
    unrelated = await connect(nats_server.url, bystander)
    name = kept["consumer_name"]
    sub = await connection.nc.jetstream().pull_subscribe_bind(durable=name, stream=SCHEDULING)
    await fetch_all(sub, until=".IntegratorCredentialRevoked")  # read so far, acknowledged
    position = (await nc.jetstream().consumer_info(SCHEDULING, name)).ack_floor.stream_seq

    suspend = await api.post(
        f"/v1/clinics/{clinic.clinic_id}/suspend", headers=OPERATOR, json={"reason": "unpaid"}
    )
    assert suspend.status_code == 200, suspend.text
    await asyncio.wait_for(connection.closed.wait(), 3)
    assert "revoked" in str(connection.nc.last_error).lower()
    assert "authorization violation" in await refused_at_connect(nats_server.url, kept)
    assert unrelated.nc.is_connected  # another clinic's credential is untouched
    kept_while_suspended = await consumers_of(nc, name)
    assert SCHEDULING in kept_while_suspended
    assert kept_while_suspended[SCHEDULING].ack_floor.stream_seq == position

    reinstate = await api.post(f"/v1/clinics/{clinic.clinic_id}/reinstate", headers=OPERATOR)
    assert reinstate.status_code == 200, reinstate.text
    again = await connect(nats_server.url, kept)
    assert again.nc.is_connected
    assert "authorization violation" in await refused_at_connect(nats_server.url, revoked)
    # It goes on where it was: the suspension is the next of its clinic's events it reads.
    sub = await again.nc.jetstream().pull_subscribe_bind(durable=name, stream=SCHEDULING)
    after = await fetch_all(sub, until=".ClinicReinstated")
    assert after[0].subject.endswith(".ClinicSuspended"), [m.subject for m in after]
    assert after[0].metadata.sequence.stream > position
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


async def test_an_expired_credentials_consumers_are_deleted_at_the_next_sync(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = scheduling_app(postgres_dsn, nats_server.url, integrator_sync_interval_s=0.5)
    async with serving(app) as api:
        clinic = await register_clinic(api)
        a_day_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, seconds=-2)
        monkeypatch.setattr(integrators_api, "now", lambda: a_day_ago)
        issued, lasting = await issue(clinic, expires_in_days=1), await issue(clinic)
        monkeypatch.undo()
        assert SCHEDULING in await consumers_of(nc, issued["consumer_name"])

        async def deleted() -> bool:
            return await consumers_of(nc, issued["consumer_name"]) == {}

        await eventually(deleted, timeout=10, what="the expired credential's consumers deleted")
        assert SCHEDULING in await consumers_of(nc, lasting["consumer_name"])


async def test_a_stream_made_later_gets_the_consumers_and_an_integrators_own_is_replaced(
    postgres_dsn: str, short_tmp: Path
) -> None:
    """A stream that did not exist at issuance (its service had not started) gets each
    credential's consumer at the next sync, starting as the others do; a consumer an
    integrator made itself before it lost the right, delivering somewhere, is replaced."""
    server = NatsServer(short_tmp / f"nats-{uuid.uuid4().hex[:6]}", auth=harness_auth()).start()
    admin = await nats.connect(
        server.url, user_credentials=str(harness_auth().admin_creds), inbox_prefix="_INBOX_admin"
    )
    js = admin.jetstream()
    try:
        app = scheduling_app(postgres_dsn, server.url, integrator_sync_interval_s=0.5)
        async with serving(app) as api:
            clinic = await register_clinic(api)
            issued = await issue(clinic, start="new")
            name, own = issued["consumer_name"], f"antechamber.{clinic.clinic_id}.>"
            made = await consumers_of(admin, name)
            assert SCHEDULING in made
            assert MEDIA not in made
            await js.delete_consumer(LINKS, name)
            pump = ConsumerConfig(
                name=name, durable_name=name, filter_subject=own, deliver_subject="elsewhere"
            )
            await js.add_consumer(LINKS, pump)
            await ensure_stream(js, service_stream("media"))

            async def converged() -> bool:
                now = await consumers_of(admin, name)
                return MEDIA in now and now[LINKS].config.deliver_subject is None

            await eventually(converged, timeout=10, what="the consumers in step")
            now = await consumers_of(admin, name)
            assert made[SCHEDULING].config.deliver_policy == DeliverPolicy.BY_START_TIME
            for stream in (MEDIA, LINKS):
                assert _shape(now[stream]) == _shape(made[SCHEDULING]), stream
    finally:
        await admin.close()
        server.stop()


def _shape(info: ConsumerInfo) -> tuple[Any, ...]:
    config = info.config
    return (
        config.filter_subject,
        config.deliver_subject,
        config.ack_policy,
        config.deliver_policy,
        config.opt_start_time,
    )


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
            start=ConsumerStart.ALL,
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
