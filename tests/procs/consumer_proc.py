"""A consumer in its own process.

python -m tests.procs.consumer_proc DSN SERVICE SOURCE NATS_URL [crash-after-commit] [batch=N]

With ``crash-after-commit`` it SIGKILLs itself right after its first transaction commits and
before any of its messages is acknowledged. It handles one message per transaction unless
``batch=N`` lets it handle up to N in one.
"""

import asyncio
import os
import signal
import sys

from contracts.envelope import RawEnvelope
from runtime.consumer import ConsumerLoop
from runtime.context import ServiceContext
from runtime.db import create_pool
from runtime.eventstore import EventStore
from runtime.service import connect_nats
from runtime.settings import RuntimeSettings
from tests.support import notes_consumer


async def main(dsn: str, service: str, source: str, nats_url: str, crash: bool, batch: int) -> None:
    pool = await create_pool(dsn, service, size=4)
    nc = await connect_nats(nats_url, f"{service}-consumer-proc")
    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, service), nc)

    async def die(_envelope: RawEnvelope) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    loop = ConsumerLoop(
        notes_consumer(source, ack_wait_s=2.0, max_batch=batch),
        service=service,
        context=context,
        after_commit=die if crash else None,
    )
    await loop.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    dsn, service, source, url = sys.argv[1:5]
    options = sys.argv[5:]
    batch = next((int(o.removeprefix("batch=")) for o in options if o.startswith("batch=")), 1)
    asyncio.run(main(dsn, service, source, url, "crash-after-commit" in options, batch))
