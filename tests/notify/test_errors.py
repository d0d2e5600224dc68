"""Values that once made writing a message raise, and what any error while writing leads to:
an attempt counted, then ``failed`` with ``DeliveryFailed``, never a message retried for ever."""

import asyncio
from datetime import UTC, datetime
from typing import Any, NoReturn

import pytest

from contracts.notify import FailedBecause
from runtime.embedded import NatsServer
from runtime.service import connect_nats
from services.notify import ical
from tests.notify.conftest import RunningClock, body_of, calendar_of, event_of, notify_service
from tests.notify.feed import Feed
from tests.notify.smtp import SmtpSink
from tests.scheduling.conftest import SEALER
from tests.support import eventually, serving


async def test_a_clinic_name_with_a_line_break_is_one_line_in_the_from_header(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> None:
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock())
    nc = await connect_nats(nats_server.url, "feed")
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic(name="Riverside\r\nBcc: someone@example.net\r\n\tTherapy")
            (invited,) = await feed.sessions(1)
            (received,) = await sink.wait_for(1, timeout=20)
            message = received.message
            assert received.rcpt_tos == [invited.email]
            assert message["Bcc"] is None
            assert str(message["From"]) == (
                '"Riverside Bcc: someone@example.net Therapy" <appointments@clinic.example>'
            )
            assert invited.url in body_of(message)
    finally:
        await nc.drain()


@pytest.mark.parametrize("time_zone", ["UTC", "Pacific/Kiritimati"])
async def test_a_session_at_the_end_of_year_9999_is_mailed_with_its_calendar_entry(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink, time_zone: str
) -> None:
    """The last hours of 9999 are in year 10000 east of UTC: times that cannot be written in
    the zone are written in UTC instead."""
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock())
    nc = await connect_nats(nats_server.url, "feed")
    starts_at = datetime(9999, 12, 31, 22, 0, tzinfo=UTC)
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic(time_zone=time_zone)
            (invited,) = await feed.sessions(1, starts_at=starts_at)
            (received,) = await sink.wait_for(1, timeout=20)
            assert invited.url in body_of(received.message)
            assert "31 December 9999" in body_of(received.message)
            event = event_of(calendar_of(received.message))
            assert event.decoded("DTSTART") == starts_at
    finally:
        await nc.drain()


async def test_an_unexpected_error_while_writing_counts_as_an_attempt_and_ends_as_failed(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> NoReturn:
        raise RuntimeError("a bug nobody foresaw")

    monkeypatch.setattr(ical, "calendar", broken)
    app = notify_service(postgres_dsn, nats_server.url, sink, RunningClock(), max_attempts=3)
    nc = await connect_nats(nats_server.url, "feed")
    try:
        async with serving(app):
            feed = Feed(nc, SEALER)
            await feed.clinic()
            (invited,) = await feed.sessions(1)
            pool = app.state.runtime.context.pool

            async def invitation() -> Any:
                return await pool.fetchrow(
                    "SELECT status, attempts, detail FROM deliveries "
                    "WHERE session_id = $1 AND kind = 'invitation'",
                    invited.session_id,
                )

            async def failed() -> bool:
                row = await invitation()
                return row is not None and row["status"] == "failed"

            # Retries 0.2 s, then 0.4 s apart: far within the claim period (3 s) of the bug.
            await eventually(failed, timeout=10, what="the invitation failed after 3 attempts")
            row = await invitation()
            assert row["attempts"] == 3
            assert row["detail"].startswith("gave up after 3 tries"), row["detail"]
            assert "RuntimeError" in row["detail"]
            assert "nobody foresaw" not in row["detail"], "an error's message may hold anything"
            reported = await pool.fetchval(
                "SELECT data FROM events "
                "WHERE type = 'DeliveryFailed' AND data->>'session_id' = $1",
                str(invited.session_id),
            )
            assert reported["because"] == FailedBecause.gave_up.value
            await asyncio.sleep(0.5)
            assert (await invitation())["attempts"] == 3, "tried again after failing"
            assert sink.messages == []
    finally:
        await nc.drain()
