"""A consumer in its own process.

python -m tests.procs.consumer_proc DSN SERVICE SOURCE NATS_URL [crash-after-commit]

With ``crash-after-commit`` it SIGKILLs itself right after the first handler's transaction
commits and before the message is acknowledged.
"""

import asyncio
import os
import signal
import sys

from faststream.nats import NatsBroker

from contracts.envelope import RawEnvelope
from runtime.consumer import attach
from runtime.context import ServiceContext
from runtime.db import create_pool
from runtime.eventstore import EventStore
from runtime.service import connect_nats
from runtime.settings import RuntimeSettings
from tests.support import notes_consumer


async def main(dsn: str, service: str, source: str, nats_url: str, crash: bool) -> None:
    pool = await create_pool(dsn, service, size=4)
    nc = await connect_nats(nats_url, f"{service}-consumer-proc")
    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, service), nc)

    async def die(_envelope: RawEnvelope) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    broker = NatsBroker(nats_url)
    attach(
        broker,
        notes_consumer(source, ack_wait_s=2.0),
        service=service,
        context=context,
        after_commit=die if crash else None,
    )
    await broker.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    dsn, service, source, url = sys.argv[1:5]
    asyncio.run(main(dsn, service, source, url, sys.argv[5:6] == ["crash-after-commit"]))
