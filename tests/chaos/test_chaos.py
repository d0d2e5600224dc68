"""Whole-system chaos: the scaled-out platform (tests/chaos/platform.py) under the workload
(tests/chaos/workload.py) while processes are killed with SIGKILL, one at a time: one NATS
node, one replica of each service, the relay leader of each service, one media node; and
Postgres is stopped and started again on the same data (down ``POSTGRES_DOWN_S``), after which
every process must be ready again within ``READY_AFTER_POSTGRES_GOAL_S`` (its **back**).

Each fault: flows start; the process is killed; a probe flow (booking to admission, through
whatever is still up) is run until one succeeds: **recovered** is the kill to that probe's
end, next to the same probe's duration before any fault (the same-run baseline). The process
is restarted (**back** is the restart to ready: the NATS node's streams current again), and
the flows that were in flight must all complete.

At the end: flows N/N, every stored event in its stream exactly once (lost 0, duplicated 0),
no effect twice, no mail twice, no room over its cap, and the long call on the media node that
was not killed never stalled. A second call runs on the media node that is killed: its people
follow the fresh ``admitted`` signaling sends them to the other node (their peers reconnect
in-process, as a browser does), and the report gives the time from the kill to everyone's
video flowing there, and how many of them knocked again (none may). The report goes to stdout
and test-artifacts/chaos/report.md.
"""

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from runtime.service import connect_nats
from services.media.config import MediaSettings
from services.signaling.config import SignalingSettings
from tests.chaos.checks import (
    call_continuity,
    duplicate_effects,
    duplicate_mails,
    events_in_streams,
)
from tests.chaos.platform import SERVICES, ChaosPlatform
from tests.chaos.workload import Clinic, FlowFailed, Person, Workload, present, waiting
from tests.media.peers import PeerProcess, peer_process
from tests.notify.smtp import SmtpSink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos"
REPORT_EVERY_S = 0.5
HEARTBEAT_S = MediaSettings.model_fields["heartbeat_s"].default
"""The media nodes' heartbeat (the platform runs the defaults): how long a node's card takes
to count a room."""
NODE_TTL_S = MediaSettings.model_fields["node_ttl_s"].default
SWEEP_S = SignalingSettings.model_fields["sweep_s"].default
CROWD_GUESTS = 3  # with a cap of 3 (the host and two guests): one is refused a seat
PROBE_ATTEMPTS = 6
POSTGRES_DOWN_S = 5.0
"""Longer than the platform's replica timeout (4 s): every heartbeat is stale when it is back."""
READY_AFTER_POSTGRES_GOAL_S = 10.0
MOVED_BACK_WITHIN_S = 60.0
MEDIA_FAILOVER_GOAL_S = 8.0


@dataclass
class Fault:
    name: str
    kill: Callable[[], Awaitable[float]]
    restart: Callable[[], Awaitable[float]]
    media: bool = True
    """Whether in-flight flows carry media (not while a media node dies under them)."""
    kills_moved_call: bool = False
    """The process is the media node under the moved call."""


@dataclass
class Outcome:
    fault: str
    recovered_s: float
    back_s: float
    probe_attempts: int


async def test_the_platform_survives_any_one_process_dying() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ac-"))  # short: Postgres puts its socket in it
    async with SmtpSink() as sink, httpx.AsyncClient() as http:
        platform = ChaosPlatform(folder, sink.port)
        try:
            await platform.start()
            report = await _run(platform, sink, http)
        except BaseException:
            (ARTIFACTS / "logs.txt").write_text(platform.log_tails())
            raise
        finally:
            platform.stop()
    (ARTIFACTS / "report.md").write_text(report.text)
    sys.stdout.write(report.text)  # in CI's log with the rest of the run
    report.check()


@dataclass
class Report:
    text: str
    failures: list[str]

    def check(self) -> None:
        assert not self.failures, "\n".join(self.failures)


