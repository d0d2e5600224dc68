"""Tenant isolation: with its own key, clinic B can neither see nor touch clinic A's objects.

The matrix walks every clinic route of the app (read from ``app.routes``, so a route added
later is covered, or the test says which body it lacks) with A's ids and B's key.
"""

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from tests.scheduling.conftest import OPERATOR, ClinicHandle, register_clinic
from tests.support import assert_problem

PATH_PARAM = re.compile(r"{(\w+)}")
OPERATOR_PREFIX = "/v1/clinics"
PUBLIC_PREFIX = "/v1/public/"
BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass
class ClinicA:
    """Clinic A and everything created in it; ``ids`` fills route paths."""

    handle: ClinicHandle
    practitioner: dict[str, Any]
    client: dict[str, Any]
    linked: dict[str, Any]
    room: dict[str, Any]
    session: dict[str, Any]
    credential: dict[str, Any]

    @property
    def ids(self) -> dict[str, str]:
        return {
            "practitioner_id": self.practitioner["practitioner_id"],
            "client_id": self.linked["client_id"],
            "room_id": self.room["room_id"],
            "session_id": self.session["session_id"],
            "attendee_id": self.session["attendees"][0]["attendee_id"],
            "credential_id": self.credential["credential_id"],
        }

    @property
    def contact_id(self) -> str:
        return str(self.linked["linked_accounts"][0]["contact_id"])

    def secrets(self) -> set[str]:
        """Strings that would show A's objects in an answer to B."""
        return {
            *self.ids.values(),
            self.client["client_id"],
            self.practitioner["room_id"],
            self.contact_id,
            self.handle.clinic_id,
            self.handle.slug,
            self.practitioner["room_slug"],
            self.credential["nats_user"],
            self.credential["public_key"],
        }


def _future(days: int) -> dict[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    return {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=50)).isoformat(),
    }


Body = Callable[[ClinicA], dict[str, Any] | None]

BODIES: dict[tuple[str, str], Body] = {
    ("PATCH", "/v1/clinic/settings"): lambda a: {"time_zone": "Europe/Berlin"},
    ("POST", "/v1/practitioners"): lambda a: {
        "display_name": "Dr B",
        "room_slug": f"b{uuid.uuid4().hex[:8]}",
    },
    ("POST", "/v1/clients"): lambda a: {"display_name": "B's client"},
    ("PATCH", "/v1/clients/{client_id}"): lambda a: {"display_name": "Renamed by B"},
    ("POST", "/v1/clients/{client_id}/erasure"): lambda a: None,
    ("POST", "/v1/clients/{client_id}/rooms"): lambda a: {
        "practitioner_id": a.ids["practitioner_id"],
        "title": "B's room",
    },
    ("PATCH", "/v1/rooms/{room_id}"): lambda a: {"title": "Renamed by B"},
    ("POST", "/v1/sessions"): lambda a: {
        "practitioner_id": a.ids["practitioner_id"],
        "client_ids": [a.ids["client_id"]],
        **_future(3),
    },
    ("POST", "/v1/sessions/ad-hoc"): lambda a: {
        "practitioner_id": a.ids["practitioner_id"],
        "client_ids": [a.ids["client_id"]],
    },
    ("POST", "/v1/sessions/{session_id}/reschedule"): lambda a: _future(5),
    ("POST", "/v1/sessions/{session_id}/cancel"): lambda a: {"reason": "B says so"},
    ("POST", "/v1/sessions/{session_id}/attendees"): lambda a: {
        "client_id": a.ids["client_id"],
        "contact_id": a.contact_id,
    },
    ("PUT", "/v1/sessions/{session_id}/link-sharing"): lambda a: {"enabled": True},
    ("POST", "/v1/sessions/{session_id}/complete"): lambda a: None,
    ("POST", "/v1/integrator-credentials"): lambda a: {"label": "B's integrator"},
}
"""A valid body per clinic route that takes one (None: the route takes no body)."""


def api_routes(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, path, takes a body) of every API route.

    Since FastAPI 0.137 ``app.routes`` holds included routers unflattened; the contexts give
    each endpoint with its full path.
    """
    found = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path and context.methods:
            has_body = route.body_field is not None
            found |= {(method, context.path, has_body) for method in context.methods}
    return sorted(found)


def is_operator(path: str) -> bool:
    return path == OPERATOR_PREFIX or path.startswith(OPERATOR_PREFIX + "/")


def clinic_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every clinic route: under /v1, neither operator nor public.

    Fails if a route that takes a body has none in BODIES, so a new route cannot slip by.
    """
    routes = [
        (method, path, has_body)
        for method, path, has_body in api_routes(app)
        if path.startswith("/v1/") and not is_operator(path) and not path.startswith(PUBLIC_PREFIX)
    ]
    missing = [
        (method, path)
        for method, path, has_body in routes
        if (has_body or method in BODY_METHODS) and (method, path) not in BODIES
    ]
    assert not missing, f"define a body in BODIES for {missing}"
    return [(method, path) for method, path, _ in routes]


