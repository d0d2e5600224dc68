"""CPU per copy of the media node's per-copy loop, in one process, next to the same copy
written and sent from Python and to a bare ``sendto`` measured in the same run.

    python -m bench.copies [--packets N] [--copies C]     (from the repository's root)

One video upstream and ``C`` (15) downstreams, each with its own UDP socket and SRTP session,
sending to ``C`` sockets that another process drains as fast as they fill. ``N`` packets of
1,100 bytes of payload each go through ``Upstream.receive``, three ways, each timed with
``getrusage`` (user + system CPU of this process) and divided by the copies sent:

- ``c``: as the node does, every copy in C (``_fastpath.fan_out``: rewrite, protect, send);
- ``python``: the same downstreams with no outlet, so every copy takes the Python path of
  ``forwarding.Downstream`` (header and extensions in Python, protected by the outlet's C
  ``protect``, sent with ``socket.sendto``);
- ``floor``: a Python loop of ``socket.sendto`` of 1,200 bytes to the same sockets.

Prints one JSON object: microseconds per copy for each. bench/sfu.py runs it in a process of
its own and reports it; it also runs alone.
"""

import argparse
import json
import multiprocessing
import resource
import selectors
import socket
from typing import Any

import pylibsrtp

from services.media._fastpath import Outlet
from services.media.aiortc_hooks import SRTP_PROTECT, srtp_context
from services.media.forwarding import Downstream
from services.media.rtp import RtpView, parse
from tests.media.rtp_packets import packet, video_upstream

KEY = bytes(range(30))
IDS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 1,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 3,
}


def drain(count: int, ports: "multiprocessing.Queue[list[int]]", stop: Any) -> None:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        sockets.append(s)
    ports.put([s.getsockname()[1] for s in sockets])
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            try:
                while True:
                    key.fileobj.recv(2048)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


class Subscriber:
    """One subscriber's socket and SRTP session, with or without the C outlet."""

    def __init__(self, port: int, in_c: bool) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.session = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        self._outlet = Outlet()
        self._outlet.protect_with(srtp_context(self.session), SRTP_PROTECT, self.session)
        self._outlet.send_on(self.socket.fileno(), "127.0.0.1", port)
        self.in_c = in_c
        self.address = ("127.0.0.1", port)

    @property
    def outlet(self) -> Outlet | None:
        return self._outlet if self.in_c else None

    def send_rtp(self, data: bytes) -> None:
        try:  # noqa: SIM105 (suppress() costs more per call than the floor it is compared to)
            self.socket.sendto(self._outlet.protect(data), self.address)
        except BlockingIOError:
            pass


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def through_upstream(ports: list[int], in_c: bool, packets: list[tuple[RtpView, bytes]]) -> float:
    upstream = video_upstream()
    for n, port in enumerate(ports):
        downstream = Downstream(
            "video", 90_000, ssrc=1000 + n, rtx_ssrc=2000 + n, wire=Subscriber(port, in_c)
        )
        downstream.terms("1", 96, 97, IDS)
        downstream.bind(upstream)
    now = 1.0
    started = cpu()
    for view, data in packets:
        upstream.receive(view, data, now)
        now += 0.001
    return (cpu() - started) / (len(packets) * len(ports)) * 1e6


def floor(ports: list[int], count: int) -> float:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    data = bytes(1200)
    started = cpu()
    for _ in range(count):
        for port in ports:
            try:  # noqa: SIM105 (as above: a measured loop)
                sender.sendto(data, ("127.0.0.1", port))
            except BlockingIOError:
                pass
    return (cpu() - started) / (count * len(ports)) * 1e6


def measure(count: int, copies: int) -> dict[str, float]:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[int]] = context.Queue()
    stop = context.Event()
    reader = context.Process(target=drain, args=(copies, queue, stop), daemon=True)
    reader.start()
    try:
        ports = queue.get(timeout=30)
        keyframe = b"\x10\x00\x00\x9d\x01\x2a" + bytes(1094)
        delta = b"\x10" + bytes(1099)
        data = [
            packet(keyframe if n == 0 else delta, sequence=n, timestamp=n * 3000)
            for n in range(count)
        ]
        packets = [(parse(d), d) for d in data]
        return {
            "floor": floor(ports, count),
            "python": through_upstream(ports, False, packets),
            "c": through_upstream(ports, True, packets),
        }
    finally:
        stop.set()
        reader.join(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--copies", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(measure(args.packets, args.copies)))
