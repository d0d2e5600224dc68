"""The platform scaled out on loopback: a 3-node NATS cluster, one Postgres, two replicas of
scheduling, links, signaling and notify, and two media nodes, each its own process
(``antechamber serve <service>``), all of which can be killed with SIGKILL and restarted.

Streams are R3 (``ANTECHAMBER_STREAM_REPLICAS=3``); every process gets every NATS node's URL.
"""

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.support import Process, service_ready, start_service
from runtime.embedded import EmbeddedPostgres, free_port
from runtime.sealing import new_key
from tests.chaos.cluster import NatsCluster

OPERATOR_KEY = "op-" + secrets.token_urlsafe(24)
PUBLIC_URL = "https://video.chaos.test"
SERVICES = ("scheduling", "links", "signaling", "notify")
OUT_OF_REACH = str(10**9)


@dataclass
class Replica:
    name: str
    """``links-a``, ``media-mb``: the process's name in reports."""
    service: str
    url: str
    process: Process

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/signaling"


class ChaosPlatform:
    def __init__(self, folder: Path, smtp_port: int) -> None:
        self.folder = folder
        self.smtp_port = smtp_port
        self.nats = NatsCluster(folder / "nats")
        self.postgres = EmbeddedPostgres(folder / "pg")
        self.replicas: dict[str, Replica] = {}
        self.participant_key = new_key()
        self._shared = {
            "ANTECHAMBER_LINK_KEY": new_key(),  # links seals, scheduling unseals: one key
            "ANTECHAMBER_OPERATOR_KEY": OPERATOR_KEY,
            "ANTECHAMBER_PARTICIPANT_KEY": self.participant_key,
            "ANTECHAMBER_PUBLIC_URL": PUBLIC_URL,
            "ANTECHAMBER_STREAM_REPLICAS": "3",
        }

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas.values() if r.service == service]

    async def start(self) -> None:
        self.nats.start()
        self.postgres.start()
        # Media first, one node at a time: "mb" takes media's relay lead, and "ma" (first by
        # id when both are empty) gets the first room placed. Then the rest, two of each.
        await self._start("media", "mb", self._media_env("mb"))
        await self._start("media", "ma", self._media_env("ma"))
        env = {
            "signaling": {
                "ANTECHAMBER_SIGNALING_KNOCKS_PER_ADDRESS_PER_MINUTE": OUT_OF_REACH,
                "ANTECHAMBER_SIGNALING_KNOCKS_PER_ADDRESS_BURST": OUT_OF_REACH,
                "ANTECHAMBER_SIGNALING_KNOCKS_PER_LINK_PER_MINUTE": OUT_OF_REACH,
                "ANTECHAMBER_SIGNALING_KNOCKS_PER_LINK_BURST": OUT_OF_REACH,
                "ANTECHAMBER_SIGNALING_REPLICA_TIMEOUT_S": "4",
                # The peers stand in for browsers but signal the node directly with the token
                # of their admission (signaling mints a fresh one for each browser signal):
                # it must outlive the run.
                "ANTECHAMBER_SIGNALING_TOKEN_TTL_S": "3600",
            },
            "notify": {
                "ANTECHAMBER_NOTIFY_SMTP_HOST": "127.0.0.1",
                "ANTECHAMBER_NOTIFY_SMTP_PORT": str(self.smtp_port),
                "ANTECHAMBER_NOTIFY_SMTP_SECURITY": "none",
                # A process killed mid-send leaves its claim; the other takes it over after this.
                "ANTECHAMBER_NOTIFY_CLAIM_S": "5",
                "ANTECHAMBER_NOTIFY_POLL_S": "0.2",
            },
        }
        starting = []
        for service in SERVICES:
            for suffix in ("a", "b"):
                extra = env.get(service, {})
                if service == "signaling":
                    extra = extra | {"ANTECHAMBER_SIGNALING_REPLICA_ID": f"s{suffix}"}
                starting.append(self._start(service, suffix, extra))
        await asyncio.gather(*starting)

    def _media_env(self, node_id: str) -> dict[str, str]:
        return {
            "ANTECHAMBER_MEDIA_NODE_ID": node_id,
            "ANTECHAMBER_MEDIA_MAX_ROOMS": "40",
            "ANTECHAMBER_MEDIA_RECORDINGS_DIR": str(self.folder / f"recordings-{node_id}"),
        }

    async def _start(self, service: str, suffix: str, env: dict[str, str]) -> None:
        port = free_port()
        name = f"{service}-{suffix}"
        process = start_service(
            service,
            self.folder,
            self.dsn,
            self.nats.url,
            port,
            label=name,
            **(self._shared | env),
        )
        replica = Replica(name, service, f"http://127.0.0.1:{port}", process)
        self.replicas[name] = replica
        await service_ready(process, replica.url, within=90)

    async def kill(self, name: str) -> float:
        """SIGKILL one process; the monotonic time it died."""
        self.replicas[name].process.kill()
        return time.monotonic()

    async def restart(self, name: str) -> float:
        """Start a killed process again; seconds until it is ready."""
        replica = self.replicas[name]
        started = time.monotonic()
        replica.process.restart()
        await service_ready(replica.process, replica.url, within=90)
        return time.monotonic() - started

    async def restart_postgres(self, down_s: float) -> float:
        """Stop Postgres (a fast shutdown: sessions are ended), keep it down ``down_s``, start
        it again on the same data (same socket, same DSN); the monotonic time it was back."""
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.postgres.start)
        return time.monotonic()

    async def all_ready(self, within: float = 90.0) -> dict[str, float]:
        """Poll every process's ``/readyz`` until each answers 200; the monotonic time each
        did, by name."""

        async def ready(replica: Replica) -> float:
            deadline = time.monotonic() + within
            async with httpx.AsyncClient(timeout=2) as client:
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{replica.url}/readyz")).status_code == 200:
                            return time.monotonic()
                    await asyncio.sleep(0.1)
            raise TimeoutError(f"{replica.name} is not ready after {within}s")

        names = list(self.replicas)
        times = await asyncio.gather(*(ready(self.replicas[n]) for n in names))
        return dict(zip(names, times, strict=True))

    async def relay_leader(self, service: str, within: float = 30.0) -> Replica:
        """The replica whose relay leads (``antechamber_relay_leader`` 1 in its /metrics)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                leaders = []
                for replica in self.of(service):
                    with contextlib.suppress(httpx.HTTPError):
                        text = (await client.get(f"{replica.url}/metrics")).text
                        line = f'antechamber_relay_leader{{service="{service}"}} 1.0'
                        if line in text:
                            leaders.append(replica)
                if len(leaders) == 1:
                    return leaders[0]
                await asyncio.sleep(0.1)
        raise TimeoutError(f"no single relay leader for {service} within {within}s")

    def stop(self) -> None:
        for replica in self.replicas.values():
            with contextlib.suppress(Exception):
                replica.process.stop()
        with contextlib.suppress(Exception):
            self.nats.stop()
        with contextlib.suppress(Exception):
            self.postgres.stop()

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {r.name} log:\n{r.process.log_tail()[-1500:]}" for r in self.replicas.values()
        )
