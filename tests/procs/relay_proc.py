"""A relay in its own process, so a test can SIGKILL it.

python -m tests.procs.relay_proc DSN SERVICE NATS_URL
"""

import asyncio
import sys

from runtime.relay import Relay
from runtime.service import connect_nats


async def main(dsn: str, service: str, nats_url: str) -> None:
    nc = await connect_nats(nats_url, f"{service}-relay-proc")
    await Relay(dsn=dsn, service=service, nats=nc).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
