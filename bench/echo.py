"""The NATS floor of the benchmarks: a responder in a process of its own.

    python bench/echo.py NATS_URL

It answers every request on ``ECHO_SUBJECT`` with ``ECHO_REPLY`` through ``runtime.rpc.serve``
(as the services answer theirs), so a benchmark's figure for a service's request/reply sits
next to the bare round trip of the same machinery, measured in the same run.
"""

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import Process  # noqa: E402
from runtime.rpc import Endpoint, serve  # noqa: E402
from runtime.service import connect_nats  # noqa: E402

ECHO_SUBJECT = "rpc.bench.echo"
ECHO_REPLY = b'{"status":200}'


def start_echo(folder: Path, nats_url: str) -> Process:
    args = [sys.executable, str(Path(__file__).resolve()), nats_url]
    return Process("NATS echo", args, folder / "echo.log", dict(os.environ))


async def echo_ready(nc: Any, echo: Process, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        echo.check()
        with contextlib.suppress(Exception):
            await nc.request(ECHO_SUBJECT, b"ready?", timeout=0.5)
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the NATS echo does not answer after {within}s:\n{echo.log_tail()}")


async def run_echo(nats_url: str) -> None:
    nc = await connect_nats(nats_url, "bench-echo")

    async def answer(_ctx: Any, _data: bytes) -> bytes:
        return ECHO_REPLY

    # The context is only handed to the answer, which needs none.
    await serve(nc, [Endpoint(ECHO_SUBJECT, answer)], None, queue="bench-echo")  # type: ignore[arg-type]
    await nc.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_echo(sys.argv[1]))
