"""The demo console of ``antechamber up``: the demo clinic's sessions, their links, its mails.

It reads the demo clinic's API key from ``demo.json`` and asks scheduling and links through
their public APIs, as any integrator would, and the local mail sink for what was sent. Only
for trying the platform on one machine: it shows links to whoever opens the page, so it
answers requests from this machine alone (a loopback peer, not forwarded by a proxy), each
address within a token bucket, and schedules sessions within a smaller one.
"""

import asyncio
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from runtime.http import Problem
from runtime.ratelimit import RateLimiter
from web.config import WebSettings

SESSIONS_SHOWN = 20
MAILS_SHOWN = 50
UPSTREAM_TIMEOUT_S = 5.0
READS_PER_MINUTE, READS_BURST = 240.0, 60
"""The page refreshes two lists every 5 s (24 a minute): room for several tabs."""
SESSIONS_PER_MINUTE, SESSIONS_BURST = 10.0, 5
"""Each session is mailed, planned and linked: a person clicks a few, a script may not."""
FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")
SESSION_FIELDS = (
    "session_id",
    "starts_at",
    "ends_at",
    "time_zone",
    "status",
    "video_mode",
    "guest_admission",
)


class NewSession(BaseModel):
    guest_admission: Literal["waiting_room", "direct"] = "waiting_room"
    minutes: int = Field(default=50, ge=5, le=240)


class DemoConsole:
    def __init__(self, settings: WebSettings) -> None:
        assert settings.demo_file is not None
        self.settings = settings
        self.http = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT_S)
        self.reads = RateLimiter(per_minute=READS_PER_MINUTE, burst=READS_BURST)
        self.sessions = RateLimiter(per_minute=SESSIONS_PER_MINUTE, burst=SESSIONS_BURST)

    def admit(self, request: Request, limiter: RateLimiter) -> None:
        """Requests from this machine only, within ``limiter``'s bucket for their address."""
        peer = request.client.host if request.client else None
        if not _loopback(peer) or any(name in request.headers for name in FORWARDED):
            raise Problem(
                403,
                "The demo console answers only on the machine that runs it (127.0.0.1), not "
                "through a proxy: it holds the demo clinic's API key.",
                code="demo_console_local_only",
            )
        wait = limiter.retry_after(peer or "")
        if wait is not None:
            raise Problem(
                429,
                f"Too many requests to the demo console; try again in {max(1, round(wait))} "
                "seconds.",
                code="rate_limited",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    async def aclose(self) -> None:
        await self.http.aclose()

    def _demo(self) -> dict[str, Any]:
        assert self.settings.demo_file is not None
        try:
            demo: dict[str, Any] = json.loads(self.settings.demo_file.read_text())
        except (OSError, ValueError) as exc:
            raise Problem(503, "The demo clinic is not set up yet; try again shortly.") from exc
        return demo

    async def _call(
        self, demo: dict[str, Any], service: str, method: str, path: str, **kwargs: Any
    ) -> Any:
        base = self.settings.scheduling_url if service == "scheduling" else self.settings.links_url
        try:
            response = await self.http.request(
                method,
                f"{base}{path}",
                headers={"Authorization": f"Bearer {demo['api_key']}"},
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise Problem(
                502, f"The {service} service did not answer ({type(exc).__name__})."
            ) from exc
        if response.status_code >= 400:
            detail = response.json().get("detail", "") if response.content else ""
            raise Problem(502, f"The {service} service refused: {detail}")
        return response.json()

    async def overview(self) -> dict[str, Any]:
        demo = self._demo()
        since = (datetime.now(UTC) - timedelta(hours=12)).isoformat()
        clinic, page, practitioner_links = await asyncio.gather(
            self._call(demo, "scheduling", "GET", "/v1/clinic"),
            self._call(
                demo,
                "scheduling",
                "GET",
                "/v1/sessions",
                params={"practitioner_id": demo["practitioner_id"], "from": since, "limit": 100},
            ),
            self._call(
                demo,
                "links",
                "GET",
                "/v1/links",
                params={"practitioner_id": demo["practitioner_id"]},
            ),
        )
        host = next((x["url"] for x in practitioner_links["items"] if x["kind"] == "host"), None)
        room = next(
            (x["url"] for x in practitioner_links["items"] if x["kind"] == "practitioner_room"),
            None,
        )
        shown = sorted(page["items"], key=lambda s: s["starts_at"], reverse=True)[:SESSIONS_SHOWN]
        # Guest and drop-in links name no practitioner: one question per session, all at once.
        links_of = await asyncio.gather(
            *(
                self._call(
                    demo, "links", "GET", "/v1/links", params={"session_id": s["session_id"]}
                )
                for s in shown
            )
        )
        sessions = [
            {key: session[key] for key in SESSION_FIELDS}
            | {
                "host_url": f"{host}?session={session['session_id']}" if host else None,
                "links": [
                    {k: x[k] for k in ("kind", "role", "url", "state")}
                    for x in links["items"]
                    if x["kind"] != "host"
                ],
            }
            for session, links in zip(shown, links_of, strict=True)
        ]
        return {
            "clinic": {"name": clinic["name"], "slug": clinic["slug"]},
            "room_url": room,
            "host_url": host,
            "sessions": sessions,
            "mail_url": self.settings.mail_url,
        }

    async def mails(self) -> list[dict[str, Any]]:
        if self.settings.mail_url is None:
            return []
        try:
            response = await self.http.get(
                f"{self.settings.mail_url}/api/mails", params={"limit": MAILS_SHOWN}
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Problem(502, f"The mail sink did not answer ({type(exc).__name__}).") from exc
        mails: list[dict[str, Any]] = response.json()
        return [m | {"view_url": f"{self.settings.mail_url}/mail/{m['name']}"} for m in mails]

    async def new_session(self, wanted: NewSession) -> dict[str, Any]:
        demo = self._demo()
        start = datetime.now(UTC).replace(second=0, microsecond=0)
        session: dict[str, Any] = await self._call(
            demo,
            "scheduling",
            "POST",
            "/v1/sessions",
            json={
                "practitioner_id": demo["practitioner_id"],
                "client_ids": [demo["client_id"]],
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=wanted.minutes)).isoformat(),
                "link_sharing": True,
                "guest_admission": wanted.guest_admission,
            },
        )
        return session

    def mount(self, app: FastAPI, pages: Any) -> None:
        def read(request: Request) -> None:
            self.admit(request, self.reads)

        def schedule(request: Request) -> None:
            self.admit(request, self.sessions)

        @app.get("/demo", include_in_schema=False, dependencies=[Depends(read)])
        async def console() -> HTMLResponse:
            page: HTMLResponse = pages("demo")
            return page

        @app.get(
            "/demo/api/overview",
            summary="The demo clinic, its sessions and their links",
            dependencies=[Depends(read)],
        )
        async def overview() -> dict[str, Any]:
            return await self.overview()

        @app.get(
            "/demo/api/mails",
            summary="What the local mail sink received, newest first",
            dependencies=[Depends(read)],
        )
        async def mails() -> list[dict[str, Any]]:
            return await self.mails()

        @app.post(
            "/demo/api/sessions",
            status_code=201,
            summary="A demo session starting now",
            dependencies=[Depends(schedule)],
        )
        async def new_session(wanted: Annotated[NewSession, Body()]) -> dict[str, Any]:
            return await self.new_session(wanted)


def _loopback(peer: str | None) -> bool:
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # a Unix socket's path, or nothing an address can be read from
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
