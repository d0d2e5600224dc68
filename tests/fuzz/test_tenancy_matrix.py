"""Tenancy across every service: with its own key, a clinic can neither see nor touch another
clinic's objects, through any route of any service.

The matrix is read from the OpenAPI documents (``app.openapi()["paths"]``), so a route added
later is in it at once, or the test says what it lacks: a path or query parameter it cannot
fill, or a body for a route that takes one. Each direction is tried: A's key on B's objects,
and B's on A's. A route that names the other clinic's object (in its path or its body) must be
refused with a 404 or 403 problem, the same answer an id that exists nowhere gets; a route of
the caller's own clinic may succeed, but must not show the other clinic's objects; the
operator's routes refuse a clinic key. Afterwards the other clinic's objects read as before.
"""

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from runtime.http import PROBLEM_JSON
from tests.fuzz.conftest import SUMMARY
from tests.fuzz.platform import SERVICES, Platform
from tests.fuzz.worlds import World, deliveries, furnish, ok, register_clinic, until
from tests.scheduling.conftest import OPERATOR

NOT_IDS = {"kind": "invitation"}
"""Path parameters that name no object, and the value to give them."""
OPEN_BY_DESIGN = {
    ("GET", "/v1/links/resolve"): "the link itself is the credential; it names no object",
    ("GET", "/v1/public/clinics/{clinic_slug}"): "a clinic's public booking page",
    ("POST", "/v1/public/clinics/{clinic_slug}/bookings"): "booking from that public page",
}
"""Routes without a key that every clinic's visitors may call; any other keyless route is in
the matrix (with the caller's own credential where it takes one, e.g. a signed URL's)."""


def _future(days: int) -> dict[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    return {"starts_at": start.isoformat(), "ends_at": (start + timedelta(minutes=50)).isoformat()}


Body = Callable[[dict[str, str]], dict[str, Any] | None]
BODIES: dict[tuple[str, str], Body] = {
    # scheduling: the clinic's own
    ("PATCH", "/v1/clinic/settings"): lambda t: {"time_zone": "Europe/Berlin"},
    ("POST", "/v1/practitioners"): lambda t: {
        "display_name": "Dr Mallory",
        "room_slug": f"m{uuid.uuid4().hex[:8]}",
    },
    ("POST", "/v1/clients"): lambda t: {"display_name": "Mallory's client"},
    ("PATCH", "/v1/clients/{client_id}"): lambda t: {"display_name": "Renamed by Mallory"},
    ("POST", "/v1/clients/{client_id}/rooms"): lambda t: {
        "practitioner_id": t["practitioner_id"],
        "title": "Mallory's room",
    },
    ("PATCH", "/v1/rooms/{room_id}"): lambda t: {"title": "Renamed by Mallory"},
    ("POST", "/v1/sessions"): lambda t: {
        "practitioner_id": t["practitioner_id"],
        "client_ids": [t["client_id"]],
        **_future(3),
    },
    ("POST", "/v1/sessions/ad-hoc"): lambda t: {
        "practitioner_id": t["practitioner_id"],
        "client_ids": [t["client_id"]],
    },
    ("POST", "/v1/sessions/{session_id}/reschedule"): lambda t: _future(5),
    ("POST", "/v1/sessions/{session_id}/cancel"): lambda t: {"reason": "Mallory says so"},
    ("POST", "/v1/sessions/{session_id}/attendees"): lambda t: {
        "client_id": t["client_id"],
        "contact_id": t["contact_id"],
    },
    ("PUT", "/v1/sessions/{session_id}/link-sharing"): lambda t: {"enabled": False},
    ("POST", "/v1/integrator-credentials"): lambda t: {"label": "Mallory's integrator"},
    # scheduling: the operator's
    ("POST", "/v1/clinics"): lambda t: {"name": "Mine now", "slug": f"m{uuid.uuid4().hex[:10]}"},
    ("POST", "/v1/clinics/{clinic_id}/suspend"): lambda t: {"reason": "Mallory says so"},
    ("POST", "/v1/clinics/{clinic_id}/api-keys"): lambda t: {"label": "Mallory's key"},
    # links
    ("POST", "/v1/links/retire"): lambda t: {"sunset_at": _future(1)["starts_at"]},
    # notify
    ("PUT", "/v1/templates/{kind}"): lambda t: {
        "subject": "Hello from Mallory",
        "text": "{{ join_url }}",
        "html": "<p>{{ join_url }}</p>",
    },
    ("POST", "/v1/templates/{kind}/preview"): lambda t: {
        "subject": "Hello from Mallory",
        "text": "{{ join_url }}",
        "html": "<p>{{ join_url }}</p>",
    },
    ("POST", "/v1/sessions/{session_id}/resend"): lambda t: {"recipient_id": t["recipient_id"]},
}
"""A valid body per route that takes one, as if the ids ``t`` were the caller's own."""


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str
    operation: dict[str, Any]

    @property
    def schemes(self) -> set[str]:
        return {name for req in self.operation.get("security", []) for name in req}

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.operation.get("parameters", []) if p["in"] == where]

    def __str__(self) -> str:
        return f"{self.service} {self.method} {self.path}"


