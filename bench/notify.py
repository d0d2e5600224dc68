"""Invitations per second delivered to a local SMTP sink from SessionScheduled events, next to
the raw aiosmtplib send rate in the same run.

    python bench/notify.py [--quick] [--count N] [--results PATH]

The notify service runs as a process of its own (``antechamber serve notify``) on its own
nats-server and Postgres, with ``ANTECHAMBER_NOTIFY_SMTP_CONNECTIONS`` set to ``CONNECTIONS``
and the mail relay pointed at an aiosmtpd sink in this process. Neither scheduling nor links
runs: ``tests.notify.feed.Feed`` publishes their events as their relays would, per session a
ClientAdded (name and address sealed for the client, as scheduling seals them), a
SessionScheduled (video mode session_link, one client) and the client's LinkIssued, sealed
with the link key notify was given; and it answers notify's requests to open the clients'
addresses as scheduling would (``rpc.scheduling.unseal``, one per batch notify claims).

1. Notify: after a warm-up, ``N`` sessions are fed; rate = N / (first publish -> the last
   recipient's invitation accepted by the sink). Every recipient must get exactly one mail,
   carrying their own join URL (checked once the clock has stopped). Also: notify's CPU per
   invitation, and from its delivery log when the invitations were planned and how many
   waited for their link.
2. Baseline: ``aiosmtplib`` alone sends ``N`` messages over ``CONNECTIONS`` connections,
   opened beforehand and reused, to the same sink. Each is an ``EmailMessage`` built from the
   parts of one of notify's invitations (text, HTML, the .ics attachment), so it is the same
   size; they are built before the clock starts (that cost is printed on its own). It runs in
   a process of its own, as notify does, so neither shares the sink's event loop.

It starts its own nats-server and Postgres (pgserver) in a temporary folder. With
``--results``, the rate and the delivery check are also appended there as JSON lines
(``bench/results.py``).
"""

import argparse
import asyncio
import email.policy
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
from aiosmtpd.smtp import Envelope  # noqa: E402

from bench.eventstore import pct  # noqa: E402
from bench.results import Figure, add_results_option, write_results  # noqa: E402
from bench.support import CpuMeter, children, servers, service_ready, start_service  # noqa: E402
from runtime.db import connect  # noqa: E402
from runtime.embedded import free_port  # noqa: E402
from runtime.sealing import Sealer, new_key  # noqa: E402
from runtime.service import connect_nats  # noqa: E402
from tests.notify.feed import Feed, Invited  # noqa: E402
from tests.notify.smtp import SmtpSink  # noqa: E402

CONNECTIONS = 4
SENDER = "no-reply@antechamber.invalid"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- the sink ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    rcpt_tos: tuple[str, ...]
    raw: bytes
    at: float
    """``time.perf_counter()`` when the sink answered 250 to its DATA."""

    def text(self) -> str:
        message = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""


class RawSink(SmtpSink):
    """The test sink, keeping each message's bytes only: parsing a message as it arrives
    costs this process about as much CPU as aiosmtplib spends sending it, so parsing waits
    until the clock has stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.mails: list[Mail] = []
        self.new_mail = asyncio.Event()

    async def _accept(self, envelope: Envelope) -> None:
        raw = envelope.original_content or b""
        self.mails.append(Mail(tuple(envelope.rcpt_tos), raw, time.perf_counter()))
        self.new_mail.set()


async def arrived(sink: RawSink, invited: list[Invited], within: float) -> None:
    """Until each of ``invited`` has a mail in the sink."""
    waiting = {person.email for person in invited}
    seen = 0
    async with asyncio.timeout(within):
        while True:
            sink.new_mail.clear()
            for mail in sink.mails[seen:]:
                waiting.difference_update(mail.rcpt_tos)
            seen = len(sink.mails)
            if not waiting:
                return
            await sink.new_mail.wait()


# -- notify ------------------------------------------------------------------------------------


@dataclass
class Delivered:
    count: int
    seconds: float
    fed_seconds: float
    started_at: datetime
    cpu: dict[str, float]
    invited: list[Invited]
    unseal_requests: int
    """Requests notify sent to open the measured recipients' addresses."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds


