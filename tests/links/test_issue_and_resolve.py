"""Links issued in reaction to scheduling, resolved over HTTP and NATS."""

from datetime import timedelta
from uuid import UUID

from nats.aio.client import Client as NATS

from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from runtime.rpc import call
from tests.links.conftest import PUBLIC_URL, Clock, LinkedClinic


async def test_every_kind_is_issued_and_resolves(
    clinic: LinkedClinic, clock: Clock, nc: NATS
) -> None:
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    session = await c.session(practitioner, [client], link_sharing=True)
    await c.ok(
        "POST", f"/v1/sessions/{session['session_id']}/attendees", 201, json={"email": "a@x.org"}
    )
    room = await clinic.link("practitioner_room", practitioner_id=practitioner["practitioner_id"])
    assert room["url"] == f"{PUBLIC_URL}/r/{c.slug}/{practitioner['room_slug']}"
    host = await clinic.link("host", practitioner_id=practitioner["practitioner_id"])
    assert host["url"].startswith(f"{PUBLIC_URL}/h/")
    await clinic.wait_links(3, session_id=session["session_id"])
    by_kind = {x["kind"]: x for x in await clinic.links_of(session_id=session["session_id"])}
    assert set(by_kind) == {"session", "guest", "drop_in"}

    clock.set(clock.now.replace(microsecond=0) + timedelta(days=1))  # the session's start
    for kind, role in (("session", "client"), ("guest", "guest"), ("drop_in", "guest")):
        response = await clinic.resolve(by_kind[kind]["url"])
        assert response.status_code == 200, response.text
        decision = response.json()
        assert decision["role"] == role
        assert decision["session_id"] == session["session_id"]
        assert decision["admission"] == "waiting_room"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "noindex" in response.headers["x-robots-tag"]
    knock = (await clinic.resolve(room["url"])).json()
    assert (knock["role"], knock["admission"]) == ("guest", "waiting_room")
    as_host = (await clinic.resolve(host["url"], session_id=session["session_id"])).json()
    assert (as_host["role"], as_host["admission"]) == ("host", "direct")

    token = by_kind["guest"]["url"].rsplit("/", 1)[1]
    over_nats = await call(nc, RESOLVE_SUBJECT, ResolveRequest(token=token), Decision)
    assert over_nats.allowed
    assert over_nats.link_id == UUID(by_kind["guest"]["link_id"])


async def test_an_unknown_token_is_refused_in_words(clinic: LinkedClinic) -> None:
    response = await clinic.links.get("/v1/links/resolve", params={"token": "x" * 43})
    assert response.status_code == 404
    problem = response.json()
    assert problem["code"] == "unknown"
    assert "not valid" in problem["detail"]
    assert response.headers["content-type"] == "application/problem+json"