def routes_of(platform: Platform) -> list[Route]:
    return [
        Route(service, method.upper(), path, operation)
        for service in SERVICES
        for path, item in platform.apps[service].openapi()["paths"].items()
        for method, operation in item.items()
    ]


@dataclass(frozen=True)
class Call:
    """One request of the matrix, and whether it names the other clinic's objects."""

    route: Route
    path: str
    params: dict[str, str]
    body: dict[str, Any] | None
    names_target: bool
    filtered: bool = False
    """An optional filter names a target's object (a list must then show none of them)."""

    def __str__(self) -> str:
        query = "&".join(f"{k}=…" for k in self.params)
        return f"{self.route}{'?' + query if query else ''}"


def calls_for(route: Route, target: dict[str, str], own: dict[str, str]) -> list[Call]:
    """The route's requests: path filled with the target's ids (or the caller's credential),
    once without optional filters and once per filter naming a target's object."""
    missing = []
    path, named = route.path, False
    for parameter in route.parameters("path"):
        name = parameter["name"]
        if name in target:
            path, named = path.replace("{" + name + "}", target[name]), True
        elif name in NOT_IDS:
            path = path.replace("{" + name + "}", NOT_IDS[name])
        else:
            missing.append(name)
    required: dict[str, str] = {}
    filters = []
    for parameter in route.parameters("query"):
        name = parameter["name"]
        if name in own and name not in target:  # the caller's own credential (a signed URL's)
            required[name] = own[name]
        elif name not in target:
            if parameter.get("required"):
                missing.append(name)
        elif parameter.get("required"):
            required[name], named = target[name], True
        else:
            filters.append(name)
    assert not missing, f"{route}: the matrix cannot fill {missing}; add them to the ids"
    key = (route.method, route.path)
    assert key in BODIES or "requestBody" not in route.operation, (
        f"{route}: define a valid body in BODIES"
    )
    body = BODIES[key](target) if key in BODIES else None
    named = named or any(value in json.dumps(body) for value in target.values())
    return [Call(route, path, required, body, named)] + [
        Call(route, path, {**required, name: target[name]}, body, named, filtered=True)
        for name in filters
    ]


def shown(response: httpx.Response) -> str:
    """The answer, less a problem's ``instance`` (which only echoes the caller's own path)."""
    if response.headers.get("content-type") != PROBLEM_JSON:
        return response.text
    return json.dumps({k: v for k, v in response.json().items() if k != "instance"})


def is_problem(response: httpx.Response, *statuses: int) -> bool:
    if response.status_code not in statuses:
        return False
    if response.headers.get("content-type") != PROBLEM_JSON:
        return False
    body = response.json()
    return body.get("status") == response.status_code and isinstance(body.get("detail"), str)


def unknown_ids(target: dict[str, str]) -> dict[str, str]:
    """Ids of the same shapes that exist nowhere."""
    return {
        name: f"c_{uuid.uuid4().hex[:16]}" if name == "clinic_id" else str(uuid.uuid4())
        for name in target
    } | {"clinic_slug": f"c{uuid.uuid4().hex[:10]}"}


def secrets_of(world: World) -> set[str]:
    return set(world.ids.values()) | {world.key}


def settle(platform: Platform, world: World) -> None:
    """Wait until the clinic's mails that are due have been sent, so its delivery log holds
    still while the matrix runs."""

    def settled() -> bool:
        now = datetime.now(UTC)
        return not any(
            d["status"] in ("sending", "accepting")
            or (d["status"] == "pending" and datetime.fromisoformat(d["due_at"]) <= now)
            for d in deliveries(platform, world)
        )

    until(settled, "the clinic's due mails sent")