def fill(path: str, ids: dict[str, str]) -> str:
    unknown = set(PATH_PARAM.findall(path)) - set(ids)
    assert not unknown, f"{path}: no id to fill {unknown}; extend ClinicA.ids"
    return PATH_PARAM.sub(lambda m: ids[m.group(1)], path)


def shown(response: httpx.Response) -> str:
    """The answer, less a problem's ``instance`` (which only echoes the caller's own path)."""
    if response.headers.get("content-type") != "application/problem+json":
        return response.text
    return json.dumps({k: v for k, v in response.json().items() if k != "instance"})


async def snapshot(a: ClinicA) -> dict[str, Any]:
    """What A sees of its own objects."""
    h, ids = a.handle, a.ids
    paths = [
        "/v1/clinic",
        f"/v1/practitioners/{ids['practitioner_id']}",
        f"/v1/clients/{ids['client_id']}",
        f"/v1/clients/{a.client['client_id']}",
        f"/v1/rooms/{ids['room_id']}",
        f"/v1/sessions/{ids['session_id']}",
        f"/v1/sessions/{ids['session_id']}/history",
        f"/v1/sessions/{ids['session_id']}/attendees/{ids['attendee_id']}",
        "/v1/practitioners",
        "/v1/clients",
        "/v1/rooms",
        "/v1/sessions",
        f"/v1/integrator-credentials/{ids['credential_id']}",
        "/v1/integrator-credentials",
    ]
    return {path: await h.ok("GET", path) for path in paths}


@pytest.fixture
async def clinic_a(api: httpx.AsyncClient) -> ClinicA:
    a = await register_clinic(api)
    practitioner = await a.practitioner()
    client = await a.client()
    linked = await a.client(
        "Alan Turing",
        linked_accounts=[{"display_name": "Parent of Alan", "email": "parent@example.org"}],
    )
    room = await a.ok(
        "POST",
        f"/v1/clients/{linked['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Alan's room"},
    )
    session = await a.session(practitioner, [client, linked])
    await a.ok(
        "POST",
        f"/v1/sessions/{session['session_id']}/attendees",
        201,
        json={"email": "guest@example.org"},
    )
    session = await a.ok("GET", f"/v1/sessions/{session['session_id']}")
    credential = await a.ok(
        "POST", "/v1/integrator-credentials", 201, json={"label": "A's records system"}
    )
    return ClinicA(a, practitioner, client, linked, room, session, credential)


@pytest.fixture
async def clinic_b(api: httpx.AsyncClient) -> ClinicHandle:
    return await register_clinic(api)


async def test_every_clinic_route_hides_another_clinics_objects(
    app: FastAPI, clinic_a: ClinicA, clinic_b: ClinicHandle
) -> None:
    routes = clinic_routes(app)
    assert len(routes) >= 25, routes  # the enumeration must never go quiet
    stale = set(BODIES) - set(routes)
    assert not stale, f"BODIES names routes that no longer exist: {stale}"

    before = await snapshot(clinic_a)
    secrets = clinic_a.secrets()
    random_ids = {name: str(uuid.uuid4()) for name in clinic_a.ids}
    successes = []
    for method, template in routes:
        body = BODIES[(method, template)](clinic_a) if (method, template) in BODIES else None
        path = fill(template, clinic_a.ids)
        response = await clinic_b.call(method, path, json=body)
        where = f"{method} {template}: {response.status_code} {response.text}"
        leaked = [s for s in secrets if s in shown(response)]
        assert not leaked, f"{where} shows A's {leaked}"
        names_a = path != template or any(s in json.dumps(body) for s in secrets)
        if not names_a:
            # B's own clinic, lists and new objects: only B's objects come back.
            assert response.status_code < 500, where
            if method == "GET":
                assert response.status_code == 200, where
            continue
        if response.is_success:
            successes.append(where)
            continue
        assert response.status_code == 404, where  # never 403: that would confirm it exists
        assert_problem(response, 404)
        assert response.json()["code"].endswith("_not_found"), where
        # The same answer as for ids that exist nowhere: no oracle for A's ids.
        unknown = await clinic_b.call(method, fill(template, random_ids), json=body)
        assert unknown.status_code == 404, (where, unknown.text)
        assert unknown.json()["code"] == response.json()["code"], where
        assert unknown.json()["detail"] == response.json()["detail"], where
    assert successes == []
    assert await snapshot(clinic_a) == before