async def deliver(sink: RawSink, feed: Feed, count: int, meter: CpuMeter) -> Delivered:
    """Feed ``count`` sessions; measured until the last recipient's invitation arrived."""
    first_mail = len(sink.mails)
    meter.start()
    own = time.process_time()
    asked_before = feed.unseal_requests
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    invited = await feed.sessions(count)
    fed = time.perf_counter() - started
    try:
        await arrived(sink, invited, within=max(120.0, count / 5))
    except TimeoutError:
        raise RuntimeError("not every invitation arrived in time") from None
    meter.stop()
    bench_cpu = time.process_time() - own
    addresses = {person.email for person in invited}
    finished = max(m.at for m in sink.mails[first_mail:] if addresses.intersection(m.rcpt_tos))
    return Delivered(
        count=count,
        seconds=finished - started,
        fed_seconds=fed,
        started_at=started_at,
        cpu=meter.used | {"bench (feed and sink)": bench_cpu},
        invited=invited,
        unseal_requests=feed.unseal_requests - asked_before,
    )


@dataclass
class Checked:
    """What the recipients found in their inboxes."""

    delivered: int
    duplicates: int
    wrong_url: int
    strays: int
    mean_size: float

    @property
    def ok(self) -> bool:
        return self.duplicates == self.wrong_url == self.strays == 0


def check(mails: list[Mail], measured: list[Invited], everyone: list[Invited]) -> Checked:
    """One mail per recipient, with their own URL; none to anyone not invited."""
    by_address = {person.email: person for person in everyone}
    per_address = Counter(address for mail in mails for address in mail.rcpt_tos)
    wrong_url = 0
    for mail in mails:
        text = mail.text()
        wrong_url += sum(by_address[a].url not in text for a in mail.rcpt_tos if a in by_address)
    return Checked(
        delivered=sum(person.email in per_address for person in measured),
        duplicates=sum(n - 1 for n in per_address.values()),
        wrong_url=wrong_url,
        strays=sum(address not in by_address for address in per_address),
        mean_size=statistics.mean(len(mail.raw) for mail in mails),
    )


@dataclass
class Log:
    """Notify's own record of the measured invitations (its ``deliveries`` table)."""

    planned_s: list[float]
    """Seconds from the first publish to each invitation's planning (its consumer's commit)."""
    sent_s: list[float]
    """Seconds from each invitation's planning to its being recorded as sent."""
    waited_for_link: int
    """Invitations first claimed before their link had arrived, so tried again later."""


async def delivery_log(dsn: str, run: Delivered) -> Log:
    conn = await connect(dsn, "notify")
    try:
        rows = await conn.fetch(
            "SELECT created_at, updated_at, next_attempt_at FROM deliveries "
            "WHERE kind = 'invitation' AND status = 'sent' AND session_id = ANY($1::uuid[])",
            [person.session_id for person in run.invited],
        )
    finally:
        await conn.close()
    return Log(
        planned_s=[(r["created_at"] - run.started_at).total_seconds() for r in rows],
        sent_s=[(r["updated_at"] - r["created_at"]).total_seconds() for r in rows],
        waited_for_link=sum(
            r["next_attempt_at"] - r["created_at"] > timedelta(seconds=1) for r in rows
        ),
    )


# -- baseline: aiosmtplib alone, in a process of its own ---------------------------------------


def parts_of(mail: Mail) -> dict[str, str]:
    """The text, HTML and calendar of one of notify's invitations."""
    message = BytesParser(policy=email.policy.default).parsebytes(mail.raw)
    assert isinstance(message, EmailMessage)
    parts = {"subject": str(message["Subject"])}
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html", "text/calendar"):
            content = part.get_content()
            parts[kind] = content.decode() if isinstance(content, bytes) else str(content)
    return parts


