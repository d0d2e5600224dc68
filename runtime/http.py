"""The HTTP side every service shares: problem details, health, readiness, metrics, tracing."""

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import metrics
from runtime.refusals import Refused
from runtime.storable_text import (
    MESSAGE,
    NOT_UTF8,
    not_utf8,
    unstorable,
    unstorable_json,
    unstorable_query,
)
from runtime.telemetry import server_span

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, or a sentence saying what is missing."""


class Problem(Exception):
    """An error the caller can act on, answered as an RFC 9457 problem body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers
        self.extra = extra


class ProblemDetails(BaseModel):
    """An RFC 9457 problem body: how every service answers every error."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(default="about:blank", description="Always about:blank: see `code`.")
    title: str = Field(description="The HTTP status's phrase, or a short summary.")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="A sentence for a person: what went wrong, what to do.")
    instance: str = Field(description="The path that was requested.")
    code: Annotated[str | SkipJsonSchema[None], Field(description="A machine code.")] = None


PROBLEM_SCHEMA = "Problem"
PROBLEM_DESCRIPTIONS = {
    400: "The request cannot be answered as it is; the detail says what to give.",
    401: "No key, or a key that is unknown or was revoked.",
    403: "Not allowed: the clinic is suspended, or its plan does not include this.",
    404: "There is no such object (another clinic's objects answer the same).",
    409: "It conflicts with the object's state, or it changed concurrently.",
    410: "It is gone for good.",
    422: "The request is not valid: the detail names the first field, `errors` each one.",
    423: "Not open yet.",
    429: "Too many requests; `Retry-After` says when to try again.",
    503: "The service is starting, or a dependency is briefly unavailable; try again.",
}


REALM = "antechamber"
"""One realm for every service: a clinic API key opens the same clinic on each of them."""
CHALLENGE = f'Bearer realm="{REALM}"'
"""``WWW-Authenticate`` when no credential was sent (RFC 6750 3.1: no error code then)."""
REFUSED_CHALLENGE = f'{CHALLENGE}, error="invalid_token"'
"""``WWW-Authenticate`` when the credential sent was refused: unknown, revoked, malformed."""
_CHALLENGE_HEADER = {
    "WWW-Authenticate": {
        "description": f'`{CHALLENGE}`, with `error="invalid_token"` when the key sent '
        "was refused (RFC 6750).",
        "schema": {"type": "string"},
    }
}


def problems(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the errors a route answers, each an RFC 9457 problem body.

    ``described`` gives a route's own description of some of them.
    """
    described = described or {}
    return {
        status: {
            "description": described.get(status) or PROBLEM_DESCRIPTIONS[status],
            "content": {
                PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}}
            },
            **({"headers": _CHALLENGE_HEADER} if status == 401 else {}),
        }
        for status in (*statuses, *described)
    }


async def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


NO_STORE = Depends(_no_store)
"""``dependencies=[NO_STORE]`` on a route whose answer holds a join link, a signed URL or a
secret: ``Cache-Control: no-store`` keeps it out of browser and proxy caches, and out of the
answers kept for ``Idempotency-Key`` retries (``runtime.idempotency``). Error answers carry
no such value and are not marked."""


CLINIC_KEY = HTTPBearer(
    scheme_name="clinicKey",
    description="A clinic API key, issued by the operator (`POST /v1/clinics/{id}/api-keys`).",
    auto_error=False,
)
OPERATOR_KEY = HTTPBearer(
    scheme_name="operatorKey",
    description="The operator key (ANTECHAMBER_OPERATOR_KEY).",
    auto_error=False,
)
"""The two credentials, declared in the services' OpenAPI documents. Without ``auto_error``:
a missing key is answered by ``bearer_credential``, as a problem body that says how."""


