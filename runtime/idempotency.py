"""``Idempotency-Key`` on POST: a retried request gets the first request's response.

The first request with a key claims it (a row with no status yet), runs, and stores its
response. A retry with the same key and the same request replays that response (header
``Idempotent-Replayed: true``); with a different request it is refused (422); while the first
is still running it is told to retry shortly (409). A server error stores nothing, so the
retry runs again. A claim whose request died (the process was killed) is taken over after
``ABANDONED_AFTER``. Keys are kept for ``KEEP_FOR``. An answer sent with
``Cache-Control: no-store`` (a secret shown once) is not kept: its retry is told the request
was carried out, and where the result is, without the secret. A service may set a
``ReplayGuard`` so a retry whose credential stopped working is refused, not answered.
"""

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.client_address import client_address_of
from runtime.http import problem_response

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
ABANDONED_AFTER = timedelta(seconds=60)
KEEP_FOR = timedelta(hours=24)
CLEANUP_EVERY_S = 600.0
_REPLAYED_HEADERS = ("content-type", "location")

PoolSource = Callable[[], "asyncpg.Pool[Any] | None"]
ReplayGuard = Callable[[Scope], Awaitable[bool]]
"""Set as ``app.state.idempotency_guard``: whether the caller's credential still works, so a
revoked key cannot fetch stored answers."""


def _problem(scope: Scope, status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return problem_response(Request(scope), status, detail, title, **extra)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, pool: PoolSource) -> None:
        self.app = app
        self.pool = pool
        self._last_cleanup = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            response = _problem(
                scope,
                400,
                "Bad Request",
                f"The Idempotency-Key header must have 1 to {MAX_KEY_LENGTH} characters.",
                code="invalid_idempotency_key",
            )
            await response(scope, receive, send)
            return
        pool = self.pool()
        if pool is None:
            response = _problem(
                scope,
                503,
                "Service Unavailable",
                "The service is still starting; try again in a moment.",
            )
            await response(scope, receive, send)
            return
        await self._handle(pool, key, headers, scope, receive, send)

    async def _handle(
        self,
        pool: "asyncpg.Pool[Any]",
        key: str,
        headers: Headers,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        body = await _read_body(receive)
        address = client_address_of(HTTPConnection(scope)) or ""
        who = headers.get("authorization") or f"address:{address}"
        caller = hashlib.sha256(who.encode()).digest()
        fingerprint = hashlib.sha256(
            b"\0".join(
                [scope["method"].encode(), scope["path"].encode(), scope["query_string"], body]
            )
        ).digest()
        await self._cleanup(pool)
        claimed = await pool.fetchval(
            "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3) "
            "ON CONFLICT (scope, key) DO UPDATE "
            "SET started_at = now(), fingerprint = EXCLUDED.fingerprint "
            "WHERE idempotency_keys.status IS NULL AND idempotency_keys.started_at < $4 "
            "RETURNING true",
            caller,
            key,
            fingerprint,
            _ago(ABANDONED_AFTER),
        )
        if not claimed:
            await self._answer_retry(pool, caller, key, fingerprint, body, scope, send)
            return

        status = 500
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def replay() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            if status >= 500:
                await pool.execute(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2", caller, key
                )
            else:
                named = {
                    name.decode("latin-1").lower(): value.decode("latin-1")
                    for name, value in response_headers
                }
                kept = {k: v for k, v in named.items() if k in _REPLAYED_HEADERS}
                # An answer marked no-store holds a secret shown once (a new API key, a new
                # link): keep only that it happened, never the secret.
                withheld = "no-store" in named.get("cache-control", "")
                await pool.execute(
                    "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 "
                    "WHERE scope = $1 AND key = $2",
                    caller,
                    key,
                    status,
                    kept,
                    None if withheld else b"".join(chunks),
                )

    async def _answer_retry(
        self,
        pool: "asyncpg.Pool[Any]",
        caller: bytes,
        key: str,
        fingerprint: bytes,
        body: bytes,
        scope: Scope,
        send: Send,
    ) -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        row = await pool.fetchrow(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys "
            "WHERE scope = $1 AND key = $2",
            caller,
            key,
        )
        if row is None:  # expired between the two statements: vanishingly rare
            response = _problem(
                scope, 409, "Conflict", "Retry the request.", code="idempotency_key_in_use"
            )
        elif row["fingerprint"] != fingerprint:
            response = _problem(
                scope,
                422,
                "Unprocessable Content",
                "This Idempotency-Key was already used for a different request; "
                "use a new key for a new request.",
                code="idempotency_key_reused",
            )
        elif row["status"] is None:
            response = _problem(
                scope,
                409,
                "Conflict",
                "A request with this Idempotency-Key is still being processed; retry in a moment.",
                code="idempotency_key_in_use",
            )
            response.headers["Retry-After"] = "1"
        else:
            guard: ReplayGuard | None = getattr(scope["app"].state, "idempotency_guard", None)
            if guard is not None and not await guard(scope):
                # The credential no longer works (revoked, suspended): let the app refuse it.
                await self.app(scope, receive, send)
            elif row["body"] is None:
                response = _problem(
                    scope,
                    409,
                    "Conflict",
                    "This request was already carried out; its answer held a secret that is "
                    "shown only once, so it is not repeated. Find the result at its Location, "
                    "or make a new request with a new key.",
                    code="idempotent_secret_withheld",
                )
                for name, value in (row["headers"] or {}).items():
                    if name == "location":
                        response.headers["Location"] = value
                await response(scope, receive, send)
            else:
                await _replay(row, send)
            return
        await response(scope, receive, send)

    async def _cleanup(self, pool: "asyncpg.Pool[Any]") -> None:
        now = time.monotonic()
        if now - self._last_cleanup < CLEANUP_EVERY_S:
            return
        self._last_cleanup = now
        await pool.execute("DELETE FROM idempotency_keys WHERE started_at < $1", _ago(KEEP_FOR))


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _replay(row: asyncpg.Record, send: Send) -> None:
    stored: dict[str, str] = row["headers"] or {}
    if isinstance(stored, str):
        stored = json.loads(stored)
    body: bytes = row["body"] or b""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.items()]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": row["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _ago(delta: timedelta) -> datetime:
    return datetime.now(UTC) - delta