def raw_message(parts: dict[str, str], n: int) -> EmailMessage:
    """An invitation like notify's: text, HTML and a calendar entry, to ``raw-<n>@...``."""
    message = EmailMessage()
    message["From"] = f"Riverside Therapy <{SENDER}>"
    message["To"] = f"raw-{n}@example.org"
    message["Subject"] = parts["subject"]
    message["Message-ID"] = f"<raw-{n}@antechamber.invalid>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(parts["text/plain"])
    message.add_alternative(parts["text/html"], subtype="html")
    message.add_attachment(
        parts["text/calendar"].encode(),
        maintype="text",
        subtype="calendar",
        filename="invite.ics",
        params={"method": "REQUEST"},
    )
    return message


async def send_raw(
    host: str, port: int, count: int, connections: int, parts: dict[str, str]
) -> dict[str, float]:
    """``count`` messages built beforehand, over ``connections`` connections opened
    beforehand and reused."""
    own = time.process_time()
    messages = iter([raw_message(parts, n) for n in range(count)])
    build = time.process_time() - own
    clients = [aiosmtplib.SMTP(hostname=host, port=port, timeout=30) for _ in range(connections)]
    for client in clients:
        await client.connect()

    async def sender(client: aiosmtplib.SMTP) -> None:
        for message in messages:
            await client.send_message(message)

    own = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(sender(client) for client in clients))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - own
    for client in clients:
        await client.quit()
    return {"seconds": seconds, "cpu": cpu, "build": build}


def raw_sender_main() -> None:
    """``python -c 'from bench.notify import raw_sender_main; raw_sender_main()' HOST PORT
    COUNT CONNECTIONS PARTS_JSON``"""
    host, port, count, connections = sys.argv[1], *map(int, sys.argv[2:5])
    parts = json.loads(Path(sys.argv[5]).read_text())
    print(json.dumps(asyncio.run(send_raw(host, port, count, connections, parts))))