async def test_query_filters_with_another_clinics_ids_find_nothing(
    clinic_a: ClinicA, clinic_b: ClinicHandle
) -> None:
    a = clinic_a.ids
    queries = [
        ("/v1/sessions", {"practitioner_id": a["practitioner_id"]}),
        ("/v1/rooms", {"client_id": a["client_id"]}),
        ("/v1/rooms", {"practitioner_id": a["practitioner_id"]}),
    ]
    for path, params in queries:
        mine = await clinic_a.handle.ok("GET", path, params=params)
        assert mine["items"], (path, params)  # A does have matching objects
        theirs = await clinic_b.ok("GET", path, params=params)
        assert theirs == {"items": [], "next_cursor": None}, (path, params)


async def test_operator_routes_refuse_a_clinic_key(
    app: FastAPI, clinic_a: ClinicA, clinic_b: ClinicHandle
) -> None:
    api = clinic_b.api
    [key] = (await api.get(f"/v1/clinics/{clinic_b.clinic_id}/api-keys", headers=OPERATOR)).json()
    ids = {"clinic_id": clinic_b.clinic_id, "key_id": key["key_id"]}
    bodies = {
        "/v1/clinics": {"name": "Mine now", "slug": f"c{uuid.uuid4().hex[:10]}"},
        "/v1/clinics/{clinic_id}/suspend": {"reason": "B suspends itself"},
        "/v1/clinics/{clinic_id}/api-keys": {"label": "more keys"},
    }
    operator_routes = [(m, path) for m, path, _ in api_routes(app) if is_operator(path)]
    assert len(operator_routes) >= 8
    for clinic in (clinic_b, clinic_a.handle):  # its own clinic and another
        ids["clinic_id"] = clinic.clinic_id
        for method, template in operator_routes:
            body = bodies.get(template) if method == "POST" else None
            response = await clinic_b.call(method, fill(template, ids), json=body)
            assert response.status_code == 401, (method, template, response.text)
            assert_problem(response, 401, "unauthenticated")
    for clinic in (clinic_b, clinic_a.handle):
        view = (await api.get(f"/v1/clinics/{clinic.clinic_id}", headers=OPERATOR)).json()
        assert view["suspended"] is False
        keys = (await api.get(f"/v1/clinics/{clinic.clinic_id}/api-keys", headers=OPERATOR)).json()
        assert [k["revoked_at"] for k in keys] == [None]
    assert (await clinic_b.call("GET", "/v1/clinic")).status_code == 200


async def test_b_cannot_reference_as_objects_from_its_own(
    clinic_a: ClinicA, clinic_b: ClinicHandle
) -> None:
    a = clinic_a.ids
    practitioner = await clinic_b.practitioner()
    client = await clinic_b.client()
    session = await clinic_b.session(practitioner, [client])
    own = {"practitioner_id": practitioner["practitioner_id"], **_future(4)}
    attempts = [
        ("POST", "/v1/sessions", own | {"client_ids": [a["client_id"]]}, "client_not_found"),
        (
            "POST",
            "/v1/sessions",
            own
            | {
                "client_ids": [client["client_id"]],
                "video_mode": "client_room",
                "room_id": a["room_id"],
            },
            "room_not_found",
        ),
        (
            "POST",
            f"/v1/clients/{client['client_id']}/rooms",
            {"practitioner_id": a["practitioner_id"], "title": "Borrowed"},
            "practitioner_not_found",
        ),
        (
            "POST",
            f"/v1/sessions/{session['session_id']}/attendees",
            {"client_id": a["client_id"], "contact_id": clinic_a.contact_id},
            "client_not_found",
        ),
        (
            "DELETE",
            f"/v1/sessions/{session['session_id']}/attendees/{a['attendee_id']}",
            None,
            "attendee_not_found",
        ),
        (
            "GET",
            f"/v1/sessions/{session['session_id']}/attendees/{a['attendee_id']}",
            None,
            "attendee_not_found",
        ),
    ]
    for method, path, body, code in attempts:
        response = await clinic_b.call(method, path, json=body)
        assert_problem(response, 404, code)
    assert await clinic_b.ok("GET", f"/v1/sessions/{session['session_id']}") == session
    rooms = await clinic_b.ok("GET", "/v1/rooms", params={"client_id": client["client_id"]})
    assert rooms["items"] == []
