"""The SFU's CPU: a full 16-person room, and the cost of one more subscriber, next to
aiortc's own MediaRelay (decode once, re-encode per subscriber) measured in the same run.

    python bench/sfu.py [--quick] [--seconds S] [--results PATH]

One media node runs as a process of its own (``antechamber serve media``) on its own
nats-server and Postgres; every participant is an aiortc peer in a process of its own
(``python -m antechamber.peer``), seated and given a token as signaling would. Publishers
send VP8 320x240 at 15 fps, about 300 kbit/s, plus Opus, pre-encoded (``source: loop``, so
their own CPU stays small) and answering keyframe requests with a keyframe.

1. Full room, forwarding encoded frames: 15 publishers connect, then a 16th joins late and
   decodes; the node's CPU (cores) over ``S`` seconds with 16 x 15 video and audio streams
   forwarded. Two of the peers decode everything they receive (0 decode errors expected);
   the others count encoded frames. Also: the late joiner's first decoded frame from each
   publisher, after its offer (goal <= 500 ms).
2. CPU per added subscriber, for both forwarding modes on a fresh node each: 2 publishers,
   then subscribers (receive only) added in two steps (``LOW`` then ``HIGH``); the slope
   between the two steps is the CPU one more subscriber costs. The baseline is the same
   node with ``ANTECHAMBER_MEDIA_FORWARDING=transcode`` (aiortc's MediaRelay).

Goals: full room <= 0.5 core; >= 8x less CPU per subscriber than MediaRelay; 0 decode
errors; late joiner's first frame <= 500 ms.

With ``--results``, the figures are also appended there as JSON lines (``bench/results.py``);
the full room's baseline there is the raw loopback UDP send printed as the floor (another
unit, so no ratio); the decode errors and the first frame have none.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nats.aio.client import Client as NATS

from bench.results import Figure, add_results_option, write_results
from bench.support import Process, cpu_split, servers, service_ready, start_service
from contracts.media import SEAT_SUBJECT, SeatAnswer, SeatRequest
from contracts.signaling import CallRole
from runtime.embedded import free_port
from runtime.rpc import call
from runtime.service import connect_nats
from tests.media.peers import PeerProcess, participant_config, peer_process

PARTICIPANT_KEY = "bench-participant-key-of-at-least-32-characters"
CLINIC = "clinic-bench"
LOW, HIGH = 1, 4
ROOM_GOAL = 0.5  # cores, for a full room of 16
RATIO_GOAL = 8.0  # times less CPU per subscriber than MediaRelay
FIRST_FRAME_GOAL_MS = 500


class Node:
    def __init__(self, process: Process, node_id: str, nats_url: str, nc: NATS) -> None:
        self.process = process
        self.node_id = node_id
        self.nats_url = nats_url
        self.nc = nc
        self.room_id = uuid.uuid4()

    async def config(self, **extra: Any) -> dict[str, Any]:
        pid = uuid.uuid4()
        request = SeatRequest(
            clinic_id=CLINIC, room_id=self.room_id, participant_id=pid, role=CallRole.guest, cap=16
        )
        answer = await call(self.nc, SEAT_SUBJECT, request, SeatAnswer, 5.0)
        if not answer.granted:
            raise RuntimeError(f"no seat: {answer.message}")
        return participant_config(
            PARTICIPANT_KEY,
            nats_url=self.nats_url,
            clinic_id=CLINIC,
            room_id=self.room_id,
            node_id=self.node_id,
            participant_id=pid,
            ttl_s=3600,
            **({"source": "loop", "decode": False, "report_every_s": 1.0} | extra),
        )

    async def cpu_split_over(self, seconds: float) -> tuple[float, float]:
        """Cores the node used over the next ``seconds``, and of them in the kernel."""
        started, before = time.monotonic(), cpu_split(self.process.pid)
        await asyncio.sleep(seconds)
        after, elapsed = cpu_split(self.process.pid), time.monotonic() - started
        user, kernel = (a - b for a, b in zip(after, before, strict=True))
        return (user + kernel) / elapsed, kernel / elapsed


@contextlib.asynccontextmanager
async def media_node(folder: Path, dsn: str, nats_url: str, forwarding: str) -> Any:
    node_id = f"mb{forwarding[:4]}{os.getpid() % 1000}"
    port = free_port()
    process = start_service(
        "media",
        folder,
        dsn,
        nats_url,
        port,
        label=f"media-{forwarding}",
        ANTECHAMBER_PARTICIPANT_KEY=PARTICIPANT_KEY,
        ANTECHAMBER_MEDIA_NODE_ID=node_id,
        ANTECHAMBER_MEDIA_FORWARDING=forwarding,
        ANTECHAMBER_MEDIA_RESERVATION_S="3600",
        ANTECHAMBER_MEDIA_RECORDINGS_DIR=str(folder / "recordings"),
    )
    nc = await connect_nats(nats_url, "bench-sfu")
    try:
        await service_ready(process, f"http://127.0.0.1:{port}")
        yield Node(process, node_id, nats_url, nc)
    except BaseException:
        print(f"\n--- media log:\n{process.log_tail()}", file=sys.stderr)
        raise
    finally:
        await nc.drain()
        process.stop()


async def join(stack: contextlib.AsyncExitStack, node: Node, **extra: Any) -> PeerProcess:
    peer = await stack.enter_async_context(peer_process(await node.config(**extra)))
    await peer.wait_for("ready", timeout=60)
    return peer


def frames(peer: PeerProcess, kind: str) -> list[int]:
    stats = peer.latest_stats() or {"tracks": {}}
    return [t["frames"] for t in stats["tracks"].values() if t["kind"] == kind]


async def flowing(peers: list[PeerProcess], tracks: int, within: float = 60.0) -> None:
    """Every peer receives ``tracks`` video tracks with frames arriving."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(len([n for n in frames(p, "video") if n > 5]) >= tracks for p in peers):
            return
        await asyncio.sleep(0.5)
    counts = [frames(p, "video") for p in peers]
    raise TimeoutError(f"media not flowing to every peer after {within}s: {counts}")