async def _run(platform: ChaosPlatform, sink: SmtpSink, http: httpx.AsyncClient) -> Report:
    work = Workload(platform, sink, http)
    clinic = await work.clinic()
    small = await work.clinic(max_participants=3)

    # The long call: its room is the first placed, on "ma"; it runs through every fault.
    long_call = await _long_call(work, clinic)
    # The moved call: once "ma" says it holds a room, the next room goes to "mb", the node
    # that dies last; its peers follow the move signaling orders then.
    await asyncio.sleep(HEARTBEAT_S + 0.5)
    moved_call = await _long_call(work, clinic, follow_moves=True)
    if moved_call.node == long_call.node:
        raise FlowFailed(f"both calls were placed on {moved_call.node}")
    async with contextlib.AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(peer_process(config)) for config in long_call.configs
        ]
        moved_peers = [
            await stack.enter_async_context(peer_process(config)) for config in moved_call.configs
        ]
        for peer in [*peers, *moved_peers]:
            await peer.wait_for(lambda e: e["event"] == "first_frame" and e["kind"] == "video", 45)
        call_node = long_call.node
        failover: Failover | None = None

        baseline = []
        for _ in range(3):
            started = time.monotonic()
            await work.visit(clinic)
            baseline.append(time.monotonic() - started)

        outcomes = []
        for index, fault in enumerate(await _faults(platform, call_node, moved_call.node)):
            flows = [
                work.run(f"{fault.name}: visit", work.visit(clinic, media=fault.media)),
                work.run(f"{fault.name}: regenerated link", work.visit(clinic, regenerate=True)),
                work.run(f"{fault.name}: crowd", work.crowd(small, CROWD_GUESTS)),
            ]
            in_flight = [asyncio.create_task(flow) for flow in flows]
            await asyncio.sleep(1.0 + 0.25 * (index % 3))  # mid-way through their steps
            marks = [len(person.frames) for person in moved_call.people]
            killed_at = await fault.kill()
            moving = None
            if fault.kills_moved_call:
                moving = asyncio.create_task(
                    _moved_back(platform.dsn, moved_call, moved_peers, marks, killed_at)
                )
            attempts = await _probe(work, clinic, media=not fault.media, name=fault.name)
            recovered = time.monotonic() - killed_at
            if moving is not None:
                try:
                    failover = await moving
                except AssertionError as failed:  # FlowFailed, PeerFailed
                    work.record.flows["the call on the killed media node"] = f"failed: {failed}"
            back = await fault.restart()
            await asyncio.gather(*in_flight)
            outcomes.append(Outcome(fault.name, recovered, back, attempts))

        for index, peer in enumerate(peers):
            await peer.stop()
            stderr = peer.stderr
            events = "\n".join(json.dumps(e) for e in peer.events)
            (ARTIFACTS / f"long-call-peer-{index}.log").write_text(f"{events}\n{stderr}\n")
        for index, peer in enumerate(moved_peers):
            await peer.stop()
            events = "\n".join(json.dumps(e) for e in peer.events)
            (ARTIFACTS / f"moved-call-peer-{index}.log").write_text(f"{events}\n{peer.stderr}\n")
        await work.done_with(long_call.people)
        await work.done_with(moved_call.people)
        calls = [call_continuity(peer.events, REPORT_EVERY_S) for peer in peers]

    work.record.flows["long call on the surviving media node"] = (
        "ok" if all(c.byes == 0 and c.longest_stall_s <= 1.0 for c in calls) else "stalled"
    )
    nc = await connect_nats(platform.nats.url, "chaos-checks")
    try:
        streams = await events_in_streams(nc, platform.dsn)
    finally:
        await nc.close()
    effects = await duplicate_effects(platform.dsn)
    mails = duplicate_mails(sink.messages)
    return _report(work, baseline, outcomes, streams, effects, mails, calls, call_node, failover)


