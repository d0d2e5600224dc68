"""Delivery against a mail server that refuses, fails for a while or hangs; the point of no
return before the final dot; templates edited through the API."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from runtime.embedded import NatsServer
from runtime.service import connect_nats
from services.notify.config import NotifySettings
from services.notify.smtp import Mailer
from tests.notify.conftest import (
    Platform,
    RunningClock,
    body_of,
    clinic_of,
    mails_about,
    mails_to,
    notify_service,
)
from tests.notify.feed import Feed
from tests.notify.smtp import SmtpSink
from tests.notify.test_invitations import CLIENT, schedule
from tests.scheduling.conftest import SEALER
from tests.support import assert_problem, eventually, serving


def mailer_for(sink: SmtpSink) -> Mailer:
    return Mailer(
        NotifySettings(
            smtp_host=sink.host, smtp_port=sink.port, smtp_security="none", smtp_timeout_s=2.0
        )
    )


MESSAGE = (
    b"From: a@clinic.example\r\nTo: b@example.org\r\nSubject: hi\r\n\r\n.dot first\r\nbody\r\n"
)


async def test_the_server_gets_the_final_dot_only_after_the_point_of_no_return(
    sink: SmtpSink,
) -> None:
    mailer = mailer_for(sink)

    async def not_ours() -> bool:
        return False

    outcome = await mailer.send("a@clinic.example", "b@example.org", MESSAGE, not_ours)
    assert outcome.status == "abandoned"

    seen_before: list[int] = []

    async def ours() -> bool:
        await asyncio.sleep(0.2)  # time enough for a server that had the dot to store it
        seen_before.append(len(sink.messages))
        return True

    outcome = await mailer.send("a@clinic.example", "b@example.org", MESSAGE, ours)
    assert outcome.status == "sent"
    assert seen_before == [0], "the server had the message before the point of no return"
    (received,) = await sink.wait_for(1)
    assert received.message.get_content().startswith(".dot first")  # dot-stuffing kept
    mailer.close()


async def test_refusals_and_temporary_failures_are_classified(sink: SmtpSink) -> None:
    mailer = mailer_for(sink)

    async def go() -> bool:
        return True

    sink.refuse("b@example.org", 550, "no such user")
    refused = await mailer.send("a@clinic.example", "b@example.org", MESSAGE, go)
    assert (refused.status, refused.code) == ("permanent", 550)
    assert "no such user" in refused.detail
    sink.fail_next(1, 451, "greylisted")
    later = await mailer.send("a@clinic.example", "c@example.org", MESSAGE, go)
    assert (later.status, later.code) == ("temporary", 451)
    sent = await mailer.send("a@clinic.example", "c@example.org", MESSAGE, go)
    assert sent.status == "sent"
    mailer.close()
    closed = mailer_for(SmtpSink(port=1))
    unreachable = await closed.send("a@clinic.example", "c@example.org", MESSAGE, go)
    assert unreachable.status == "temporary"
    assert "cannot reach" in unreachable.detail


async def test_a_refused_recipient_is_recorded_as_failed_and_not_tried_again(
    platform: Platform,
) -> None:
    platform.sink.refuse(CLIENT, 550, "mailbox unavailable")
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=2))
    log = await clinic.wait_deliveries(
        lambda found: any(d["status"] == "failed" for d in found),
        "the invitation recorded as failed",
        session_id=session["session_id"],
    )
    (failed,) = [d for d in log if d["kind"] == "invitation"]
    assert "550" in failed["detail"]
    assert "mailbox unavailable" in failed["detail"]
    assert failed["attempts"] == 1
    assert CLIENT not in failed["detail"]
    assert mails_about(platform.sink, session["session_id"]) == []


async def test_temporary_failures_are_retried_and_the_message_sent_once(
    platform: Platform,
) -> None:
    platform.sink.fail_next(2, 451, "try again later")
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=2))
    await platform.sink.wait_for(1, timeout=20)
    log = await clinic.wait_deliveries(
        lambda found: any(d["status"] == "sent" for d in found),
        "the invitation sent",
        session_id=session["session_id"],
    )
    (sent,) = [d for d in log if d["kind"] == "invitation"]
    assert sent["attempts"] == 3
    assert platform.sink.attempts == 3
    assert len(mails_to(platform.sink, CLIENT)) == 1
    assert len(mails_about(platform.sink, session["session_id"])) == 1


async def test_a_server_that_hangs_after_the_dot_gets_the_message_at_most_once(
    platform: Platform,
) -> None:
    platform.sink.hang = True
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=2))
    log = await clinic.wait_deliveries(
        lambda found: any(d["status"] == "unconfirmed" for d in found),
        "the invitation recorded as unconfirmed",
        session_id=session["session_id"],
    )
    (unconfirmed,) = [d for d in log if d["status"] == "unconfirmed"]
    assert "not sent again" in unconfirmed["detail"]
    platform.sink.hang = False  # the server finally takes it: it arrives, once
    await platform.sink.wait_for(1, timeout=10)
    await asyncio.sleep(1.0)  # a second copy, if notify sent one, would arrive meanwhile
    assert platform.sink.attempts == 1
    assert len(mails_to(platform.sink, CLIENT)) == 1
    log = await clinic.deliveries(session_id=session["session_id"])
    assert [d["status"] for d in log if d["kind"] == "invitation"] == ["unconfirmed"]


async def test_a_client_without_an_address_is_skipped_without_a_failure_event(
    platform: Platform, postgres_dsn: str
) -> None:
    """Not a failure to alert on: the clinic chose not to give an address. Every message for
    the client is recorded ``skipped`` ("no address"), and no ``DeliveryFailed`` is emitted."""
    clinic = await clinic_of(platform)
    sched = clinic.scheduling
    practitioner = await sched.practitioner()
    response = await sched.call("POST", "/v1/clients", json={"display_name": "No Mail"})
    assert response.status_code == 201, response.text
    client_id = response.json()["client_id"]
    session = await sched.session(practitioner, [response.json()])
    log = await clinic.wait_deliveries(
        lambda found: any(
            d["kind"] == "invitation" and d["status"] not in ("pending", "sending") for d in found
        ),
        "the invitation settled",
        session_id=session["session_id"],
    )
    (invitation,) = [d for d in log if d["kind"] == "invitation"]
    assert invitation["status"] == "skipped", invitation
    assert invitation["detail"].startswith("no address"), invitation["detail"]
    assert invitation["attempts"] == 0
    conn = await asyncpg.connect(postgres_dsn)
    try:
        reported = await conn.fetchval(
            "SELECT count(*) FROM notify.events WHERE type = 'DeliveryFailed' "
            "AND data->>'recipient_id' = $1",
            client_id,
        )
    finally:
        await conn.close()
    assert reported == 0
    assert mails_about(platform.sink, session["session_id"]) == []


# -- templates ---------------------------------------------------------------------------------

ESCAPES = [
    "{{ join_url.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ clinic_name.format.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ config }}",
    "{{ lipsum.__globals__['os'] }}",
]


@pytest.mark.parametrize("attempt", ESCAPES)
async def test_template_code_that_reaches_for_python_internals_is_refused(
    platform: Platform, attempt: str
) -> None:
    clinic = await clinic_of(platform)
    current = (await clinic.notify_call("GET", "/v1/templates/invitation")).json()
    body = {
        "subject": current["subject"],
        "text": f"line one\n{attempt}\n",
        "html": current["html"],
    }
    response = await clinic.notify_call("PUT", "/v1/templates/invitation", json=body)
    assert_problem(response, 422, "template_invalid")
    problem = response.json()
    assert problem["problems"][0]["part"] == "text"
    assert problem["problems"][0]["line"] in (2, None)


async def test_a_clinic_edits_its_template_and_its_next_invitation_uses_it(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    other = await clinic_of(platform)
    current = (await clinic.notify_call("GET", "/v1/templates/invitation")).json()
    assert current["customised"] is False
    assert "join_url" in current["variables"]
    current = {part: current[part] for part in ("subject", "text", "html")}
    broken = current | {"text": "Hello\n{{ join_url }\n"}
    response = await clinic.notify_call("PUT", "/v1/templates/invitation", json=broken)
    assert_problem(response, 422, "template_invalid")
    assert response.json()["problems"][0]["line"] == 2
    unknown = current | {"text": "Hello {{ patient_dob }}"}
    response = await clinic.notify_call("PUT", "/v1/templates/invitation", json=unknown)
    assert_problem(response, 422, "template_invalid")
    assert "patient_dob" in response.json()["detail"]
    named = current | {"subject": "Session for {{ recipient_name }}"}
    response = await clinic.notify_call("PUT", "/v1/templates/invitation", json=named)
    assert_problem(response, 422, "template_invalid")
    custom = {
        "subject": "See you on {{ date }}",
        "text": "Dear {{ recipient_name }}, join at {{ join_url }} ({{ start_time }}).",
        "html": "<p>Dear {{ recipient_name }}, <a href='{{ join_url }}'>join</a></p>",
    }
    response = await clinic.notify_call("POST", "/v1/templates/invitation/preview", json=custom)
    assert response.status_code == 200, response.text
    response = await clinic.notify_call("PUT", "/v1/templates/invitation", json=custom)
    assert response.status_code == 200, response.text
    assert response.json()["customised"] is True
    assert (await other.notify_call("GET", "/v1/templates/invitation")).json()[
        "customised"
    ] is False
    session = await schedule(clinic, timedelta(days=2))
    link = await clinic.linked.link("session", session_id=session["session_id"])
    mail = (await platform.sink.wait_for(1, timeout=20))[0].message
    assert mail["Subject"].startswith("See you on ")
    assert body_of(mail).strip().startswith("Dear Grace Hopper, join at " + link["url"])
    response = await clinic.notify_call("DELETE", "/v1/templates/invitation")
    assert response.status_code == 204
    assert (await clinic.notify_call("GET", "/v1/templates/invitation")).json()[
        "customised"
    ] is False


async def test_the_api_needs_a_clinic_key(platform: Platform) -> None:
    response = await platform.notify.get("/v1/templates")
    assert_problem(response, 401)


async def test_a_client_whose_details_come_after_the_session_is_invited_once_they_arrive(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> None:
    """A consumer that crashed is redelivered its messages after ack_wait, behind the ones a
    new process took meanwhile: the session can arrive before its client. The invitation
    waits for the client's details (as for a link) rather than failing for want of an address."""
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock())
    nc = await connect_nats(nats_server.url, "feed")
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic()
            client = feed._client()
            scheduled, issued, invited = feed._session(
                client, datetime.now(UTC) + timedelta(days=2)
            )
            await feed._publish("scheduling", [scheduled])
            await feed._publish("links", [issued])
            await asyncio.sleep(1.5)  # several rounds of the sender meanwhile
            assert sink.messages == []
            await feed._publish("scheduling", [client])
            await sink.wait_for(1, timeout=30)
            assert sink.messages[0].rcpt_tos == [invited.email]
            assert invited.url in body_of(sink.messages[0].message)
    finally:
        await nc.drain()


