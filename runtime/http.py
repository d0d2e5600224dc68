"""The HTTP side every service shares: problem details, health, readiness, metrics, tracing."""

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import metrics
from runtime.refusals import Refused
from runtime.telemetry import context_from, tracer

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


def bearer_credential(request: Request, what: str = "key") -> str:
    """The credential of ``Authorization: Bearer <credential>``, or a 401 that says how."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Problem(
            401,
            f"Send your {what} as 'Authorization: Bearer <key>'.",
            code="unauthenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credential.strip()


def problem_response(
    request: Request,
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


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


class TracingMiddleware:
    """One server span and one latency observation per request (plain ASGI: no per-request
    task or stream wrapping)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}",
            context=context_from(headers),
            kind=SpanKind.SERVER,
        ) as span:
            scope[TRACE_ID_KEY] = format(span.get_span_context().trace_id, "032x")
            try:
                await self.app(scope, receive, observe)
            finally:
                span.set_attribute("http.response.status_code", status)
                route = scope.get("route")
                metrics.http_requests.labels(
                    self.service, scope["method"], getattr(route, "path", "unmatched"), str(status)
                ).observe(time.perf_counter() - started)


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
        detail, errors = _describe_validation(exc)
        return problem_response(request, 422, detail, errors=errors)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        trace_id = request.scope.get(TRACE_ID_KEY, "0" * 32)
        log.error("request failed", path=request.url.path, trace_id=trace_id, exc_info=exc)
        return problem_response(
            request,
            500,
            "Something went wrong on our side; the request was not completed. "
            "Quote the trace id if you report it.",
            trace_id=trace_id,
        )

    app.add_middleware(TracingMiddleware, service=service)

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