async def room(
    folder: Path, dsn: str, nats_url: str, seconds: float, people: int
) -> dict[str, Any]:
    async with (
        media_node(folder, dsn, nats_url, "passthrough") as node,
        contextlib.AsyncExitStack() as stack,
    ):
        peers = [await join(stack, node, decode=n < 2) for n in range(people - 1)]
        await flowing(peers, people - 2)
        late = await join(stack, node, decode=True, publish=["audio", "video"])
        firsts = []
        for _ in range(people - 1):
            event = await late.wait_for(
                lambda e: (
                    e["event"] == "first_frame"
                    and e["kind"] == "video"
                    and e["participant_id"] not in {f["participant_id"] for f in firsts}
                ),
                timeout=30,
            )
            firsts.append(event)
        everyone = [*peers, late]
        await flowing(everyone, people - 1)
        await asyncio.sleep(2)  # renegotiations settle
        before = [sum(frames(p, "video")) for p in everyone]
        cores, kernel = await node.cpu_split_over(seconds)
        after = [sum(frames(p, "video")) for p in everyone]
        reports = [await p.stop() for p in (peers[0], peers[1], late)]
    received_fps = statistics.mean(
        (a - b) / seconds / (people - 1) for a, b in zip(after, before, strict=True)
    )
    return {
        "people": people,
        "cores": cores,
        "kernel": kernel,
        "first_frame_ms": [round(f["since_join_s"] * 1000) for f in firsts],
        "decode_errors": sum(r["decode_errors"] for r in reports),
        "received_fps": received_fps,
    }


async def per_subscriber(
    folder: Path, dsn: str, nats_url: str, forwarding: str, seconds: float
) -> dict[str, float]:
    async with (
        media_node(folder, dsn, nats_url, forwarding) as node,
        contextlib.AsyncExitStack() as stack,
    ):
        for _ in range(2):  # publishers
            await join(stack, node)
        subscribers = [await join(stack, node, publish=[]) for _ in range(LOW)]
        await flowing(subscribers, 2)
        await asyncio.sleep(2)
        low, _ = await node.cpu_split_over(seconds)
        subscribers += [await join(stack, node, publish=[]) for _ in range(HIGH - LOW)]
        await flowing(subscribers, 2)
        await asyncio.sleep(2)
        high, _ = await node.cpu_split_over(seconds)
    return {"low": low, "high": high, "per_subscriber": (high - low) / (HIGH - LOW)}


LOOPBACK_SENDER = """
import resource, socket, subprocess, sys, time
reader = subprocess.Popen([sys.executable, "-c", "import socket,sys\\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',0))\\n"
    "print(s.getsockname()[1],flush=True)\\nwhile True: s.recv(2048)"],
    stdout=subprocess.PIPE, text=True)
port = int(reader.stdout.readline())
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload, count = bytes(1200), 0
before = resource.getrusage(resource.RUSAGE_SELF)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    for _ in range(20):
        out.sendto(payload, ("127.0.0.1", port))
    count += 20
    time.sleep(0.001)
after = resource.getrusage(resource.RUSAGE_SELF)
reader.kill()
print(count, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
"""