async def test_a_live_process_keeps_its_claims_while_a_batch_takes_longer_than_claim_s(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> None:
    """A claim lapses when its process stops, not while the process is still working through
    the batch: a batch that takes longer than ``claim_s`` to send (one connection, a slow
    relay) is sent once each and recorded as sent, none taken over as unconfirmed."""
    sink.accepting_delay = 0.1  # 20 messages one after another: 2 s, four claim periods
    app = notify_service(
        postgres_dsn, nats_server.url, sink, RunningClock(), claim_s=0.5, smtp_connections=1
    )
    nc = await connect_nats(nats_server.url, "feed")
    conn = await asyncpg.connect(postgres_dsn)
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic()
            invited = await feed.sessions(20)

            async def statuses() -> Counter[str]:
                rows = await conn.fetch(
                    "SELECT status FROM notify.deliveries "
                    "WHERE clinic_id = $1 AND kind = 'invitation'",
                    feed.clinic_id,
                )
                return Counter(r["status"] for r in rows)

            async def settled() -> bool:
                found = await statuses()
                return found.total() == 20 and found.keys() <= {"sent", "unconfirmed", "failed"}

            await eventually(settled, timeout=30, what="every invitation settled")
            await asyncio.sleep(0.5)  # a copy sent twice would arrive meanwhile
        received = Counter(to for m in sink.messages for to in m.rcpt_tos)
        assert received == Counter(i.email for i in invited)
        assert await statuses() == Counter(sent=20)
    finally:
        await conn.close()
        await nc.drain()
