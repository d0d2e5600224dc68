"""The scheduling service as it runs in production, on the harness's NATS and Postgres.

Every test registers its own clinics, so tests share the service's schema and streams
without seeing each other's objects (which is also what tenancy promises).
"""

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from contracts.envelope import RawEnvelope
from contracts.events import Event
from runtime.embedded import NatsServer
from runtime.sealing import Sealer, new_key
from runtime.service import build_app
from services.scheduling import app as scheduling
from services.scheduling.config import SchedulingSettings
from tests.support import envelope_for, publish_envelope, serving, settings

OPERATOR_KEY = "op-" + secrets.token_urlsafe(24)
SEALER = Sealer(new_key())
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def scheduling_app(dsn: str, nats_url: str, **config: Any) -> FastAPI:
    service_settings = SchedulingSettings(operator_key=OPERATOR_KEY, **config)
    return build_app(scheduling.build(service_settings, SEALER), settings(dsn, nats_url))


@pytest.fixture
async def app(postgres_dsn: str, nats_server: NatsServer) -> AsyncIterator[FastAPI]:
    fastapi_app = scheduling_app(postgres_dsn, nats_server.url)
    async with serving(fastapi_app):
        yield fastapi_app


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@dataclass
class ClinicHandle:
    """A registered clinic with an API key, and the ids of what the test created in it."""

    clinic_id: str
    slug: str
    key: str
    api: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        return await self.api.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def practitioner(self, name: str = "Dr Ada Lovelace") -> dict[str, Any]:
        slug = f"p{uuid.uuid4().hex[:8]}"
        result: dict[str, Any] = await self.ok(
            "POST", "/v1/practitioners", 201, json={"display_name": name, "room_slug": slug}
        )
        return result

    async def client(self, name: str = "Grace Hopper", **extra: Any) -> dict[str, Any]:
        body = {"display_name": name, "email": "grace@example.org"} | extra
        result: dict[str, Any] = await self.ok("POST", "/v1/clients", 201, json=body)
        return result

    async def client_room(
        self, client: dict[str, Any], practitioner: dict[str, Any], title: str = "Weekly"
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok(
            "POST",
            f"/v1/clients/{client['client_id']}/rooms",
            201,
            json={"practitioner_id": practitioner["practitioner_id"], "title": title},
        )
        return result

    async def session(
        self, practitioner: dict[str, Any], clients: list[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        body = {
            "practitioner_id": practitioner["practitioner_id"],
            "client_ids": [c["client_id"] for c in clients],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
        } | extra
        result: dict[str, Any] = await self.ok("POST", "/v1/sessions", 201, json=body)
        return result


async def register_clinic(
    api: httpx.AsyncClient, plan: str = "professional", **settings_: Any
) -> ClinicHandle:
    slug = f"c{uuid.uuid4().hex[:10]}"
    response = await api.post(
        "/v1/clinics",
        headers=OPERATOR,
        json={"name": "Riverside Therapy", "slug": slug, "settings": {"plan": plan} | settings_},
    )
    assert response.status_code == 201, response.text
    clinic_id = response.json()["clinic_id"]
    response = await api.post(
        f"/v1/clinics/{clinic_id}/api-keys", headers=OPERATOR, json={"label": "tests"}
    )
    assert response.status_code == 201, response.text
    return ClinicHandle(clinic_id, slug, response.json()["key"], api)


@pytest.fixture
async def clinic(api: httpx.AsyncClient) -> ClinicHandle:
    return await register_clinic(api)


async def report(
    nc: NATS, service: str, clinic_id: str, event: Event, occurred_at: datetime | None = None
) -> RawEnvelope:
    """Publish ``event`` as ``service``'s relay would (the service itself is not running)."""
    envelope = envelope_for(event, service=service, clinic_id=clinic_id, occurred_at=occurred_at)
    await publish_envelope(nc.jetstream(), envelope)
    return envelope
