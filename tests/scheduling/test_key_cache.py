"""The API key -> clinic cache: kept per replica, dropped on every replica by a change.

Two replicas of the service share the schema, as in production. Each request to replica B
comes right after replica A answered the change, with nothing waited for in between.
"""

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from runtime.embedded import NatsServer
from runtime.sealing import secret_digest
from services.scheduling.keys import ClinicKeys
from tests.scheduling.conftest import OPERATOR, ClinicHandle, register_clinic, scheduling_app
from tests.support import assert_problem, eventually, serving


def keys_of(app: FastAPI) -> ClinicKeys:
    keys: ClinicKeys = app.state.scheduling_access.keys
    return keys


@dataclass
class Replicas:
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    b_keys: ClinicKeys


@pytest.fixture
async def replicas(postgres_dsn: str, nats_server: NatsServer) -> AsyncIterator[Replicas]:
    apps = [scheduling_app(postgres_dsn, nats_server.url) for _ in range(2)]
    async with AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(serving(app)) for app in apps]

        async def listening() -> bool:
            return all(keys_of(app).cache.live for app in apps)

        await eventually(listening, timeout=10, what="the key caches' listeners")
        yield Replicas(a, b, keys_of(apps[1]))


async def clinic_on_both(replicas: Replicas) -> tuple[ClinicHandle, ClinicHandle]:
    """A clinic registered through A, and the same key used on B (cached there once used)."""
    on_a = await register_clinic(replicas.a)
    on_b = ClinicHandle(on_a.clinic_id, on_a.slug, on_a.key, replicas.b)
    await on_b.ok("GET", "/v1/clinic")
    assert replicas.b_keys.cache.get(secret_digest(on_a.key)) is not None
    return on_a, on_b


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_at_once(
    replicas: Replicas,
) -> None:
    on_a, on_b = await clinic_on_both(replicas)
    path = f"/v1/clinics/{on_a.clinic_id}/api-keys"
    [key] = (await replicas.a.get(path, headers=OPERATOR)).json()
    revoked = await replicas.a.delete(f"{path}/{key['key_id']}", headers=OPERATOR)
    assert revoked.status_code == 204, revoked.text
    assert_problem(await on_b.call("GET", "/v1/clinic"), 401, "unauthenticated")
    assert_problem(await on_a.call("GET", "/v1/clinic"), 401, "unauthenticated")


async def test_a_suspension_and_a_reinstatement_take_effect_on_the_other_replica_at_once(
    replicas: Replicas,
) -> None:
    on_a, on_b = await clinic_on_both(replicas)
    clinic_path = f"/v1/clinics/{on_a.clinic_id}"
    suspended = await replicas.a.post(
        f"{clinic_path}/suspend", headers=OPERATOR, json={"reason": "unpaid"}
    )
    assert suspended.status_code == 200, suspended.text
    assert_problem(await on_b.call("GET", "/v1/clinic"), 403, "clinic_suspended")
    reinstated = await replicas.a.post(f"{clinic_path}/reinstate", headers=OPERATOR)
    assert reinstated.status_code == 200, reinstated.text
    await on_b.ok("GET", "/v1/clinic")


async def test_new_settings_apply_on_the_other_replica_at_once(replicas: Replicas) -> None:
    on_a, on_b = await clinic_on_both(replicas)
    practitioner = await on_b.practitioner()
    client = await on_b.client()
    session = await on_b.session(practitioner, [client])
    assert session["video_mode"] == "session_link"  # the professional plan's default

    await on_a.ok("PATCH", "/v1/clinic/settings", json={"plan": "basic"})
    # B schedules with the settings it holds for the caller: now the basic plan's default.
    session = await on_b.session(practitioner, [client])
    assert session["video_mode"] == "practitioner_room"


async def test_unknown_keys_fill_nothing_and_known_keys_are_kept_by_their_digest(
    replicas: Replicas,
) -> None:
    on_a, _ = await clinic_on_both(replicas)
    kept = len(replicas.b_keys.cache)
    for _ in range(20):
        unknown = {"Authorization": f"Bearer ac_{secrets.token_urlsafe(32)}"}
        response = await replicas.b.get("/v1/clinic", headers=unknown)
        assert_problem(response, 401, "unauthenticated")
    assert len(replicas.b_keys.cache) == kept
    held: Any = replicas.b_keys.cache._entries  # what the cache is keyed by
    assert on_a.key.encode() not in held
    assert secret_digest(on_a.key) in held