@dataclass
class LongCall:
    node: str
    configs: list[dict[str, object]]
    people: list[Person]
    """Host and guest: they stay connected (and resume if their replica dies) to the end."""
    room_id: str
    participant_ids: list[str]


async def _long_call(work: Workload, clinic: Clinic, **peer: object) -> LongCall:
    """A host and a guest in a practitioner's room, admitted; their peers' configurations
    (with ``peer`` settings)."""
    _, host_token, room_path = await work.practitioner(clinic)
    _, _, clinic_slug, room_slug = room_path.split("/")
    host = work.person("Dr Long", {"token": host_token})
    guest = work.person("Long Guest", {"clinic": clinic_slug, "room": room_slug})
    await host.join()
    host_seat = await host.next("admitted")
    await guest.join()
    me = str((await guest.next("welcome"))["participant_id"])
    await host.next("room", match=waiting(me))
    guest_seat = await work.admit(host, guest, me)
    await host.next("room", match=present(me))
    configs = []
    for person, seat in ((host, host_seat), (guest, guest_seat)):
        assert person.welcome is not None
        configs.append(
            work.peer_config(person.welcome, seat, report_every_s=REPORT_EVERY_S, **peer)
        )
    assert host.welcome is not None
    ids = [str(p.welcome["participant_id"]) for p in (host, guest) if p.welcome is not None]
    return LongCall(
        str(host_seat["media_node"]), configs, [host, guest], str(host.welcome["room_id"]), ids
    )


@dataclass
class Failover:
    """The moved call after its media node was killed."""

    node: str
    """The node it was on."""
    took_s: float
    """From the kill to every participant's video flowing on the new node."""
    moved_to: str
    reknocks: int
    """Knocks in its room after the first (each one a person made to wait again)."""
    left: int
    """People who left its room (none should have)."""
    moves: int
    """``MediaMoved`` events in its room: one."""


async def _moved_back(
    dsn: str, call: LongCall, peers: list[PeerProcess], marks: list[int], killed_at: float
) -> Failover:
    """Each person of ``call`` follows the first ``admitted`` after the kill (``marks``: their
    frame counts then) that names another node; the time until each one's peer decodes video
    from the other on it."""

    async def back(person: Person, peer: PeerProcess, mark: int, other: str) -> tuple[float, str]:
        frame = await person.next(
            "admitted", match=lambda f: f["media_node"] != call.node, after=mark
        )
        since = await peer.move(frame["media_node"], frame["participant_token"])
        await peer.wait_for(
            lambda e: (
                e["event"] == "first_frame"
                and e["kind"] == "video"
                and e["participant_id"] == other
                and any(e is x for x in peer.events[since:])
            ),
            MOVED_BACK_WITHIN_S,
        )
        return time.monotonic(), str(frame["media_node"])

    host, guest = call.participant_ids
    people = zip(call.people, peers, marks, [guest, host], strict=True)
    flowing = await asyncio.gather(*(back(*person) for person in people))
    conn = await asyncpg.connect(dsn)
    try:
        history = await conn.fetch(
            "SELECT type FROM signaling.events WHERE stream_id = $1 ORDER BY version",
            f"room-{call.room_id}",
        )
    finally:
        await conn.close()
    kinds = [row["type"] for row in history]
    return Failover(
        node=call.node,
        took_s=max(t for t, _ in flowing) - killed_at,
        moved_to=flowing[0][1],
        reknocks=kinds.count("GuestKnocked") - 1,  # its guest knocked once, before the call
        left=kinds.count("ParticipantLeft") + kinds.count("KnockWithdrawn"),
        moves=kinds.count("MediaMoved"),
    )


async def _probe(work: Workload, clinic: Clinic, *, media: bool, name: str) -> int:
    """Run a visit until one succeeds; how many it took."""
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        try:
            await work.visit(clinic, media=media)
            return attempt
        except FlowFailed as failed:
            work.record.flows[f"{name}: probe attempt {attempt}"] = f"retried: {failed}"
    raise FlowFailed(f"{name}: no probe succeeded in {PROBE_ATTEMPTS} attempts")


