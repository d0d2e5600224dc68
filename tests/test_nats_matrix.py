"""NATS rights as a matrix: each kind of credential against each family of subjects.

Every cell is tried on a real nats-server (its own, so that nothing allowed lands in the
suite's streams) with plain nats-py clients. The test fails on any operation allowed that
should not be, and on any refused that should be allowed (a matrix that refuses everything
proves nothing); its message is the whole matrix with the counts.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials

from antechamber.catalog import SERVICES
from runtime.embedded import NatsServer
from runtime.nats_auth import Issuer, NatsAuth, creds_inbox
from runtime.streams import stream_name
from tests.support import harness_auth

A, B = f"c_matrix_a{uuid.uuid4().hex[:6]}", f"c_matrix_b{uuid.uuid4().hex[:6]}"
STREAMS = [stream_name(service) for service in SERVICES]
Operation = Literal["sub", "pub", "req"]


@dataclass(frozen=True)
class Cell:
    row: str
    operation: Operation
    subject: str
    body: bytes = b"{}"

    @property
    def probe(self) -> str:
        """What to publish to see whether a subscription was let through."""
        return self.subject.replace(">", "probe").replace("*", "x")


def cells(name: str) -> Iterator[Cell]:
    """Every cell for a credential whose NATS user (and consumer) name is ``name``."""
    for label, clinic in (("A", A), ("B", B)):
        yield Cell(f"sub events of {label}", "sub", f"antechamber.{clinic}.>")
        yield Cell(f"pub events of {label}", "pub", f"antechamber.{clinic}.matrix.Forged")
    yield Cell("sub every clinic's events", "sub", "antechamber.>")
    yield Cell("sub everything", "sub", ">")
    for service in SERVICES:
        yield Cell(f"sub rpc.{service}.>", "sub", f"rpc.{service}.>")
    yield Cell("pub rpc.links.resolve", "pub", "rpc.links.resolve")
    yield Cell("pub rpc.scheduling.authenticate", "pub", "rpc.scheduling.authenticate")
    yield Cell("pub rpc.media.node.*.record", "pub", "rpc.media.node.x.record")
    yield Cell("sub $KV.media-rooms.>", "sub", "$KV.media-rooms.>")
    yield Cell("pub $KV.media-rooms", "pub", "$KV.media-rooms.matrix")
    for stream in STREAMS:
        yield Cell(f"req stream info {stream}", "req", f"$JS.API.STREAM.INFO.{stream}")
    stream = stream_name("scheduling")
    named = {"name": name, "durable_name": name}
    yield Cell(
        "req consumer, unfiltered",
        "req",
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
        json.dumps({"stream_name": stream, "config": named}).encode(),
    )
    yield Cell(
        "req consumer, ephemeral",
        "req",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        json.dumps(
            {"stream_name": stream, "config": {"filter_subject": f"antechamber.{A}.>"}}
        ).encode(),
    )
    for label, clinic in (("A", A), ("B", B)):
        subjects = f"antechamber.{clinic}.>"
        yield Cell(
            f"req consumer filtered to {label}",
            "req",
            f"$JS.API.CONSUMER.CREATE.{stream}.{name}.{subjects}",
            json.dumps(
                {"stream_name": stream, "config": named | {"filter_subject": subjects}}
            ).encode(),
        )
    forged = f"antechamber.{B}.scheduling.SessionCancelled"
    yield Cell(
        "req push consumer of A into B",
        "req",
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}.antechamber.{A}.>",
        json.dumps(
            {
                "stream_name": stream,
                "config": named
                | {"filter_subject": f"antechamber.{A}.>", "deliver_subject": forged},
            }
        ).encode(),
    )
    yield Cell("req consumer info, own name", "req", f"$JS.API.CONSUMER.INFO.{stream}.{name}")
    yield Cell("req consumer delete, own name", "req", f"$JS.API.CONSUMER.DELETE.{stream}.{name}")


def expected(kind: str, row: str) -> bool | None:
    """Whether ``kind`` may do ``row``; None: not judged here (a service's own business)."""
    if kind == "no credential":
        return False
    if kind.startswith("integrator of "):
        # Its clinic's events, and the consumers made for it, which it creates and deletes
        # none of: a consumer it could create could deliver anywhere.
        clinic = kind.removeprefix("integrator of ")
        return row in {f"sub events of {clinic}", "req consumer info, own name"}
    service = kind
    if row == "pub rpc.media.node.*.record":
        return service == "signaling"  # the only caller of the media nodes
    if row == "pub $KV.media-rooms":
        return service == "media"  # placement is the media nodes' own
    if row.startswith(("req consumer filtered to ", "req push consumer", "req consumer info")):
        return service == "scheduling"  # it makes each integrator's consumers
    if row == "req consumer delete, own name":
        return service == "scheduling"  # and deletes them
    if row == f"sub rpc.{service}.>" or row.startswith("req stream info"):
        return None
    if row in ("pub rpc.links.resolve", "pub rpc.scheduling.authenticate"):
        return None  # the RPC a service calls follows from its definition
    return False


async def _try(nc: NATS, admin: NATS, kind: str, cell_list: list[Cell]) -> dict[str, bool]:
    """Which cells ``nc`` was let through."""
    allowed: dict[str, bool] = {cell.row: False for cell in cell_list}
    marker = f"{kind}:{uuid.uuid4().hex}".encode()

    def seen(row: str) -> Any:
        async def callback(msg: Any) -> None:
            if msg.data == marker:
                allowed[row] = True

        return callback

    subs = [c for c in cell_list if c.operation == "sub"]
    pubs = [c for c in cell_list if c.operation == "pub"]
    reqs = [c for c in cell_list if c.operation == "req"]
    for cell in subs:
        await nc.subscribe(cell.subject, cb=seen(cell.row))
    for cell in pubs:
        await admin.subscribe(cell.subject, cb=seen(cell.row))
    await nc.flush()
    await admin.flush()
    for cell in subs:
        await admin.publish(cell.probe, marker)
    for cell in pubs:
        await nc.publish(cell.subject, marker)

    async def request(cell: Cell) -> None:
        try:
            await nc.request(cell.subject, cell.body, timeout=1)
        except nats.errors.TimeoutError:
            return  # a refused request is dropped: nothing answers
        allowed[cell.row] = True  # any answer, an error included, means it got through

    await asyncio.gather(*(request(cell) for cell in reqs))
    await nc.flush()
    await asyncio.sleep(0.3)
    return allowed


async def _connect(url: str, **options: Any) -> NATS:
    async def quiet(_exc: Exception) -> None:
        """Refusals are expected here; the matrix reports what went through."""

    return await nats.connect(
        url, allow_reconnect=False, connect_timeout=2, error_cb=quiet, **options
    )


@dataclass
class Matrix:
    rows: list[str]
    kinds: list[str]
    marks: dict[tuple[str, str], str]

    def show(self) -> str:
        width = max(len(r) for r in self.rows)
        column = max(len(k) for k in [*self.kinds, LEAK])
        head = " " * width + " | " + " | ".join(k.ljust(column) for k in self.kinds)
        lines = [head, "-" * len(head)]
        for row in self.rows:
            marks = (self.marks.get((row, k), "").ljust(column) for k in self.kinds)
            lines.append(row.ljust(width) + " | " + " | ".join(marks))
        return "\n".join(lines)

    def count(self, mark: str) -> int:
        return sum(1 for m in self.marks.values() if m == mark)


ALLOWED, REFUSED, LEAK, MISS, UNJUDGED = "allowed", ".", "WRONGLY ALLOWED", "WRONGLY REFUSED", "-"


@pytest.fixture
def own_server(short_tmp: Path) -> Iterator[NatsServer]:
    server = NatsServer(short_tmp / f"matrix-{uuid.uuid4().hex[:6]}", auth=harness_auth())
    server.start()
    yield server
    server.stop()


async def test_no_credential_can_do_more_than_its_rights(own_server: NatsServer) -> None:
    auth: NatsAuth = harness_auth()
    issuer = Issuer.load(auth.issuer_file)
    url = own_server.url
    admin = await _connect(url, user_credentials=str(auth.admin_creds), inbox_prefix="_INBOX_admin")
    js = admin.jetstream()
    for service in SERVICES:
        await js.add_stream(name=stream_name(service), subjects=[f"antechamber.*.{service}.>"])

    credentials: dict[str, dict[str, Any] | None] = {"no credential": None}
    expires = int(time.time()) + 600
    for label, clinic in (("A", A), ("B", B)):
        name = f"int_{uuid.uuid4().hex}"
        issued = issuer.integrator(name=name, clinic_id=clinic, expires_at=expires)
        assert issued.creds is not None
        credentials[f"integrator of {label}"] = {
            "user_credentials": RawCredentials(issued.creds),
            "inbox_prefix": f"_INBOX_{name}",
            "name": name,
        }
    for service in SERVICES:
        creds = auth.creds(service)
        credentials[service] = {
            "user_credentials": str(creds),
            "inbox_prefix": creds_inbox(creds),
            "name": f"matrix-{service}",
        }

    rows = [cell.row for cell in cells("x")]
    matrix = Matrix(rows, list(credentials), {})
    try:
        for kind, options in credentials.items():
            if options is None:
                with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                    await _connect(url)
                allowed = dict.fromkeys(rows, False)
            else:
                name = options.pop("name")
                nc = await _connect(url, **options)
                try:
                    allowed = await _try(nc, admin, kind, list(cells(name)))
                finally:
                    await nc.close()
            for row in rows:
                want = expected(kind, row)
                matrix.marks[(row, kind)] = (
                    UNJUDGED
                    if want is None
                    else (ALLOWED if want else LEAK)
                    if allowed[row]
                    else (MISS if want else REFUSED)
                )
    finally:
        await admin.close()

    summary = (
        f"{matrix.count(LEAK)} wrongly allowed, {matrix.count(MISS)} wrongly refused, "
        f"{matrix.count(ALLOWED)} allowed, {matrix.count(REFUSED)} refused, "
        f"{matrix.count(UNJUDGED)} not judged\n"
    )
    print(summary + matrix.show())  # noqa: T201 - the goal's figure, with -s
    assert matrix.count(LEAK) == 0, summary + matrix.show()
    assert matrix.count(MISS) == 0, summary + matrix.show()
    # 2 per integrator, signaling's record, media's placement, scheduling's consumer
    # administration (filtered to A, to B, a push one, info, delete): the matrix can see
    # "allowed".
    assert matrix.count(ALLOWED) == 11, summary + matrix.show()
