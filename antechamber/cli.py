"""``antechamber``: the one command for operators and developers."""

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from antechamber import catalog
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    import asyncpg


SERVER_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 10,
    # The client's address is runtime.client_address's to find, behind the proxies named in
    # ANTECHAMBER_FORWARDED_ALLOW_IPS. uvicorn's own rewriting (on unless turned off) believes
    # X-Forwarded-For from 127.0.0.1, so anything on the machine could pick its address.
    "proxy_headers": False,
    # Signaling's frames are small JSON; a larger one is closed with 1009 by the server.
    "ws_max_size": 1 << 20,
    "ws_ping_interval": 20,
    "ws_ping_timeout": 20,
}
"""How ``serve`` runs uvicorn (the tests serve with the same)."""


def _settings(**overrides: object) -> RuntimeSettings:
    return RuntimeSettings().model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )


def _port(given: int | None, default: int) -> int | None:
    """--port, else ANTECHAMBER_HTTP_PORT (None: the settings read it), else the default."""
    if given is not None:
        return given
    return None if "ANTECHAMBER_HTTP_PORT" in os.environ else default


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from runtime.service import build_app

    if "FORWARDED_ALLOW_IPS" in os.environ:
        # uvicorn's variable, which the docs once said to set: now ignored, so say so rather
        # than count every browser behind the proxy as one.
        print(
            "FORWARDED_ALLOW_IPS is no longer read: set ANTECHAMBER_FORWARDED_ALLOW_IPS to the "
            "proxies' addresses instead (docs/operations.md).",
            file=sys.stderr,
        )
        return 2
    if args.service == "web":
        from runtime.logging import configure_logging
        from runtime.telemetry import configure_tracing
        from web.app import build
        from web.config import DEFAULT_PORT

        settings = _settings(http_host=args.host, http_port=_port(args.port, DEFAULT_PORT))
        configure_logging("web", settings.log_level, settings.log_format)
        configure_tracing("web", settings.otel_exporter)
        app = build()
    else:
        definition = catalog.definition(args.service)
        settings = _settings(
            http_host=args.host, http_port=_port(args.port, definition.default_port)
        )
        app = build_app(definition, settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, **SERVER_OPTIONS)
    return 0