async def loopback_sendto(seconds: float) -> dict[str, float]:
    """CPU per UDP datagram sent on loopback with nothing else in the way: the kernel's share
    of forwarding here (on loopback it also does the receiving side's work)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOOPBACK_SENDER, str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    count, user, kernel = (float(x) for x in out.split())
    return {"user_us": user / count * 1e6, "kernel_us": kernel / count * 1e6}


async def main(seconds: float, people: int, results: Path | None) -> int:
    with servers() as (folder, nats, postgres):
        print(f"SFU benchmark on {os.cpu_count()} cores, {seconds:.0f} s per measurement")
        measured = await room(folder, postgres.dsn, nats.url, seconds, people)
        passthrough = await per_subscriber(folder, postgres.dsn, nats.url, "passthrough", seconds)
        relay = await per_subscriber(folder, postgres.dsn, nats.url, "transcode", seconds)
        raw = await loopback_sendto(seconds)
    first = measured["first_frame_ms"]
    ratio = relay["per_subscriber"] / max(passthrough["per_subscriber"], 1e-6)
    print()
    streams = measured["people"] * (measured["people"] - 1)
    per_stream = measured["cores"] / streams
    print(
        f"room of {measured['people']}: {measured['people']} publishers x {measured['people'] - 1} "
        "subscribers (VP8 320x240 15 fps ~300 kbit/s + Opus)"
    )
    print(
        f"  SFU process CPU:            {measured['cores']:.3f} cores for {streams} forwarded "
        f"audio+video pairs ({per_stream * 1000:.2f} millicores each)"
    )
    print(
        f"  of which in the kernel:     {measured['kernel']:.3f} cores "
        f"({measured['kernel'] / measured['cores']:.0%}; UDP sends on loopback)"
    )
    print(
        f"  full room of 16 (240 pairs): {per_stream * 240:.2f} cores, extrapolated  "
        f"(goal <= {ROOM_GOAL})"
    )
    print(f"  video received per track:   {measured['received_fps']:.1f} fps (sent: 15)")
    print(f"  decode errors:              {measured['decode_errors']}  (goal 0)")
    print(
        f"  late joiner's first frame:  median {statistics.median(first)} ms, "
        f"max {max(first)} ms over {len(first)} publishers  (goal <= {FIRST_FRAME_GOAL_MS})"
    )
    print(f"CPU per added subscriber (2 publishers, {LOW} -> {HIGH} subscribers)")
    print(
        f"  forwarding encoded frames:  {passthrough['per_subscriber'] * 1000:.1f} millicores "
        f"({passthrough['low']:.3f} -> {passthrough['high']:.3f} cores)"
    )
    print(
        f"  baseline MediaRelay:        {relay['per_subscriber'] * 1000:.1f} millicores "
        f"({relay['low']:.3f} -> {relay['high']:.3f} cores)"
    )
    print(
        f"  ratio:                      {ratio:.1f}x less CPU per subscriber  "
        f"(goal >= {RATIO_GOAL:.0f}x)"
    )
    print("Raw loopback UDP, 1,200-byte datagrams to a reader, no WebRTC (the floor)")
    print(
        f"  per datagram sent:          {raw['user_us'] + raw['kernel_us']:.1f} us CPU "
        f"({raw['kernel_us']:.1f} us in the kernel)"
    )
    write_results(results, figures(measured, passthrough, relay, raw))
    return 0


def figures(
    measured: dict[str, Any],
    passthrough: dict[str, float],
    relay: dict[str, float],
    raw: dict[str, float],
) -> list[Figure]:
    """The printed headline figures as records, each with its baseline where it has one."""
    full_room = measured["cores"] / (measured["people"] * (measured["people"] - 1)) * 240
    first = max(measured["first_frame_ms"])
    ratio = relay["per_subscriber"] / max(passthrough["per_subscriber"], 1e-6)
    return [
        Figure(
            "sfu",
            f"full room of 16 (240 pairs), extrapolated from {measured['people']}",
            full_room,
            "cores",
            "raw loopback UDP send, per 1,200-byte datagram (the floor)",
            raw["user_us"] + raw["kernel_us"],
            "us CPU",
            goal=f"<= {ROOM_GOAL} cores",
            met=full_room <= ROOM_GOAL,
            comparable=False,
        ),
        Figure(
            "sfu",
            "decode errors",
            measured["decode_errors"],
            "errors",
            None,
            None,
            goal="0",
            met=measured["decode_errors"] == 0,
        ),
        Figure(
            "sfu",
            f"late joiner's first frame, slowest of {len(measured['first_frame_ms'])} publishers",
            first,
            "ms",
            None,
            None,
            goal=f"<= {FIRST_FRAME_GOAL_MS} ms",
            met=first <= FIRST_FRAME_GOAL_MS,
        ),
        Figure(
            "sfu",
            f"CPU per added subscriber, forwarding encoded frames ({LOW} -> {HIGH})",
            passthrough["per_subscriber"] * 1000,
            "millicores",
            "MediaRelay (decode once, re-encode per subscriber), same steps",
            relay["per_subscriber"] * 1000,
            goal=f"ratio <= {1 / RATIO_GOAL:.3f} (>= {RATIO_GOAL:.0f}x less CPU)",
            met=ratio >= RATIO_GOAL,
        ),
    ]


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s measurements: the smoke test")
    parser.add_argument("--seconds", type=float, default=None, help="per measurement (10)")
    parser.add_argument(
        "--people", type=int, default=None, help="in the measured room (6; 3 with --quick)"
    )
    add_results_option(parser)
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    people = args.people or (3 if args.quick else 6)
    raise SystemExit(asyncio.run(main(seconds, people, args.results)))