def bearer_credential(credentials: HTTPAuthorizationCredentials | None, what: str = "key") -> str:
    """The credential of ``Authorization: Bearer <credential>``, or a 401 that says how."""
    if credentials is None:
        raise Problem(
            401,
            f"Send your {what} as 'Authorization: Bearer <key>'.",
            code="unauthenticated",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    return credentials.credentials


def problem_response(
    request: Request,
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem body answered for every error; every 401 carries a Bearer challenge."""
    if status == 401 and "WWW-Authenticate" not in (headers or {}):
        headers = {**(headers or {}), "WWW-Authenticate": REFUSED_CHALLENGE}
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _malformed_json(exc: RequestValidationError) -> tuple[str, dict[str, Any]] | None:
    """Where a body that is not JSON went wrong, as a line and column (FastAPI reports the
    character offset in place of a field), or None for any other invalid request."""
    errors = exc.errors()
    if len(errors) != 1 or errors[0]["type"] != "json_invalid":
        return None
    at = errors[0]["loc"][-1]
    document = exc.body if isinstance(exc.body, str) else ""
    if not isinstance(at, int) or at > len(document):
        return None
    line = document.count("\n", 0, at) + 1
    column = at - document.rfind("\n", 0, at)
    reason = errors[0].get("ctx", {}).get("error") or "Malformed JSON"
    message = f"{reason} at line {line}, column {column}"
    detail = f"The body is not valid JSON: {message}."
    return detail, {"field": "body", "message": message, "line": line, "column": column}


def _describe_validation(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    where = f"'{first['field']}': " if first["field"] else ""
    return f"The request is not valid: {where}{first['message']}.", errors


TRACE_ID_KEY = "antechamber.trace_id"
"""Where the request's trace id waits in the ASGI scope for the error handler, which runs
outside the request's span."""


class StorableTextMiddleware:
    """Refuses (422) a request whose path, query or JSON body holds text Postgres cannot store
    (``runtime.storable_text``), so it never reaches a handler that would fail on it, and a
    JSON body that is not UTF-8 (which FastAPI would answer with a bare 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields = (["path"] if unstorable(scope["path"]) else []) + unstorable_query(
            scope["query_string"]
        )
        errors = [{"field": field, "message": MESSAGE} for field in fields]
        if "json" in Headers(scope=scope).get("content-type", ""):
            body = await _read_body(receive)
            if not_utf8(body):
                errors.append({"field": "body", "message": NOT_UTF8})
            else:
                errors += [{"field": f, "message": MESSAGE} for f in unstorable_json(body)]
            receive = _replaying(body, receive)
        if errors:
            first = errors[0]
            detail = f"The request is not valid: '{first['field']}': {first['message']}."
            await problem_response(Request(scope), 422, detail, errors=errors)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app sees an empty body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body read already, then whatever comes next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class TracingMiddleware:
    """One server span (when tracing is on) and one latency observation per request (plain
    ASGI: no per-request task or stream wrapping)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._latency: dict[tuple[str, str, int], Any] = {}
        """Histogram children by (method, route, status), bound once rather than per request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with server_span(f"{scope['method']} {scope['path']}", scope["headers"]) as span:
            if span is not None:
                scope[TRACE_ID_KEY] = format(span.get_span_context().trace_id, "032x")
            try:
                await self.app(scope, receive, observe)
            finally:
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                route = scope.get("route")
                key = (scope["method"], getattr(route, "path", "unmatched"), status)
                child = self._latency.get(key)
                if child is None:
                    child = self._latency[key] = metrics.http_requests.labels(
                        self.service, key[0], key[1], str(status)
                    )
                child.observe(time.perf_counter() - started)


def _documenting_problems(
    app: FastAPI, generate: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that also documents the problem bodies: the schema routes' ``problems()``
    refer to, and the invalid-request answer in place of FastAPI's own (which this app never
    sends: ``_invalid`` answers a problem instead)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas[PROBLEM_SCHEMA] = ProblemDetails.model_json_schema()
        invalid = problems(422)[422]
        for operation in (op for item in document["paths"].values() for op in item.values()):
            answer = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(answer.get("content", "")):
                operation["responses"]["422"] = invalid
        if "/HTTPValidationError" not in json.dumps(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    return openapi


def create_http_app(
    service: str,
    *,
    readiness: list[ReadinessCheck],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    version: str = "0.1.0",
    docs: bool = True,
) -> FastAPI:
    app = FastAPI(
        title=f"Antechamber {service}",
        version=version,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        # Our own middleware below traces and counts requests; FastAPI's would add a
        # second set of spans to every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.detail, exc.title, exc.headers, **exc.extra
        )

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is nothing at {request.url.path}."
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        return problem_response(request, exc.status_code, detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = _malformed_json(exc)
        if malformed is not None:
            detail, error = malformed
            return problem_response(request, 422, detail, code="malformed_json", errors=[error])
        detail, errors = _describe_validation(exc)
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # With tracing off there is no trace: a fresh id still ties the answer to the log line.
        trace_id = request.scope.get(TRACE_ID_KEY) or secrets.token_hex(16)
        log.error("request failed", path=request.url.path, trace_id=trace_id, exc_info=exc)
        return problem_response(
            request,
            500,
            "Something went wrong on our side; the request was not completed. "
            "Quote the trace id if you report it.",
            trace_id=trace_id,
        )

    app.add_middleware(StorableTextMiddleware)
    app.add_middleware(TracingMiddleware, service=service)  # outermost: it sees every answer
    app.openapi = _documenting_problems(app, app.openapi)  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process answers; says nothing about its dependencies."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Ready only when Postgres and NATS answer and the migrations ran."""
        problems = [p for check in readiness if (p := await check()) is not None]
        if problems:
            return problem_response(
                request, 503, "Not ready: " + "; ".join(problems), checks=problems
            )
        return JSONResponse({"status": "ready", "service": service})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
