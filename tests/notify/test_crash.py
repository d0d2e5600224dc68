"""Notify killed with SIGKILL in the middle of 1,000 invitations: none twice, none lost."""

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from bench.support import Process, servers, service_ready, start_service
from runtime.embedded import free_port
from runtime.sealing import Sealer, new_key
from runtime.service import connect_nats
from tests.notify.conftest import body_of
from tests.notify.feed import Feed
from tests.notify.smtp import SmtpSink

COUNT = 1000


@contextlib.asynccontextmanager
async def drained(nc: NATS) -> AsyncIterator[NATS]:
    try:
        yield nc
    finally:
        await nc.drain()


def notify_process(
    folder: Path, dsn: str, nats_url: str, sink: SmtpSink, key: str, label: str
) -> tuple[Process, int]:
    port = free_port()
    process = start_service(
        "notify",
        folder,
        dsn,
        nats_url,
        port,
        label=label,
        ANTECHAMBER_LINK_KEY=key,
        ANTECHAMBER_NOTIFY_SMTP_HOST=sink.host,
        ANTECHAMBER_NOTIFY_SMTP_PORT=str(sink.port),
        ANTECHAMBER_NOTIFY_SMTP_SECURITY="none",
        ANTECHAMBER_NOTIFY_POLL_S="0.05",
        ANTECHAMBER_NOTIFY_CLAIM_S="2",
    )
    return process, port


@pytest.mark.slow
async def test_notify_killed_mid_way_through_1000_invitations_sends_each_exactly_once() -> None:
    # Servers of its own: the 1,000 sessions would otherwise wait in the shared streams for
    # every later test's links and notify.
    with servers() as (folder, nats, postgres):
        await killed_mid_way(folder, postgres.dsn, nats.url)


async def killed_mid_way(tmp_path: Path, postgres_dsn: str, nats_url: str) -> None:
    key = new_key()
    # The feed's connection answers for scheduling (it opens the clients' sealed addresses)
    # until both processes are done.
    nc = await connect_nats(nats_url, "crash-test")
    async with SmtpSink() as sink, drained(nc):
        sink.accepting_delay = 0.002  # a relay that takes a moment: the kill lands mid-send
        first, port = notify_process(tmp_path, postgres_dsn, nats_url, sink, key, "n1")
        try:
            await service_ready(first, f"http://127.0.0.1:{port}")
            feed = Feed(nc, Sealer(key))
            await feed.clinic()
            invited = await feed.sessions(COUNT)
            await sink.wait_for(COUNT // 4, timeout=120)
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait()
            at_kill = len(sink.messages)
        finally:
            first.stop()
        assert at_kill < COUNT, "the kill came too late to test anything"
        second, port = notify_process(tmp_path, postgres_dsn, nats_url, sink, key, "n2")
        try:
            await service_ready(second, f"http://127.0.0.1:{port}")
            await sink.wait_for(COUNT, timeout=180)
            await asyncio.sleep(3)  # anything sent twice would arrive by now
        finally:
            second.stop()
        received = Counter(to for m in sink.messages for to in m.rcpt_tos)
    expected = {i.email: i for i in invited}
    duplicates = {to: n for to, n in received.items() if n > 1}
    lost = set(expected) - set(received)
    assert duplicates == {}, f"{len(duplicates)} recipients got their invitation twice"
    assert lost == set(), f"{len(lost)} invitations lost"
    for message in sink.messages:
        (to,) = message.rcpt_tos
        assert expected[to].url in body_of(message.message)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        statuses = Counter(
            r["status"]
            for r in await conn.fetch(
                "SELECT status FROM notify.deliveries WHERE clinic_id = $1 AND kind = 'invitation'",
                feed.clinic_id,
            )
        )
    finally:
        await conn.close()
    # Those in the relay's hands at the kill (at most one per connection) arrived, and are
    # recorded as unconfirmed rather than sent again.
    assert statuses["sent"] + statuses["unconfirmed"] == COUNT, statuses
    assert statuses["unconfirmed"] <= 4, statuses