@contextlib.asynccontextmanager
async def _service_pool(name: str) -> AsyncIterator["asyncpg.Pool[Any]"]:
    """A small pool in ``name``'s schema, for one command."""
    from runtime.db import create_pool

    pool = await create_pool(RuntimeSettings().database_url.get_secret_value(), name, size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def _migrate(names: Sequence[str]) -> None:
    from runtime.migrations import migrate

    for name in names:
        definition = catalog.definition(name)
        async with _service_pool(name) as pool, pool.acquire() as conn:
            applied = await migrate(conn, name, definition.migrations())
        print(f"{name}: {len(applied)} migration(s) applied")


async def _rebuild(name: str) -> None:
    from runtime.eventstore import EventStore
    from runtime.projections import rebuild

    definition = catalog.definition(name)
    async with _service_pool(name) as pool:
        store = EventStore(pool, name, definition.projections())
        count = await rebuild(store)
    names = ", ".join(p.name for p in store.projections) or "no projections"
    print(f"{name}: rebuilt {names} from {count} events")


async def _republish(name: str, from_position: int) -> None:
    from runtime.relay import republish
    from runtime.service import connect_nats
    from runtime.settings import nats_creds_for

    catalog.definition(name)
    settings = RuntimeSettings()
    # As the service itself: its user may publish its events and read its stream.
    nc = await connect_nats(
        settings.nats_url, f"antechamber-{name}-republish", nats_creds_for(settings, name)
    )
    try:
        async with _service_pool(name) as pool:
            sent = await republish(
                pool,
                nc.jetstream(),
                name,
                from_position,
                stream_replicas=settings.stream_replicas,
            )
    finally:
        await nc.drain()
    print(f"{name}: published {sent} events from position {from_position}")


def _write_or_check(target: Path, text: str, command: str, check: bool) -> int:
    """Write a generated document, or (``check``) fail if the committed one differs."""
    if check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run `antechamber {command}` and commit it", file=sys.stderr)
            return 1
        print(f"{target} is current")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def asyncapi(args: argparse.Namespace) -> int:
    from antechamber.asyncapi import document

    return _write_or_check(Path(args.output), document(), "asyncapi", args.check)


def protocol_schema(args: argparse.Namespace) -> int:
    import json

    from contracts.signaling_protocol import protocol_schema as schema

    text = json.dumps(schema(), indent=2, sort_keys=True) + "\n"
    return _write_or_check(Path(args.output), text, "protocol-schema", args.check)


def nats_auth_init(args: argparse.Namespace) -> int:
    from antechamber.nats_setup import platform_auth

    folder = Path(args.dir)
    auth = platform_auth(folder)
    jwt_dir = Path(args.jwt_dir) if args.jwt_dir else folder / "jwt"
    conf = folder / "nats-auth.conf"
    conf.write_text(auth.server_config(jwt_dir))
    print(f"NATS authentication set in {folder} (keys kept if it existed; users re-signed)")
    print(f"  nats-server       include {conf} (account claims kept in {jwt_dir})")
    for creds in sorted(auth.creds_dir.glob("*.creds")):
        user = creds.stem
        who = "tools (nats CLI: NATS_CREDS)" if user == "admin" else f"the {user} service"
        print(f"  {who:<28} {creds}   ANTECHAMBER_NATS_CREDS")
    print(f"  scheduling, too              {auth.issuer_file}   ANTECHAMBER_NATS_ISSUER_FILE")
    print(f"  keep safe, offline           {folder / 'keys.json'} (operator and account keys)")
    return 0


def up(args: argparse.Namespace) -> int:
    from antechamber.embedded import Platform

    return Platform(Path(args.data_dir)).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antechamber", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("up", help="start NATS, Postgres and every service (development)")
    p.add_argument("--data-dir", default=".antechamber", help="where NATS and Postgres keep data")
    p.set_defaults(func=up)

    p = commands.add_parser(
        "serve", help="run one service against NATS_URL and DATABASE_URL, or the web client"
    )
    p.add_argument("service", choices=(*catalog.SERVICES, "web"))
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=serve)

    p = commands.add_parser("migrate", help="apply the SQL migrations of services")
    p.add_argument("services", nargs="*", metavar="SERVICE", help="default: every service")
    p.add_argument("--all", action="store_true", help="every service")
    p.set_defaults(
        func=lambda a: _run(_migrate(catalog.SERVICES if a.all or not a.services else a.services))
    )

    p = commands.add_parser("projections", help="read models")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("rebuild", help="rebuild a service's projections from its events")
    r.add_argument("service", choices=catalog.SERVICES)
    r.set_defaults(func=lambda a: _run(_rebuild(a.service)))

    p = commands.add_parser("events", help="the event streams")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("republish", help="re-fill a service's JetStream stream from Postgres")
    r.add_argument("service", choices=catalog.SERVICES)
    r.add_argument("--from", dest="from_position", type=int, default=1, metavar="POSITION")
    r.set_defaults(func=lambda a: _run(_republish(a.service, a.from_position)))

    p = commands.add_parser("nats-auth", help="NATS credentials (decentralized JWT auth)")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser(
        "init",
        help="make (or re-sign) the operator, accounts and service users, and the server config",
    )
    r.add_argument("--dir", required=True, help="where the set is kept (a new or existing one)")
    r.add_argument(
        "--jwt-dir",
        default=None,
        help="where nats-server keeps account claims (its own volume; default: DIR/jwt)",
    )
    r.set_defaults(func=nats_auth_init)

    p = commands.add_parser("asyncapi", help="write the AsyncAPI document for integrators")
    p.add_argument("--output", default="docs/asyncapi.yaml")
    p.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    p.set_defaults(func=asyncapi)

    p = commands.add_parser(
        "protocol-schema", help="write the JSON schema of the signaling WebSocket protocol"
    )
    p.add_argument("--output", default="docs/signaling-protocol.json")
    p.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    p.set_defaults(func=protocol_schema)
    return parser


def _run(coroutine: object) -> int:
    asyncio.run(coroutine)  # type: ignore[arg-type]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