def snapshot(platform: Platform, routes: list[Route], world: World) -> dict[str, Any]:
    """What the clinic (and the operator) read of its objects through every GET route."""
    seen: dict[str, Any] = {}
    mine = world.ids
    for route in routes:
        if route.method != "GET" or not route.schemes:
            continue
        headers = OPERATOR if route.schemes == {"operatorKey"} else world.headers
        for call in calls_for(route, mine, {}):
            if route.schemes == {"operatorKey"} and not call.names_target:
                continue  # every clinic's, the caller's too
            with platform.client(route.service) as client:
                response = client.get(call.path, params=call.params, headers=headers)
            seen[f"{call} {call.params}"] = (response.status_code, response.json())
    return seen


@dataclass
class Clinics:
    a: World
    b: World


@pytest.fixture(scope="module")
def clinics(platform: Platform) -> Clinics:
    with platform.client("scheduling") as scheduling:
        a, b = register_clinic(scheduling), register_clinic(scheduling)
    a, b = furnish(platform, a), furnish(platform, b)
    for world in (a, b):
        settle(platform, world)
        with platform.client("media") as media:
            link = ok(
                media.post(
                    f"/v1/recordings/{world.ids['recording_id']}/download", headers=world.headers
                )
            )
        query = parse_qs(urlsplit(link["url"]).query)
        world.credentials = {name: values[0] for name, values in query.items()}
    return Clinics(a, b)


@pytest.mark.parametrize("direction", ["A on B", "B on A"])
def test_no_clinic_reaches_another_clinics_objects(
    platform: Platform, clinics: Clinics, direction: str
) -> None:
    caller, target = (clinics.a, clinics.b) if direction == "A on B" else (clinics.b, clinics.a)
    routes = routes_of(platform)
    open_routes = {(r.method, r.path) for r in routes if not r.schemes}
    stale = set(BODIES) - {(r.method, r.path) for r in routes}
    assert not stale, f"BODIES names routes that no longer exist: {stale}"
    assert set(OPEN_BY_DESIGN) <= open_routes, set(OPEN_BY_DESIGN) - open_routes

    before = snapshot(platform, routes, target)
    ids, secrets = target.ids, secrets_of(target)
    tried: Counter[str] = Counter()
    successes: list[str] = []
    for route in routes:
        if (route.method, route.path) in OPEN_BY_DESIGN:
            continue
        assert route.schemes <= {"clinicKey", "operatorKey"}, f"{route}: {route.schemes}"
        for call in calls_for(route, ids, caller.credentials):
            with platform.client(route.service) as client:
                response = client.request(
                    route.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    headers=caller.headers,
                )
            where = f"{call}: {response.status_code} {response.text[:300]}"
            assert response.status_code < 500, where
            if any(secret in shown(response) for secret in secrets):
                successes.append(f"{where} (shows the other clinic's objects)")
            elif route.schemes == {"operatorKey"}:
                # A clinic key is no operator key, whatever it names.
                assert is_problem(response, 401), where
                tried["operator's, refused"] += 1
            elif call.filtered and not call.names_target:
                tried["filtered by the other clinic's ids"] += 1
            elif not call.names_target:
                tried["of the caller's own clinic"] += 1
            else:
                tried["naming the other clinic's objects"] += 1
                if response.is_success:
                    successes.append(where)
                    continue
                assert is_problem(response, 403, 404), where
                # The same answer as for ids that exist nowhere: no oracle for them.
                other = calls_for(route, unknown_ids(ids), caller.credentials)[0]
                with platform.client(route.service) as client:
                    unknown = client.request(
                        route.method,
                        other.path,
                        json=other.body,
                        headers=caller.headers,
                        params=other.params,
                    )
                assert unknown.status_code == response.status_code, (where, unknown.text)
                assert unknown.json().get("code") == response.json().get("code"), where
    summary = (
        f"{sum(tried.values())} requests over {len(routes)} routes of {len(SERVICES)} services "
        f"({', '.join(f'{n} {what}' for what, n in sorted(tried.items()))}; "
        f"{len(OPEN_BY_DESIGN)} open by design)"
    )
    SUMMARY.append(f"tenancy matrix, {direction}: {summary}")
    assert len(routes) >= 50, summary  # the enumeration must never go quiet
    assert successes == [], summary + "\n" + "\n".join(successes)
    assert snapshot(platform, routes, target) == before, summary
