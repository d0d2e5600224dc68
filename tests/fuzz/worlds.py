"""Clinics with one object of every kind the APIs expose, for the fuzzers and the matrix."""

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from tests.fuzz.platform import WAIT_S, Platform
from tests.scheduling.conftest import OPERATOR

T = TypeVar("T")


@dataclass
class World:
    """One clinic, its key, and (once furnished) one object of every kind.

    ``ids`` names them as the documents' path and query parameters do.
    """

    clinic_id: str
    slug: str
    key: str
    ids: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    """Query credentials of its own: a signed download URL's ``expires`` and ``signature``."""
    operator_target: dict[str, str] = field(default_factory=dict)
    """Ids for the operator's routes: another clinic's, so fuzzing them cannot lock this one out
    (suspend it, revoke its key)."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


def until(check: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """The first truthy answer of ``check``, polled from the test's thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def register_clinic(scheduling: httpx.Client) -> World:
    slug = f"c{uuid.uuid4().hex[:10]}"
    body = {"name": "Riverside Therapy", "slug": slug, "settings": {"plan": "professional"}}
    clinic = ok(scheduling.post("/v1/clinics", headers=OPERATOR, json=body), 201)
    path = f"/v1/clinics/{clinic['clinic_id']}/api-keys"
    key = ok(scheduling.post(path, headers=OPERATOR, json={"label": "fuzz"}), 201)
    return World(clinic["clinic_id"], slug, key["key"])


def furnish(platform: Platform, world: World) -> World:
    """Give ``world`` one object of every kind, and wait until links and notify know them."""
    h = world.headers
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    with platform.client("scheduling") as sched:
        slug = f"p{uuid.uuid4().hex[:8]}"
        practitioner = ok(
            sched.post(
                "/v1/practitioners", headers=h, json={"display_name": "Dr Ada", "room_slug": slug}
            ),
            201,
        )
        pid = practitioner["practitioner_id"]
        contact = {"display_name": "Parent of Alan", "email": "parent@example.org"}
        client = ok(
            sched.post(
                "/v1/clients",
                headers=h,
                json={
                    "display_name": "Alan",
                    "email": "a@example.org",
                    "linked_accounts": [contact],
                },
            ),
            201,
        )
        cid = client["client_id"]
        room = ok(
            sched.post(
                f"/v1/clients/{cid}/rooms",
                headers=h,
                json={"practitioner_id": pid, "title": "Alan's room"},
            ),
            201,
        )
        appointment = {
            "practitioner_id": pid,
            "client_ids": [cid],
            "link_sharing": True,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
        }
        sid = ok(sched.post("/v1/sessions", headers=h, json=appointment), 201)["session_id"]
        guest = {"email": "guest@example.org"}
        attendee = ok(sched.post(f"/v1/sessions/{sid}/attendees", headers=h, json=guest), 201)
        path = f"/v1/clinics/{world.clinic_id}/api-keys"
        [key] = ok(sched.get(path, headers=OPERATOR))
        integrator = {"label": "records system"}
        credential = ok(sched.post("/v1/integrator-credentials", headers=h, json=integrator), 201)
    world.ids |= {
        "clinic_id": world.clinic_id,
        "clinic_slug": world.slug,
        "key_id": key["key_id"],
        "practitioner_id": pid,
        "client_id": cid,
        "contact_id": client["linked_accounts"][0]["contact_id"],
        "room_id": room["room_id"],
        "session_id": sid,
        "attendee_id": attendee["attendee_id"],
        "recipient_id": cid,
        "credential_id": credential["credential_id"],
    }
    world.ids["link_id"] = _guest_link(platform, world)
    _wait_for_invitations(platform, world)
    world.ids["recording_id"] = platform.loop.run(_recording(platform, world))
    with platform.client("notify") as notify:
        template = ok(notify.get("/v1/templates/invitation", headers=h))
        own = {part: template[part] for part in ("subject", "text", "html")}
        own["subject"] += " (our own words)"
        ok(notify.put("/v1/templates/invitation", headers=h, json=own))
    return world


def _guest_link(platform: Platform, world: World) -> str:
    def issued() -> str | None:
        with platform.client("links") as links:
            response = links.get(
                "/v1/links", params={"session_id": world.ids["session_id"]}, headers=world.headers
            )
        found = [x["link_id"] for x in ok(response)["items"] if x["kind"] == "guest"]
        return str(found[0]) if found else None

    return until(issued, "the session's guest link")


def deliveries(platform: Platform, world: World) -> list[dict[str, Any]]:
    with platform.client("notify") as notify:
        response = notify.get(
            "/v1/deliveries", params={"session_id": world.ids["session_id"]}, headers=world.headers
        )
    found: list[dict[str, Any]] = ok(response)
    return found


def _wait_for_invitations(platform: Platform, world: World) -> None:
    until(lambda: deliveries(platform, world), "the session's invitations")


async def _recording(platform: Platform, world: World) -> str:
    """A finished recording of the clinic's room, written where and as a media node writes
    one (making a real one needs a call; the recordings' own tests make them)."""
    recording_id = uuid.uuid4()
    path = platform.media.recordings.path_of(world.clinic_id, recording_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + secrets.token_bytes(64))
    context = platform.apps["media"].state.runtime.context
    now = datetime.now(UTC)
    await context.pool.execute(
        "INSERT INTO recordings (recording_id, clinic_id, room_id, node_id, media_url, status, "
        "started_at, stopped_at, duration_s, size_bytes) "
        "VALUES ($1, $2, $3, $4, $5, 'available', $6, $7, 12.5, $8)",
        recording_id,
        world.clinic_id,
        uuid.UUID(world.ids["room_id"]),
        platform.media.node_id,
        platform.urls["media"],
        now - timedelta(minutes=1),
        now,
        path.stat().st_size,
    )
    return str(recording_id)
