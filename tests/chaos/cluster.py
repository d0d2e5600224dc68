"""A 3-node NATS cluster with JetStream on loopback, each node a nats-server process that can
be killed (SIGKILL) and started again on the same ports and data.

Every node writes each message to disk before it acknowledges it (``sync_interval: always``),
as docs/deploy.md asks of a production cluster; streams declared with three replicas (R3)
keep a copy on each node, so any one node can die without losing an acknowledged message.
"""

import contextlib
import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from runtime.embedded import free_port, nats_server_binary, stop_process, wait_for_port
from tests.support import harness_auth

CLUSTER_NAME = "antechamber-chaos"


@dataclass
class Node:
    name: str
    folder: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.folder / f"{self.name}.conf"

    def write_config(self, peers: list["Node"]) -> None:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{p.cluster_port}"' for p in peers if p is not self
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            f"""
server_name: {self.name}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.monitor_port}
jetstream {{
  store_dir: "{self.folder / "js"}"
  sync_interval: always
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{self.cluster_port}
  routes: [{routes}]
}}
{harness_auth().server_config(self.folder / "jwt")}
"""
        )

    def start(self) -> None:
        with open(self.folder / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, 15.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10.0)
        self.process = None

    def monitor(self, path: str) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer

    def healthy(self) -> bool:
        """JetStream on this node is up and current with the cluster (its /healthz says ok)."""
        with contextlib.suppress(OSError, ValueError):
            return self.monitor("/healthz").get("status") == "ok"
        return False


class NatsCluster:
    def __init__(self, folder: Path, size: int = 3) -> None:
        self.nodes = [Node(f"n{i + 1}", folder / f"n{i + 1}") for i in range(size)]
        for node in self.nodes:
            node.write_config(self.nodes)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as ``NATS_URL`` takes a cluster."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 60.0) -> "NatsCluster":
        for node in self.nodes:
            node.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Wait until every running node reports JetStream current; seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.process is not None]
            if all(node.healthy() for node in running) and self.meta_leader():
                return time.monotonic() - started
            time.sleep(0.1)
        states = {n.name: n.healthy() for n in self.nodes}
        raise TimeoutError(f"the NATS cluster is not healthy after {timeout}s: {states}")

    def meta_leader(self) -> str | None:
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                meta = node.monitor("/jsz").get("meta_cluster")
                if isinstance(meta, dict) and meta.get("leader"):
                    return str(meta["leader"])
        return None

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
