"""What must hold once the faults are over: every stored event in JetStream exactly once, no
effect twice, no mail twice, no room over its cap, and the long call never stalled."""

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS

from runtime.streams import stream_name
from tests.notify.smtp import Received
from tests.support import stream_messages

STORES = ("scheduling", "links", "signaling", "notify", "media")


@dataclass
class StreamCheck:
    service: str
    stored: int
    in_stream: int
    lost: int
    duplicated: int
    replicas_current: bool


async def stream_ids(nc: NATS, service: str) -> tuple[list[str], bool]:
    """Every ``Nats-Msg-Id`` in the service's stream, and whether all its replicas are current."""
    js = nc.jetstream()
    ids = [
        (msg.headers or {}).get("Nats-Msg-Id", "")
        for msg in await stream_messages(js, stream_name(service))
    ]
    info = await js.stream_info(stream_name(service))
    replicas = info.cluster.replicas if info.cluster is not None else []
    return ids, all(r.current for r in replicas or [])


async def events_in_streams(nc: NATS, dsn: str, within: float = 60.0) -> list[StreamCheck]:
    """Each service's stored events against its stream, once its relay has caught up."""
    conn = await asyncpg.connect(dsn)
    try:
        checks = []
        for service in STORES:
            deadline = time.monotonic() + within
            while True:
                stored = {
                    str(row["event_id"])
                    for row in await conn.fetch(f"SELECT event_id FROM {service}.events")
                }
                ids, current = await stream_ids(nc, service)
                missing = stored - set(ids)
                if (not missing and current) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            duplicated = sum(n - 1 for n in Counter(ids).values() if n > 1)
            checks.append(
                StreamCheck(service, len(stored), len(ids), len(missing), duplicated, current)
            )
        return checks
    finally:
        await conn.close()


async def duplicate_effects(dsn: str) -> dict[str, int]:
    """Effects that a redelivered event or a retried request would double, by kind."""
    conn = await asyncpg.connect(dsn)
    try:
        found: dict[str, Any] = {
            # More than one working link for one purpose.
            "links: active links per slot > 1": await conn.fetchval(
                "SELECT count(*) FROM (SELECT slot FROM links.links WHERE state = 'active' "
                "GROUP BY slot HAVING count(*) > 1) d"
            ),
            # A retried POST /v1/sessions that booked twice (each flow has its own client).
            "scheduling: sessions per client > 1": await conn.fetchval(
                "SELECT count(*) FROM (SELECT data->'client_ids' FROM scheduling.events "
                "WHERE type = 'SessionScheduled' GROUP BY data->'client_ids' "
                "HAVING count(*) > 1) d"
            ),
            # An invitation sent twice for one session, recipient and revision.
            "notify: invitations sent per message > 1": await conn.fetchval(
                "SELECT count(*) FROM (SELECT data->>'session_id', data->>'recipient_id', "
                "data->>'revision', data->>'kind' FROM notify.events "
                "WHERE type = 'InvitationSent' GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"
            ),
            # Someone let in twice (a resume or a retried admit must not admit again).
            "signaling: admissions per participant > 1": await conn.fetchval(
                "SELECT count(*) FROM (SELECT data->>'participant_id' FROM signaling.events "
                "WHERE type = 'ParticipantAdmitted' GROUP BY 1 HAVING count(*) > 1) d"
            ),
        }
        return {name: int(n or 0) for name, n in found.items()}
    finally:
        await conn.close()


def duplicate_mails(messages: list[Received]) -> int:
    """Mails received more than once: the same Message-ID, or the same subject to the same
    recipient (a message planned twice gets a second Message-ID)."""
    ids = Counter(str(m.message["Message-ID"]) for m in messages)
    same = Counter((tuple(m.rcpt_tos), str(m.message["Subject"])) for m in messages)
    return sum(n - 1 for n in ids.values() if n > 1) + sum(n - 1 for n in same.values() if n > 1)


@dataclass
class CallCheck:
    """The long call on the media node that was not killed."""

    reports: int
    frames: int
    longest_stall_s: float
    byes: int
    disconnections: int
    failed_renegotiations: int


def call_continuity(events: list[dict[str, Any]], every_s: float) -> CallCheck:
    """From one peer's reports: video frames received per report, the longest run of reports
    with no new frame, and anything that ended or broke its connection."""
    stats = [e for e in events if e.get("event") in ("stats", "done")]
    totals = [
        sum(t["frames"] for t in e.get("tracks", {}).values() if t.get("kind") == "video")
        for e in stats
    ]
    stall = longest = 0
    for before, after in itertools.pairwise(totals):
        stall = stall + 1 if after <= before else 0
        longest = max(longest, stall)
    states = [e.get("state") for e in events if e.get("event") == "connection_state"]
    last = stats[-1] if stats else {}
    return CallCheck(
        reports=len(stats),
        frames=totals[-1] if totals else 0,
        longest_stall_s=longest * every_s,
        byes=sum(1 for e in events if e.get("event") == "bye"),
        # "closed" comes when the peer leaves at the end; before that it must stay connected.
        disconnections=sum(1 for s in states if s in ("disconnected", "failed")),
        failed_renegotiations=int(last.get("failed_renegotiations") or 0),
    )
