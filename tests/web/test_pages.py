"""The web client's pages and files: what every response carries, what each path serves."""

import html
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from web.app import build
from web.config import WebSettings

SIGNALING = "wss://video.example.test/v1/signaling"
TOKEN = "A" * 43


@pytest.fixture
async def web() -> AsyncIterator[httpx.AsyncClient]:
    settings = WebSettings(
        signaling_url=SIGNALING,
        ice_servers=[
            {"urls": ["turn:turn.example.test:3478"], "username": "u", "credential": "<c>"}
        ],
    )
    transport = httpx.ASGITransport(app=build(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://web.test") as client:
        yield client


@pytest.mark.parametrize(
    "path",
    [
        f"/j/{TOKEN}",
        f"/h/{TOKEN}?session=0b5e8f0e-2c1d-4f6e-9a57-3f1d2a4b5c6d",
        "/r/riverside/dr-ada",
    ],
)
async def test_every_link_gets_the_call_page_with_its_settings(
    web: httpx.AsyncClient, path: str
) -> None:
    response = await web.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    meta = re.search(r'name="antechamber-config" content="([^"]*)"', response.text)
    assert meta is not None
    config = json.loads(html.unescape(meta.group(1)))
    assert config["signaling_url"] == SIGNALING
    assert config["ice_servers"][0]["credential"] == "<c>"  # escaped in the page, intact in JSON
    assert TOKEN not in response.text, "the page never repeats the token"
    assert '<script type="module" src="/static/call.js">' in response.text


async def test_pages_and_files_carry_the_protective_headers(web: httpx.AsyncClient) -> None:
    for path in (f"/j/{TOKEN}", "/static/call.js", "/static/style.css", "/"):
        response = await web.get(path)
        assert response.status_code == 200, path
        h = response.headers
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-robots-tag"] == "noindex, nofollow"
        assert h["x-content-type-options"] == "nosniff"
        csp = dict(part.split(" ", 1) for part in h["content-security-policy"].split("; "))
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'", "no inline and no third-party scripts"
        assert csp["style-src"] == "'self'"
        assert csp["connect-src"] == "'self' wss://video.example.test"
        assert csp["frame-ancestors"] == "'none'"
        assert "camera=(self)" in h["permissions-policy"]
        assert "display-capture=(self)" in h["permissions-policy"]  # screen sharing


async def test_no_page_or_file_loads_anything_from_elsewhere(web: httpx.AsyncClient) -> None:
    for name in (
        "call.html",
        "demo.html",
        "index.html",
        "call.js",
        "media.js",
        "devices.js",
        "chat.js",
        "share.js",
        "consent.js",
        "signaling.js",
        "demo.js",
        "style.css",
    ):
        text = (await web.get(f"/static/{name}")).text
        assert not re.search(r"(src|href)=\"https?://", text), name
        for elsewhere in ("@import", "url(http", " style=", "onclick="):
            assert elsewhere not in text, f"{name}: {elsewhere}"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/j/short", 422),
        (f"/j/{'x' * 201}", 422),
        ("/r/Riverside/dr-ada", 422),
        ("/nowhere", 404),
        ("/demo", 404),
        ("/static/nothing.js", 404),
    ],
)
async def test_bad_paths_get_a_problem_body(web: httpx.AsyncClient, path: str, status: int) -> None:
    response = await web.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]


async def test_a_signaling_url_that_is_not_a_websocket_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WebSettings(signaling_url="http://127.0.0.1:8103/v1/signaling")
