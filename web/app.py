"""The web client's HTTP app: the pages, their files, and the headers that keep them private.

Every page is the same few static files; what a page does follows from its path (``/j/``,
``/h/``, ``/r/``) and from what signaling answers. Nothing personal is in a URL but the link
itself, and link pages tell browsers not to pass it on (``Referrer-Policy: no-referrer``),
not to index it, and not to cache it.
"""

import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.http import Problem, create_http_app
from web.config import WebSettings
from web.demo import DemoConsole

STATIC = Path(__file__).parent / "static"
TOKEN = r"^[A-Za-z0-9_-]{16,200}$"  # noqa: S105 - the shape of a link token, not one
SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


def content_security_policy(settings: WebSettings) -> str:
    """Only our own files; media from the camera and the call; the socket to signaling."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob: mediastream:",
            f"connect-src 'self' {settings.signaling_origin}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """The same protective headers on every response, pages and files alike."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(settings).encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-robots-tag", b"noindex, nofollow"),
            (b"cross-origin-opener-policy", b"same-origin"),
            # display-capture: the call page shares a screen (share.js); nothing else may.
            (b"permissions-policy", b"camera=(self), microphone=(self), display-capture=(self)"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Pages:
    """The HTML files, read once, with the browser's settings written into their head."""

    def __init__(self, settings: WebSettings) -> None:
        config = html.escape(settings.browser_config(), quote=True)
        self.pages = {
            path.stem: path.read_text().replace("{{config}}", config)
            for path in STATIC.glob("*.html")
        }

    def __call__(self, name: str) -> HTMLResponse:
        return HTMLResponse(self.pages[name], headers={"Cache-Control": "no-store"})


def build(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    pages = Pages(settings)
    demo = DemoConsole(settings) if settings.demo_file is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if demo is not None:
            await demo.aclose()

    app = create_http_app("web", readiness=[], lifespan=lifespan, docs=False)
    app.add_middleware(SecurityHeaders, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC, html=False), name="static")

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/demo") if demo is not None else pages("index")

    @app.get("/j/{token}", include_in_schema=False)
    async def join_page(token: Annotated[str, PathParam(pattern=TOKEN)]) -> HTMLResponse:
        """A session, guest, drop-in or client-room link."""
        return pages("call")

    @app.get("/h/{token}", include_in_schema=False)
    async def host_page(token: Annotated[str, PathParam(pattern=TOKEN)]) -> HTMLResponse:
        """A practitioner's host link (``?session=<id>`` to host one session)."""
        return pages("call")

    @app.get("/r/{clinic}/{room}", include_in_schema=False)
    async def room_page(
        clinic: Annotated[str, PathParam(pattern=SLUG)],
        room: Annotated[str, PathParam(pattern=SLUG)],
    ) -> HTMLResponse:
        """A practitioner's room: anyone may knock."""
        return pages("call")

    if demo is not None:
        demo.mount(app, pages)
    else:

        @app.get("/demo", include_in_schema=False)
        async def no_demo() -> Response:
            raise Problem(
                404,
                "The demo console runs only with `antechamber up` (ANTECHAMBER_WEB_DEMO_FILE).",
            )

    return app
