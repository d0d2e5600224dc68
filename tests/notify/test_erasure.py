"""A client's personal data erased everywhere: Postgres, every JetStream stream, notify's log.

The end-to-end test schedules a real session (scheduling, links and notify running, a real
SMTP sink), erases the client, then reads a ``pg_dump`` of the whole database and every
message of every ``ANTECHAMBER_*`` stream. The others drive notify alone, with the feed
standing in for scheduling (its relay and its unseal endpoint).
"""

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from nats.js.errors import NotFoundError

from contracts.notify import FailedBecause
from runtime.embedded import NatsServer
from runtime.service import connect_nats
from tests.notify.conftest import (
    Platform,
    RunningClock,
    body_of,
    clinic_of,
    mails_to,
    notify_service,
)
from tests.notify.feed import Feed
from tests.notify.smtp import SmtpSink
from tests.scheduling.conftest import SEALER
from tests.scheduling.test_erasure import Person
from tests.support import eventually, serving


def pg_dump_binary() -> Path:
    """pg_dump from the pgserver package, next to the postgres the tests run."""
    try:
        from pgserver.postgres_server import POSTGRES_BIN_PATH
    except ImportError:
        pytest.fail("pgserver is not installed; run `make .venv/.installed-test`")
    binary = Path(POSTGRES_BIN_PATH) / "pg_dump"
    if not binary.exists():
        pytest.fail(f"pgserver ships no pg_dump at {binary}: cannot check what Postgres holds")
    return binary


def pg_dump(dsn: str) -> str:
    """The whole database, as SQL (schemas, and every row of every table)."""
    done = subprocess.run(
        [str(pg_dump_binary()), f"--dbname={dsn}", "--no-owner"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def bus_bytes(url: str) -> bytes:
    """Every message (headers and body) of every Antechamber stream, as one byte string."""
    nc = await connect_nats(url, "tests-read-streams")
    try:
        js = nc.jetstream()
        streams = [s for s in await js.streams_info() if s.config.name.startswith("ANTECHAMBER_")]
        assert streams, "no Antechamber stream to read"
        chunks: list[bytes] = []
        for stream in streams:
            name, state = stream.config.name, stream.state
            if not state.messages:
                continue

            async def one(seq: int, name: str = name) -> bytes:
                try:
                    msg = await js.get_msg(name, seq=seq)
                except NotFoundError:  # deleted from the middle of the stream
                    return b""
                return (msg.data or b"") + repr(msg.headers).encode()

            for start in range(state.first_seq, state.last_seq + 1, 200):
                seqs = range(start, min(start + 200, state.last_seq + 1))
                chunks += await asyncio.gather(*(one(s) for s in seqs))
        return b"\n".join(chunks)
    finally:
        await nc.drain()


def found(values: tuple[str, ...], text: str) -> dict[str, int]:
    """How often each value occurs in ``text``, plain or hex-encoded (bytea columns)."""
    counts = {v: text.count(v) + text.count(v.encode().hex()) for v in values}
    return {v: n for v, n in counts.items() if n}


async def test_an_erased_client_leaves_nothing_readable_in_postgres_or_on_the_bus(
    platform: Platform, postgres_dsn: str, nats_server: NatsServer
) -> None:
    person = Person()
    contact_name = f"Parent of {person.name}"
    values = (person.name, person.email, person.contact, person.phone, contact_name)
    clinic = await clinic_of(platform, time_zone="Europe/Berlin")
    sched = clinic.scheduling
    practitioner = await sched.practitioner("Dr Ada Lovelace")
    client = await sched.ok(
        "POST",
        "/v1/clients",
        201,
        json={
            "display_name": person.name,
            "email": person.email,
            "phone": person.phone,
            "linked_accounts": [{"display_name": contact_name, "email": person.contact}],
        },
        headers={"Idempotency-Key": f"add-{person.tag}"},
    )
    await sched.client_room(client, practitioner, title=f"{person.name}'s room")
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3)
    session = await sched.session(
        practitioner,
        [client],
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=50)).isoformat(),
    )
    await sched.ok(
        "POST",
        f"/v1/sessions/{session['session_id']}/attendees",
        201,
        json={
            "client_id": client["client_id"],
            "contact_id": client["linked_accounts"][0]["contact_id"],
        },
    )

    # Notify opened the sealed values to mail them: each invitation reached its own address.
    await platform.sink.wait_for(2, timeout=30)
    (to_client,) = mails_to(platform.sink, person.email)
    (to_contact,) = mails_to(platform.sink, person.contact)
    assert f"Hello {person.name}," in body_of(to_client.message)
    assert f"Hello {contact_name}," in body_of(to_contact.message)
    # ... while the bus never carried them readable.
    assert found(values, (await bus_bytes(nats_server.url)).decode(errors="replace")) == {}

    # Until erasure, the answer kept for an Idempotency-Key replay holds them (in a bytea
    # column): what the dump is searched for is there to be found.
    assert person.email in found(values, pg_dump(postgres_dsn))

    erased = await sched.ok("POST", f"/v1/clients/{client['client_id']}/erasure")
    assert erased["already_erased"] is False
    # Notify learns of it: the reminders still planned are dropped, with the reason, and the
    # log keeps no address of the client's.
    log = await clinic.wait_deliveries(
        lambda log: log and all(d["status"] != "pending" and d["address"] is None for d in log),
        "the client's deliveries scrubbed",
        recipient_id=client["client_id"],
    )
    reminders = [d for d in log if d["kind"] == "reminder"]
    assert reminders, log
    assert {(d["status"], d["detail"]) for d in reminders} == {
        ("dropped", "the recipient's personal data was erased at the clinic's request")
    }
    invitation = next(d for d in log if d["kind"] == "invitation")
    assert invitation["status"] == "sent"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        titles = await conn.fetchval(
            "SELECT count(*) FROM notify.rooms WHERE client_id = $1 AND title IS NOT NULL",
            client["client_id"],
        )
    finally:
        await conn.close()
    assert titles == 0, "a title of the client's rooms is kept, even sealed"

    dump = pg_dump(postgres_dsn)
    assert client["client_id"] in dump, "the dump holds the client's (anonymous) rows"
    assert found(values, dump) == {}
    assert found(values, (await bus_bytes(nats_server.url)).decode(errors="replace")) == {}


