"""The demo console of ``antechamber up``: for this machine only, and within a budget."""

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from antechamber.embedded import Platform, RunningService
from tests.support import assert_problem
from web.app import build
from web.config import WebSettings

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Client]:
    demo = tmp_path / "demo.json"
    ids = {"practitioner_id": str(uuid4()), "client_id": str(uuid4())}
    demo.write_text(json.dumps({"api_key": "ak_demo", **ids}))
    # Nothing listens there: each call that gets past the console fails at once (502).
    settings = WebSettings(
        demo_file=demo, scheduling_url="http://127.0.0.1:9", links_url="http://127.0.0.1:9"
    )
    app = build(settings)
    clients: list[httpx.AsyncClient] = []

    def client(peer: str = "127.0.0.1", **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        made = httpx.AsyncClient(transport=transport, base_url="http://web.test", headers=headers)
        clients.append(made)
        return made

    yield client
    for made in clients:
        await made.aclose()


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        ("203.0.113.9", {}),
        ("192.168.1.20", {}),
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}),
        ("::1", {"Forwarded": "for=203.0.113.9"}),
    ],
)
async def test_only_this_machine_may_use_the_console(
    console: Client, peer: str, headers: dict[str, str]
) -> None:
    web = console(peer, **headers)
    for method, path in [
        ("GET", "/demo"),
        ("GET", "/demo/api/overview"),
        ("GET", "/demo/api/mails"),
        ("POST", "/demo/api/sessions"),
    ]:
        response = await web.request(method, path, json={})
        assert_problem(response, 403, "demo_console_local_only")
        assert "only on the machine that runs it" in response.json()["detail"]


async def test_scheduling_sessions_is_throttled_per_address(console: Client) -> None:
    web = console("127.0.0.1")
    statuses = [(await web.post("/demo/api/sessions", json={})).status_code for _ in range(5)]
    assert statuses == [502] * 5, "let through to scheduling (which is not there)"
    refused = await web.post("/demo/api/sessions", json={})
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "try again in" in refused.json()["detail"]
    # Another address on this machine has a bucket of its own; reads have their own too.
    assert (await console("127.0.0.2").post("/demo/api/sessions", json={})).status_code == 502
    assert (await web.get("/demo/api/overview")).status_code == 502


async def test_reads_are_throttled_too(console: Client) -> None:
    web = console("::1")
    answers = [(await web.get("/demo/api/mails")).status_code for _ in range(61)]
    assert answers[:60] == [200] * 60
    assert answers[60] == 429


def test_antechamber_up_binds_the_console_and_the_mail_sink_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the environment says otherwise (ANTECHAMBER_HTTP_HOST=0.0.0.0)."""
    started: list[list[str]] = []

    class Started:
        def __init__(self, args: list[str], **_: Any) -> None:
            started.append(args)

    monkeypatch.setattr(subprocess, "Popen", Started)
    monkeypatch.setenv("ANTECHAMBER_HTTP_HOST", "0.0.0.0")  # what must not win
    monkeypatch.delenv("ANTECHAMBER_NOTIFY_SMTP_HOST", raising=False)
    platform = Platform(tmp_path)
    platform.services = [
        RunningService(name, 8101 + n, None)  # type: ignore[arg-type]
        for n, name in enumerate(("scheduling", "links", "signaling"))
    ]
    platform._start_mail_sink()
    platform._start_web(8100)
    mail_sink, web = started
    for args in (mail_sink, web):
        assert args[args.index("--host") + 1] == "127.0.0.1", args
