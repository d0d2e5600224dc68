"""Sessions scheduled per second over HTTP, next to the event store's raw append rate.

    python bench/scheduling.py [--quick] [--sessions N] [--concurrency C] [--results PATH]

The scheduling service runs as its own process (``antechamber serve scheduling``), so the
load generator here shares neither its event loop nor its core. A session counts once its
``SessionScheduled`` event has arrived from JetStream (appended, relayed and acknowledged):
rate = N / (first request sent -> last of the N events received). Goal: >= 500 sessions/s.

Baseline, in the same run against the same Postgres: ``EventStore.append`` of one small
event per new stream, no projections, with the same number of concurrent callers.

It starts its own nats-server and Postgres (pgserver) in a temporary folder. With
``--results``, the figure is also appended there as a JSON line (``bench/results.py``).
"""

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench.eventstore import ms, pct, schema_pool  # noqa: E402
from bench.results import Figure, add_results_option, write_results  # noqa: E402
from bench.support import CpuMeter, children, servers, service_ready, start_service  # noqa: E402
from contracts.envelope import event_subject  # noqa: E402
from runtime.embedded import free_port  # noqa: E402
from runtime.eventstore import EventStore  # noqa: E402
from runtime.logging import configure_logging  # noqa: E402
from runtime.service import connect_nats  # noqa: E402
from tests.support import NoteTaken  # noqa: E402

GOAL = 500.0
SERVICE = "scheduling"
OPERATOR_KEY = "op-" + secrets.token_urlsafe(24)
CLIENTS = 20
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


# -- processes ---------------------------------------------------------------------------------


# -- the clinic --------------------------------------------------------------------------------


@dataclass
class Clinic:
    clinic_id: str
    headers: dict[str, str]
    practitioner_id: str
    client_ids: list[str]


async def created(response: Awaitable[httpx.Response]) -> Any:
    answer = await response
    if answer.status_code != 201:
        raise RuntimeError(f"{answer.request.url}: {answer.status_code} {answer.text}")
    return answer.json()


async def set_up_clinic(client: httpx.AsyncClient) -> Clinic:
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    slug = f"b{uuid.uuid4().hex[:10]}"
    clinic = await created(
        client.post(
            "/v1/clinics",
            headers=operator,
            json={"name": "Bench Clinic", "slug": slug, "settings": {"plan": "professional"}},
        )
    )
    clinic_id = clinic["clinic_id"]
    key = await created(
        client.post(f"/v1/clinics/{clinic_id}/api-keys", headers=operator, json={"label": "b"})
    )
    headers = {"Authorization": f"Bearer {key['key']}"}
    practitioner = await created(
        client.post(
            "/v1/practitioners",
            headers=headers,
            json={"display_name": "Dr Bench", "room_slug": f"p{uuid.uuid4().hex[:8]}"},
        )
    )
    client_ids = []
    for i in range(CLIENTS):
        added = await created(
            client.post(
                "/v1/clients",
                headers=headers,
                json={"display_name": f"Client {i}", "email": f"client{i}@example.org"},
            )
        )
        client_ids.append(added["client_id"])
    return Clinic(clinic_id, headers, practitioner["practitioner_id"], client_ids)


# -- HTTP schedule -> JetStream ----------------------------------------------------------------


@dataclass
class Run:
    count: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]
    retried: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds


async def schedule_sessions(
    callers: list[httpx.AsyncClient],
    clinic: Clinic,
    arrived: dict[str, float],
    first: int,
    count: int,
    meter: CpuMeter | None = None,
) -> Run:
    """POST ``count`` sessions from the callers; done when all their events arrived."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    latencies: list[float] = []
    session_ids: list[str] = []
    retried: list[int] = []
    next_index = iter(range(first, first + count))

    async def caller(client: httpx.AsyncClient) -> None:
        for i in next_index:
            starts_at = base + timedelta(hours=i)
            body = {
                "practitioner_id": clinic.practitioner_id,
                "client_ids": [clinic.client_ids[i % len(clinic.client_ids)]],
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + timedelta(minutes=50)).isoformat(),
            }
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/sessions", headers=clinic.headers, json=body)
            except httpx.TransportError:
                # The server closed an idle keep-alive connection as we sent: send it again
                # (at worst one more session is scheduled; only answered ones are counted).
                retried.append(i)
                response = await client.post("/v1/sessions", headers=clinic.headers, json=body)
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/sessions: {response.status_code} {response.text}")
            session_ids.append(response.json()["session_id"])

    if meter:
        meter.start()
    own = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(caller(client) for client in callers))
    deadline = time.monotonic() + 60
    while any(s not in arrived for s in session_ids):
        if time.monotonic() > deadline:
            missing = sum(s not in arrived for s in session_ids)
            raise RuntimeError(f"{missing} of {count} SessionScheduled events never arrived")
        await asyncio.sleep(0.002)
    finished = max(arrived[s] for s in session_ids)
    cpu = {"load generator": time.process_time() - own}
    if meter:
        meter.stop()
        cpu |= meter.used
    return Run(count, finished - started, latencies, cpu, len(retried))


async def http_rate(
    base_url: str,
    nats_url: str,
    sessions: int,
    warm_up: int,
    concurrency: int,
    meter: CpuMeter,
) -> tuple[Run, dict[str, float]]:
    # One client with one keep-alive connection per caller: httpx's pool rescans all its
    # connections for every queued request, which costs more CPU than the requests themselves
    # once 48 share one pool (O(connections x waiting) per hand-over).
    async with contextlib.AsyncExitStack() as stack:
        callers = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=ONE_CONNECTION, timeout=60)
            )
            for _ in range(concurrency)
        ]
        client = callers[0]
        clinic = await set_up_clinic(client)
        arrived: dict[str, float] = {}

        async def on_event(msg: Msg) -> None:
            arrived[json.loads(msg.data)["data"]["session_id"]] = time.perf_counter()

        nc = await connect_nats(nats_url, "bench-scheduling")
        try:
            subject = event_subject(clinic.clinic_id, SERVICE, "SessionScheduled")
            sub = await nc.jetstream().subscribe(subject, cb=on_event, ordered_consumer=True)
            await schedule_sessions(callers, clinic, arrived, 0, warm_up)
            before = await server_timing(client)
            run = await schedule_sessions(callers, clinic, arrived, warm_up, sessions, meter)
            after = await server_timing(client)
            await sub.unsubscribe()
        finally:
            await nc.drain()
    server = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return run, server


METRIC = re.compile(
    r'^antechamber_http_request_seconds_(sum|count)\{(?=[^}]*method="POST")'
    r'(?=[^}]*route="/v1/sessions")(?=[^}]*status="201")[^}]*\} ([0-9.e+-]+)$',
    re.MULTILINE,
)


async def server_timing(client: httpx.AsyncClient) -> dict[str, float]:
    """The service's own histogram of POST /v1/sessions: total seconds and count."""
    with contextlib.suppress(httpx.HTTPError):
        text = (await client.get("/metrics")).text
        return {kind: float(value) for kind, value in METRIC.findall(text)}
    return {}