async def _faults(platform: ChaosPlatform, call_node: str, moved_node: str) -> list[Fault]:
    cluster = platform.nats

    def process(name: str) -> tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]:
        return (lambda: platform.kill(name)), (lambda: platform.restart(name))

    async def kill_nats() -> float:
        cluster.node("n2").kill()
        return time.monotonic()

    async def restart_nats() -> float:
        started = time.monotonic()
        await asyncio.to_thread(cluster.node("n2").start)
        await asyncio.to_thread(cluster.wait_healthy)
        return time.monotonic() - started

    faults = [Fault("NATS node n2", kill_nats, restart_nats)]
    for service in SERVICES:
        leader = await platform.relay_leader(service)
        other = next(r for r in platform.of(service) if r is not leader)
        faults.append(Fault(f"{other.name} (replica)", *process(other.name)))
    for service in SERVICES:
        faults.append(Fault(f"{service} relay leader", *_leader_fault(platform, service)))
    faults.append(_postgres_fault(platform))
    victim = next(r for r in platform.of("media") if r.name != f"media-{call_node}")
    assert victim.name == f"media-{moved_node}", "the moved call is on the node that is killed"
    leader = await platform.relay_leader("media")
    also = " (media's relay leader)" if leader is victim else ""
    name = f"{victim.name} node{also}"
    faults.append(Fault(name, *process(victim.name), media=False, kills_moved_call=True))
    return faults


POSTGRES_FAULT = "Postgres (stopped, started again on the same data)"


def _postgres_fault(platform: ChaosPlatform) -> Fault:
    """Postgres stops (sessions ended) and starts again ``POSTGRES_DOWN_S`` later; the restart
    column is from Postgres being back to every process ready again."""
    readiness: list[asyncio.Task[dict[str, float]]] = []
    back_at: list[float] = []

    async def kill() -> float:
        stopped_at = time.monotonic()
        back_at.append(await platform.restart_postgres(POSTGRES_DOWN_S))
        readiness.append(asyncio.create_task(platform.all_ready()))
        return stopped_at

    async def restart() -> float:
        ready = await readiness[-1]
        return max(ready.values()) - back_at[-1]

    return Fault(POSTGRES_FAULT, kill, restart)


def _leader_fault(
    platform: ChaosPlatform, service: str
) -> tuple[Callable[[], Awaitable[float]], Callable[[], Awaitable[float]]]:
    """Kill whichever replica leads the relay when the fault comes, and restart that one."""
    killed: list[str] = []

    async def kill() -> float:
        leader = await platform.relay_leader(service)
        killed.append(leader.name)
        return await platform.kill(leader.name)

    async def restart() -> float:
        return await platform.restart(killed[-1])

    return kill, restart


