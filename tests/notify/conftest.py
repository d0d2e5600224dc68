"""Notify next to scheduling and links, mailing a real SMTP server (aiosmtpd) in the test.

Scheduling is driven through its API as a clinic would; links issues the links; notify mails
them. Notify runs on a clock the test moves, so reminders fall due when the test says.
"""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import icalendar
import pytest
from fastapi import FastAPI

from runtime.embedded import NatsServer
from runtime.service import build_app
from services.notify import app as notify_app
from services.notify.config import NotifySettings
from services.notify.handlers import Notify
from services.notify.ical import session_uid
from tests.links.conftest import Clock, LinkedClinic, linked_clinic, links_service
from tests.notify.smtp import Received, SmtpSink
from tests.scheduling.conftest import SEALER, scheduling_app
from tests.support import eventually, serving, settings, start_nats, start_postgres


@dataclass
class RunningClock:
    """Real time, moved forward by the test: retries fall due on their own, reminders when
    the test skips ahead."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


FAST = {
    "poll_s": 0.05,
    "retry_base_s": 0.2,
    "claim_s": 3.0,
    "link_wait_s": 10.0,
    "smtp_timeout_s": 2.0,
    "smtp_security": "none",
    "sender_address": "appointments@clinic.example",
}


@pytest.fixture(scope="package")
def nats_server(short_tmp: Path) -> Iterator[NatsServer]:
    """Notify's tests get a NATS and a Postgres of their own: notify reads every session ever
    scheduled on its streams, and the rest of the suite schedules hundreds (which would be
    mailed here, to these tests' sinks)."""
    server = start_nats(short_tmp / "notify-nats")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def postgres_dsn(short_tmp: Path) -> Iterator[str]:
    postgres = start_postgres(short_tmp / "notify-pg")
    yield postgres.dsn
    postgres.stop()


def notify_service(
    dsn: str, nats_url: str, sink: SmtpSink, clock: RunningClock, **config: Any
) -> FastAPI:
    notify = Notify(
        settings=NotifySettings(smtp_host=sink.host, smtp_port=sink.port, **(FAST | config)),
        sealer_source=lambda: SEALER,
        clock=clock,
    )
    return build_app(notify_app.build(notify), settings(dsn, nats_url))


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as smtp:
        yield smtp


@dataclass
class Platform:
    scheduling: httpx.AsyncClient
    links: httpx.AsyncClient
    notify: httpx.AsyncClient
    sink: SmtpSink
    clock: RunningClock


@pytest.fixture
async def platform(
    postgres_dsn: str, nats_server: NatsServer, sink: SmtpSink
) -> AsyncIterator[Platform]:
    clock = RunningClock()
    sched = scheduling_app(postgres_dsn, nats_server.url)
    links = links_service(postgres_dsn, nats_server.url, Clock())
    notify = notify_service(postgres_dsn, nats_server.url, sink, clock)
    async with (
        serving(sched) as scheduling_client,
        serving(links) as links_client,
        serving(notify) as notify_client,
    ):
        yield Platform(scheduling_client, links_client, notify_client, sink, clock)


@dataclass
class Clinic:
    """A clinic registered through scheduling, with its key working on links and notify."""

    linked: LinkedClinic
    platform: Platform

    @property
    def headers(self) -> dict[str, str]:
        return self.linked.clinic.headers

    @property
    def scheduling(self) -> Any:
        return self.linked.clinic

    async def notify_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.platform.notify.request(method, path, headers=self.headers, **kwargs)

    async def deliveries(self, **filters: Any) -> list[dict[str, Any]]:
        response = await self.notify_call("GET", "/v1/deliveries", params=filters)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def wait_deliveries(self, predicate: Any, what: str, **filters: Any) -> list[Any]:
        found: list[dict[str, Any]] = []

        async def done() -> bool:
            nonlocal found
            found = await self.deliveries(**filters)
            return bool(predicate(found))

        await eventually(done, timeout=20, what=what)
        return found


async def clinic_of(platform: Platform, **clinic_settings: Any) -> Clinic:
    # links' helper needs only the scheduling and links clients, which this platform has too
    linked = await linked_clinic(platform, **clinic_settings)  # type: ignore[arg-type]
    return Clinic(linked, platform)


def mails_to(sink: SmtpSink, address: str) -> list[Received]:
    return [m for m in sink.messages if address in m.rcpt_tos]


def mails_about(sink: SmtpSink, session_id: str) -> list[Received]:
    """The messages about one session, by the UID of their calendar. Only these say what the
    test did: a message an earlier test left unsent may arrive once this test's notify starts,
    before the test can tell the sink anything."""
    uid = session_uid(UUID(session_id))
    about = []
    for received in sink.messages:
        for part in received.message.iter_attachments():
            if part.get_content_type() != "text/calendar":
                continue
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            events = icalendar.Calendar.from_ical(raw).walk("VEVENT")
            if any(str(e.get("UID")) == uid for e in events):
                about.append(received)
                break
    return about


def body_of(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()  # type: ignore[attr-defined]
    return content


def calendar_of(message: EmailMessage) -> icalendar.Calendar:
    for part in message.iter_attachments():
        if part.get_content_type() == "text/calendar":
            raw = part.get_payload(decode=True)
            assert isinstance(raw, bytes)
            return icalendar.Calendar.from_ical(raw)
    raise AssertionError("the message has no calendar attachment")


def event_of(calendar: icalendar.Calendar) -> Any:
    events = [c for c in calendar.walk("VEVENT")]
    assert len(events) == 1
    return events[0]