# -- baseline ----------------------------------------------------------------------------------


async def append_rate(dsn: str, appends: int, concurrency: int) -> float:
    """Raw ``EventStore.append``: one small event per new stream, ``concurrency`` callers."""
    schema = f"bench_sched_{uuid.uuid4().hex[:8]}"
    pool = await schema_pool(dsn, schema)
    store = EventStore(pool, schema)
    next_index = iter(range(appends))

    async def caller() -> None:
        for i in next_index:
            await store.append(f"s-{i}", 0, [NoteTaken(n=i)], clinic_id="c_bench")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return appends / (time.perf_counter() - started)
    finally:
        await pool.close()


# -- report ------------------------------------------------------------------------------------


def report(run: Run, baseline: float, server: dict[str, float], concurrency: int) -> Figure:
    ratio = run.rate / baseline
    print(
        f"\nscheduling: {run.count} sessions over HTTP/1.1 keep-alive, "
        f"{concurrency} concurrent callers"
    )
    print(f"   HTTP schedule -> JetStream ack   {run.rate:9.0f} sessions/s   ({run.seconds:.2f} s)")
    print(f"   raw event-store append           {baseline:9.0f} appends/s")
    print(f"   ratio                            {ratio:9.2f}x")
    verdict = "met" if run.rate >= GOAL else "not met"
    print(f"   goal >= {GOAL:.0f}/s: {verdict}")
    lat = run.latencies
    print(f"   HTTP latency   p50 {ms(pct(lat, 50))}   p99 {ms(pct(lat, 99))}")
    if server.get("count"):
        mean = server["sum"] / server["count"]
        print(f"   server-side mean POST /v1/sessions (its /metrics)   {ms(mean)}")
    if run.cpu:
        shares = "   ".join(f"{k} {v / run.seconds:.0%}" for k, v in run.cpu.items())
        print(f"   CPU during the run (100% = one core):   {shares}")
    if run.retried:
        print(f"   {run.retried} requests were sent again after a dropped connection")
    return Figure(
        SERVICE,
        "HTTP schedule -> JetStream ack",
        run.rate,
        "sessions/s",
        "raw event-store append",
        baseline,
        "appends/s",
        goal=f">= {GOAL:.0f} sessions/s",
        met=run.rate >= GOAL,
    )


async def main(
    sessions: int, warm_up: int, concurrency: int, baseline_appends: int, results: Path | None
) -> int:
    configure_logging("bench", "warning", "console")  # no line per migration of the baseline
    with servers() as (folder, nats, postgres):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        service = start_service(
            SERVICE, folder, postgres.dsn, nats.url, port, ANTECHAMBER_OPERATOR_KEY=OPERATOR_KEY
        )
        try:
            print(f"Antechamber scheduling benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
            await service_ready(service, base_url)
            postmaster = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
            assert nats.process is not None
            service_pid, nats_pid = service.pid, nats.process.pid
            meter = CpuMeter(
                {
                    "service": lambda: [service_pid],
                    "postgres": lambda: children(postmaster),
                    "nats": lambda: [nats_pid],
                }
            )
            baseline = await append_rate(postgres.dsn, baseline_appends, concurrency)
            run, server = await http_rate(base_url, nats.url, sessions, warm_up, concurrency, meter)
            write_results(results, [report(run, baseline, server, concurrency)])
        except Exception:
            print(f"\nscheduling service log:\n{service.log_tail()}", file=sys.stderr)
            raise
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--sessions", type=int, default=None, help="measured sessions (3000)")
    parser.add_argument("--concurrency", type=int, default=48, help="requests in flight")
    add_results_option(parser)
    args = parser.parse_args()
    sessions = args.sessions or (200 if args.quick else 3000)
    warm_up = 20 if args.quick else 300
    baseline_appends = max(sessions, 1000)
    raise SystemExit(
        asyncio.run(main(sessions, warm_up, args.concurrency, baseline_appends, args.results))
    )