def _report(
    work: Workload,
    baseline: list[float],
    outcomes: list[Outcome],
    streams: list,
    effects: dict[str, int],
    mails: int,
    calls: list,
    call_node: str,
    failover: "Failover | None",
) -> Report:
    record = work.record
    flows = {k: v for k, v in record.flows.items() if "probe attempt" not in k}
    done = sum(1 for v in flows.values() if v == "ok")
    over_cap = sum(max(0, held - cap) for cap, held in record.crowds)
    lost = sum(s.lost for s in streams)
    duplicated = sum(s.duplicated for s in streams)
    lines = [
        "# Chaos run",
        "",
        f"flows completed: {done}/{len(flows)}",
        f"events lost: {lost}; duplicated in streams: {duplicated}",
        f"duplicate effects: {sum(effects.values())}",
        f"duplicate emails: {mails} (of {len(work.sink.messages)} received)",
        f"seats over cap: {over_cap} (in {len(record.crowds)} crowded rooms)",
        f"old links refused after regenerate: {record.refused_old_links}",
        f"reconnections with a resume token: {record.resumes}",
        f"joins refused with 503 and made again: {record.joins_retried}; "
        f"admits answered 'not available' and sent again: {record.admits_retried}; "
        f"other host commands: {record.commands_retried}",
        "",
        f"probe visit before any fault (baseline): median {statistics.median(baseline):.2f} s",
        "",
        "| fault (SIGKILL unless said) | recovered | probe attempts | restarted and ready |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {o.fault} | {o.recovered_s:.2f} s | {o.probe_attempts} | {o.back_s:.2f} s |"
        for o in outcomes
    ]
    lines += ["", "| stream | stored | in stream | lost | duplicated | replicas current |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    lines += [
        f"| {s.service} | {s.stored} | {s.in_stream} | {s.lost} | {s.duplicated} | "
        f"{s.replicas_current} |"
        for s in streams
    ]
    lines += ["", f"long call on media node {call_node} (host, guest):"]
    lines += [
        f"- {c.reports} reports, {c.frames} video frames, longest stall {c.longest_stall_s:.1f} s, "
        f"byes {c.byes}, disconnections {c.disconnections}, "
        f"failed renegotiations {c.failed_renegotiations}"
        for c in calls
    ]
    lines += [
        f"Postgres stopped, down {POSTGRES_DOWN_S:g} s, started again: every service ready "
        f"{o.back_s:.2f} s after it was back (goal ≤ {READY_AFTER_POSTGRES_GOAL_S:g} s)"
        for o in outcomes
        if o.fault == POSTGRES_FAULT
    ]
    if failover is not None:
        lines += [
            "",
            f"media node killed → every participant's media flowing on the new node: "
            f"{failover.took_s:.2f} s (goal ≤ {MEDIA_FAILOVER_GOAL_S:.0f} s; the call of 2 on "
            f"{failover.node} moved to {failover.moved_to}; the defaults: media heartbeat "
            f"{HEARTBEAT_S:g} s, node TTL {NODE_TTL_S:g} s, signaling sweep {SWEEP_S:g} s)",
            f"re-knocks in the moved call: {failover.reknocks}; people who left it: "
            f"{failover.left}; moves recorded: {failover.moves}",
        ]
    lines += ["", "duplicate effects by kind:"] + [f"- {k}: {v}" for k, v in effects.items()]
    failed = {k: v for k, v in flows.items() if v != "ok"}
    retried = {k: v for k, v in record.flows.items() if "probe attempt" in k}
    if failed:
        lines += ["", "flows that failed:"] + [f"- {k}: {v}" for k, v in failed.items()]
    if retried:
        lines += ["", "probe attempts retried:"] + [f"- {k}: {v}" for k, v in retried.items()]
    failures = [f"flow {k}: {v}" for k, v in failed.items()]
    for o in outcomes:
        if o.fault == POSTGRES_FAULT and o.back_s > READY_AFTER_POSTGRES_GOAL_S:
            failures.append(f"services ready {o.back_s:.2f} s after Postgres was back")
    if lost or duplicated:
        failures.append(f"events lost {lost}, duplicated {duplicated}")
    if not all(s.replicas_current for s in streams):
        failures.append("a stream's replicas are not current")
    if sum(effects.values()):
        failures.append(f"duplicate effects: {effects}")
    if mails:
        failures.append(f"{mails} duplicate emails")
    if over_cap:
        failures.append(f"{over_cap} seats over the cap")
    if failover is None:
        failures.append("the call on the killed media node did not come back")
    elif failover.reknocks or failover.left or failover.moves != 1:
        failures.append(f"the call on the killed media node did not move cleanly: {failover}")
    for c in calls:
        if c.byes or c.disconnections or c.failed_renegotiations or c.longest_stall_s > 1.0:
            failures.append(f"the long call was interrupted: {c}")
    return Report("\n".join(lines) + "\n", failures)
