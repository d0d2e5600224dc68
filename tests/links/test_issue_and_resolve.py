"""Links issued in reaction to scheduling, resolved over HTTP and NATS."""

import time
from datetime import timedelta
from uuid import UUID, uuid4

from nats.aio.client import Client as NATS

from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from runtime.pagination import encode_cursor
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
    # The role is the one the call will give (a client joins as a guest); `kind` says whose
    # link it is.
    for kind, role in (("session", "guest"), ("guest", "guest"), ("drop_in", "guest")):
        response = await clinic.resolve(by_kind[kind]["url"])
        assert response.status_code == 200, response.text
        decision = response.json()
        assert (decision["role"], decision["kind"]) == (role, kind)
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


# -- a host link, and a session that links has only just heard of, or never will ----------------


async def test_a_host_link_opens_a_session_the_moment_the_api_has_created_it(
    clinic: LinkedClinic, nc: NATS
) -> None:
    """The report: for 60-90 ms after `POST /v1/sessions` answered 201, the host link was
    refused as unknown for the new session (links had not yet consumed SessionScheduled)."""
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    host = await clinic.link("host", practitioner_id=practitioner["practitioner_id"])
    token = host["url"].rsplit("/", 1)[1]
    for attempt in range(6):
        session = await c.session(practitioner, [client])
        sid = session["session_id"]
        if attempt % 2:
            response = await clinic.resolve(host["url"], session_id=sid)
            assert response.status_code == 200, response.text
            decision = Decision.model_validate(response.json())
        else:
            request = ResolveRequest(token=token, session_id=UUID(sid))
            decision = await call(nc, RESOLVE_SUBJECT, request, Decision, 3.0)
        assert decision.allowed, decision
        assert (decision.role, str(decision.session_id)) == ("host", sid)


async def test_a_host_link_naming_a_session_not_its_own_says_so_in_bounded_time(
    clinic: LinkedClinic,
) -> None:
    c = clinic.clinic
    mine, theirs = await c.practitioner(), await c.practitioner("Dr Mary Somerville")
    host = await clinic.link("host", practitioner_id=mine["practitioner_id"])
    other = await c.session(theirs, [await c.client()])
    await clinic.wait_links(1, session_id=other["session_id"])  # links knows the session

    for session_id, within in ((other["session_id"], 0.5), (str(uuid4()), 1.5)):
        started = time.monotonic()
        response = await clinic.resolve(host["url"], session_id=session_id)
        took = time.monotonic() - started
        assert response.status_code == 404, response.text
        problem = response.json()
        assert problem["code"] == "unknown"
        # The link is fine: saying "check that you copied all of it" would send them astray.
        assert "copied" not in problem["detail"]
        assert "session" in problem["detail"]
        assert problem["link_id"] == host["link_id"]
        assert took < within, (session_id, took)


# -- a clinic's links ----------------------------------------------------------------------------


async def test_a_clinics_links_are_listed_a_page_at_a_time(clinic: LinkedClinic) -> None:
    """Like every other list of the API: `{items, next_cursor}`, `cursor` and `limit`."""
    c = clinic.clinic
    session = await c.session(await c.practitioner(), [await c.client()], link_sharing=True)
    sid = session["session_id"]
    for email in ("a@example.org", "b@example.org"):
        await c.ok("POST", f"/v1/sessions/{sid}/attendees", 201, json={"email": email})
    await clinic.wait_links(4, session_id=sid)  # session, guest, two drop-ins

    async def page(**params: object) -> dict[str, object]:
        response = await clinic.links.get(
            "/v1/links", params={"session_id": sid, **params}, headers=c.headers
        )
        assert response.status_code == 200, response.text
        found: dict[str, object] = response.json()
        assert set(found) == {"items", "next_cursor"}
        return found

    everything = await page()
    assert everything["next_cursor"] is None
    assert isinstance(everything["items"], list)
    assert len(everything["items"]) == 4
    walked, cursor = [], None
    while True:
        found = await page(limit=3, **({"cursor": cursor} if cursor else {}))
        assert isinstance(found["items"], list)
        walked += found["items"]
        cursor = found["next_cursor"]
        if cursor is None:
            break
    assert walked == everything["items"]  # by issue, each once

    forged = [
        encode_cursor(moment, uuid4())
        for moment in ("9999-12-31T22:00:00-14:00", "2026-01-01T00:00:00", "yesterday")
    ]
    bad_pages = [{"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 201}]
    for bad in bad_pages + [{"cursor": cursor} for cursor in forged]:
        response = await clinic.links.get(
            "/v1/links", params={"session_id": sid, **bad}, headers=c.headers
        )
        assert response.headers["content-type"] == "application/problem+json"
        assert response.status_code in (400, 422), response.text
