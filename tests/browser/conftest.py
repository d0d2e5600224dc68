"""Headless Chromium against the whole platform, as `antechamber up` starts it.

The browser is Debian's `chromium` (``make browser`` installs it; ``make test`` does that
first), driven by Playwright with fake camera and microphone devices. Screenshots of every
step go to ``test-artifacts/browser/<test>/``.
"""

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pgserver.utils import PostmasterInfo
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bench.browser import ROOT, Missing, Up, chromium, platform_up, speaking_args

ARTIFACTS = ROOT / "test-artifacts" / "browser"


class Platform(Up):
    def api(self, base: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base, headers=self.headers(), timeout=10)

    async def room_events(self, room_id: str, event_type: str) -> list[dict[str, Any]]:
        """The signaling service's recorded events of one type in a room (a session-link
        call's room id is the session's id), read from the platform's own Postgres."""
        info = PostmasterInfo.read_from_pgdata(self.data / "pg")
        assert info is not None, "the platform's Postgres is not running"
        db = await asyncpg.connect(info.get_uri())
        try:
            rows = await db.fetch(
                "SELECT data FROM signaling.events WHERE stream_id = $1 AND type = $2 "
                "ORDER BY version",
                f"room-{room_id}",
                event_type,
            )
        finally:
            await db.close()
        return [json.loads(row["data"]) for row in rows]


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    log = Path(tmp_path_factory.mktemp("up", numbered=True)) / "up.log"
    with platform_up(log) as up:
        yield Platform(**vars(up))


@pytest.fixture
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    try:
        executable = chromium()
    except Missing as exc:
        pytest.fail(str(exc))
    async with async_playwright() as playwright:
        args = speaking_args(tmp_path_factory.getbasetemp())
        launched = await playwright.chromium.launch(executable_path=executable, args=args)
        yield launched
        await launched.close()


@dataclass
class People:
    """One browser context (its own storage, its own camera) per person, and screenshots."""

    browser: Browser
    folder: Path
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: dict[str, Page] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Uncaught errors in any page's scripts: each fails the test."""
    shots: int = 0

    async def open(self, who: str, url: str, *, width: int = 1280, height: int = 800) -> Page:
        context = await self.browser.new_context(
            viewport={"width": width, "height": height},
            permissions=["camera", "microphone"],
        )
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"[{who}] {error}"))
        self.pages[who] = page
        await page.goto(url)
        return page

    async def shoot(self, step: str) -> None:
        """Every open page, as it looks now."""
        self.shots += 1
        for who, page in self.pages.items():
            if not page.is_closed():
                await page.screenshot(path=self.folder / f"{self.shots:02d}-{step}-{who}.png")

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def people(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[People]:
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    crowd = People(browser, folder)
    yield crowd
    await crowd.close()
    assert not crowd.errors, f"errors in the pages' scripts: {crowd.errors}"


async def join(page: Page, name: str) -> None:
    """Type a name on the join page and join."""
    await page.locator("#prejoin").wait_for(state="visible", timeout=15_000)
    await page.fill("#name", name)
    await page.click("#join-button")


async def screen(page: Page, name: str, timeout_s: float = 20) -> None:
    await page.locator(f"#{name}").wait_for(state="visible", timeout=timeout_s * 1000)


PLAYING = """() => [...document.querySelectorAll('#grid .remote video')].map(v => ({
    width: v.videoWidth,
    frames: v.getVideoPlaybackQuality().totalVideoFrames,
    paused: v.paused,
}))"""


async def remote_videos_playing(page: Page, count: int, timeout_s: float = 30) -> list[Any]:
    """Wait until the page shows ``count`` remote videos that play: a picture, and frames
    that keep coming."""
    deadline = time.monotonic() + timeout_s
    last: list[Any] = []
    while time.monotonic() < deadline:
        before = await page.evaluate(PLAYING)
        await asyncio.sleep(1.0)
        after = await page.evaluate(PLAYING)
        last = after
        if (
            len(before) == len(after) == count
            and all(v["width"] > 0 and not v["paused"] for v in after)
            and all(a["frames"] > b["frames"] for a, b in zip(after, before, strict=True))
        ):
            return after
    pytest.fail(f"expected {count} playing remote videos, saw {last}")