async def raw_rate(sink: RawSink, count: int, parts_file: Path) -> dict[str, float]:
    first = len(sink.mails)
    own = time.process_time()
    code = "from bench.notify import raw_sender_main; raw_sender_main()"
    args = [sink.host, str(sink.port), str(count), str(CONNECTIONS), str(parts_file)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the raw sender exited with {proc.returncode}")
    result: dict[str, float] = json.loads(out)
    result["sink_cpu"] = time.process_time() - own
    mails = sink.mails[first:]
    if len(mails) != count:
        raise RuntimeError(f"of the raw sender's {count} messages, {len(mails)} arrived")
    result["mean_size"] = statistics.mean(len(mail.raw) for mail in mails)
    return result


# -- report ------------------------------------------------------------------------------------


def report(run: Delivered, checked: Checked, log: Log, raw: dict[str, float]) -> list[Figure]:
    """Print the figures; the rate next to the raw send rate, and the check, as records."""
    raw_rate = run.count / raw["seconds"]
    per_invitation = run.cpu["notify"] / run.count
    print(f"\nNotify benchmark on {os.cpu_count()} cores, {run.count} invitations")
    print(
        f"  invitations delivered:      {checked.delivered}/{run.count} "
        f"(duplicates {checked.duplicates}, wrong URL {checked.wrong_url}, "
        f"to strangers {checked.strays})"
    )
    print(
        f"  SessionScheduled -> mail:   {run.rate:.0f} invitations/s  "
        f"(notify CPU {ms(per_invitation)} per invitation; {run.seconds:.2f} s)"
    )
    print(
        f"  raw aiosmtplib send rate:   {raw_rate:.0f} messages/s  ({CONNECTIONS} connections, "
        f"same sink; CPU per message: sender {ms(raw['cpu'] / run.count)}, "
        f"sink {ms(raw['sink_cpu'] / run.count)})"
    )
    print(f"  ratio:                      {run.rate / raw_rate:.2f}x of the raw send rate")
    events = 3 * run.count
    print(
        f"  events fed in:              {run.fed_seconds:.2f} s "
        f"({events} events, {events / run.fed_seconds:.0f}/s)"
    )
    if log.planned_s:
        print(
            f"  planned (consumers):        last {max(log.planned_s):.2f} s after the first "
            f"publish ({len(log.planned_s) / max(log.planned_s):.0f} invitations/s)"
        )
        print(
            f"  planned -> sent:            p50 {ms(pct(log.sent_s, 50))}   "
            f"p99 {ms(pct(log.sent_s, 99))}   waited for their link: {log.waited_for_link}"
        )
    print(
        f"  addresses opened:           {run.unseal_requests} requests to scheduling "
        f"({run.count / max(run.unseal_requests, 1):.0f} invitations per request)"
    )
    print(
        f"  one message:                notify {checked.mean_size / 1000:.1f} kB, "
        f"raw {raw['mean_size'] / 1000:.1f} kB; building it as an EmailMessage "
        f"{ms(raw['build'] / run.count)} CPU"
    )
    shares = "   ".join(f"{k} {v / run.seconds:.0%}" for k, v in run.cpu.items())
    print(f"  CPU during the run (100% = one core):   {shares}")
    return [
        Figure(
            "notify",
            "SessionScheduled -> mail",
            run.rate,
            "invitations/s",
            f"raw aiosmtplib send rate, {CONNECTIONS} connections, same sink",
            raw_rate,
            "messages/s",
        ),
        Figure(
            "notify",
            f"invitations delivered (duplicates {checked.duplicates}, wrong URL "
            f"{checked.wrong_url}, to strangers {checked.strays})",
            checked.delivered,
            f"of {run.count}",
            None,
            None,
            goal=f"{run.count}, with no duplicates, wrong URLs or strangers",
            met=checked.ok and checked.delivered == run.count,
        ),
    ]


async def main(count: int, warm_up: int, results: Path | None) -> int:
    with servers() as (folder, nats, postgres):
        async with RawSink() as sink:
            port = free_port()
            key = new_key()
            service = start_service(
                "notify",
                folder,
                postgres.dsn,
                nats.url,
                port,
                ANTECHAMBER_LINK_KEY=key,
                ANTECHAMBER_NOTIFY_SMTP_HOST=sink.host,
                ANTECHAMBER_NOTIFY_SMTP_PORT=str(sink.port),
                ANTECHAMBER_NOTIFY_SMTP_SECURITY="none",
                ANTECHAMBER_NOTIFY_SMTP_CONNECTIONS=str(CONNECTIONS),
                ANTECHAMBER_NOTIFY_POLL_S="0.05",
            )
            nc = await connect_nats(nats.url, "bench-notify")
            try:
                print(f"Antechamber notify benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
                await service_ready(service, f"http://127.0.0.1:{port}")
                postmaster = int((folder / "pg" / "postmaster.pid").read_text().split()[0])
                assert nats.process is not None
                service_pid, nats_pid = service.pid, nats.process.pid
                meter = CpuMeter(
                    {
                        "notify": lambda: [service_pid],
                        "postgres": lambda: children(postmaster),
                        "nats": lambda: [nats_pid],
                    }
                )
                feed = Feed(nc, Sealer(key))
                await feed.clinic()
                warm = await feed.sessions(warm_up)
                await arrived(sink, warm, within=60.0)
                run = await deliver(sink, feed, count, meter)
                await asyncio.sleep(1.0)  # a duplicate would come after the first
                service.stop()  # the baseline has the machine to itself, as notify had
                notified = list(sink.mails)
                checked = check(notified, run.invited, warm + run.invited)
                log = await delivery_log(postgres.dsn, run)
                parts_file = folder / "invitation.json"
                parts_file.write_text(json.dumps(parts_of(notified[-1])))
                raw = await raw_rate(sink, count, parts_file)
                write_results(results, report(run, checked, log, raw))
            except Exception:
                print(f"\nnotify service log:\n{service.log_tail()}", file=sys.stderr)
                raise
            finally:
                await nc.drain()
                service.stop()
    return 0 if checked.ok and checked.delivered == count else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--count", type=int, default=None, help="measured invitations (2000)")
    add_results_option(parser)
    args = parser.parse_args()
    count = args.count or (200 if args.quick else 2000)
    raise SystemExit(asyncio.run(main(count, 20 if args.quick else 100, args.results)))