async def test_an_invitation_for_an_erased_client_fails_once_with_the_reason(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> None:
    """The erasure reaches notify only through scheduling's answer (no ClientErased yet):
    the message fails at once as ``erased``, and is not tried again."""
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock())
    nc = await connect_nats(nats_server.url, "feed")
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic()
            kept, erased = feed._client(), feed._client()
            feed.erase(erased.client_id)
            starts_at = datetime.now(UTC) + timedelta(days=2)
            sessions = [feed._session(c, starts_at) for c in (kept, erased)]
            await feed._publish("scheduling", [kept, erased])
            await feed._publish("scheduling", [scheduled for scheduled, _, _ in sessions])
            await feed._publish("links", [issued for _, issued, _ in sessions])
            await sink.wait_for(1, timeout=20)
            pool = app.state.runtime.context.pool

            async def failed() -> bool:
                status = await pool.fetchval(
                    "SELECT status FROM deliveries WHERE recipient_id = $1 AND kind = 'invitation'",
                    erased.client_id,
                )
                return bool(status == "failed")

            await eventually(failed, timeout=20, what="the erased client's invitation failed")
            await asyncio.sleep(1.0)  # several rounds of the sender (retries are 0.2 s apart)
            row = await pool.fetchrow(
                "SELECT status, attempts, detail, address_masked FROM deliveries "
                "WHERE recipient_id = $1 AND kind = 'invitation'",
                erased.client_id,
            )
            assert dict(row) == {
                "status": "failed",
                "attempts": 1,
                "detail": "the recipient's personal data was erased at the clinic's request",
                "address_masked": None,
            }
            reported = await pool.fetchval(
                "SELECT data FROM events "
                "WHERE type = 'DeliveryFailed' AND data->>'recipient_id' = $1",
                str(erased.client_id),
            )
            assert reported["because"] == FailedBecause.erased.value
            assert [m.rcpt_tos for m in sink.messages] == [[sessions[0][2].email]]
    finally:
        await nc.drain()


async def test_a_burst_of_invitations_opens_addresses_a_batch_at_a_time(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> None:
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock())
    nc = await connect_nats(nats_server.url, "feed")
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic()
            invited = await feed.sessions(300)
            await sink.wait_for(300, timeout=60)
            assert {to for m in sink.messages for to in m.rcpt_tos} == {i.email for i in invited}
            # Claimed up to 64 at a time: a request per claimed batch, not one per mail.
            assert 1 <= feed.unseal_requests <= 30, feed.unseal_requests
    finally:
        await nc.drain()
