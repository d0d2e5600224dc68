"""Opening a guest link to the first remote frame, in headless Chromium, against a baseline.

The figure: a session whose guests enter directly, its host already in the call; a guest
opens the link, types a name, joins, and the first frame of the host's video is shown
(``requestVideoFrameCallback``), measured from the start of the page's navigation. It covers
the link check, the camera starting, the join, the seat, the WebRTC negotiation relayed
through signaling, ICE and DTLS with the media node, and the node's first keyframe.

The baseline, in the same run and the same Chromium: the same two fake cameras in a direct
browser-to-browser call with no server between them (the offer and answer handed over by the
benchmark itself), from the start of the page's navigation to the first remote frame.

Next to the first join, in the same run: a guest in the call reloads the page, which takes
its place back with the resume token it kept (no knock, no click), and the host's video plays
again: from asking for the reload to the first frame of the host's video on the new page
(goal: <= 3 s, the median).

``python bench/web.py`` (5 runs each; ``--quick``: 2). With ``--results PATH``, the figure is
also appended there as a JSON line (``bench/results.py``).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.browser import CHROMIUM_ARGS, Missing, Up, chromium, new_session, platform_up
from bench.results import Figure, add_results_option, write_results

GOAL_MS = 1500.0
RELOAD_GOAL_MS = 3000.0
FIRST_FRAME = """() => new Promise((resolve) => {
    const check = () => window.antechamber && window.antechamber.firstRemoteFrameMs !== null
        ? resolve([window.antechamber.firstRemoteFrameMs, window.antechamber.joinClickedMs])
        : setTimeout(check, 10);
    check();
})"""
# The first remote frame of the page as the time of day (ms), to compare with the benchmark's.
FIRST_FRAME_AT = """() => new Promise((resolve) => {
    const check = () => window.antechamber && window.antechamber.firstRemoteFrameMs !== null
        ? resolve(performance.timeOrigin + window.antechamber.firstRemoteFrameMs)
        : setTimeout(check, 10);
    check();
})"""
PUBLISHER = """async () => {
    const stream = await navigator.mediaDevices.getUserMedia(
        {audio: true, video: {width: 640, height: 360}});
    const pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    window.pc = pc;
}"""
ANSWER = """async (offer) => {
    await window.pc.setRemoteDescription({type: 'offer', sdp: offer});
    await window.pc.setLocalDescription(await window.pc.createAnswer());
    await new Promise((r) => window.pc.iceGatheringState === 'complete' ? r()
        : window.pc.addEventListener('icegatheringstatechange',
            () => window.pc.iceGatheringState === 'complete' && r()));
    return window.pc.localDescription.sdp;
}"""
SUBSCRIBER_OFFER = """async () => {
    const stream = await navigator.mediaDevices.getUserMedia(
        {audio: true, video: {width: 640, height: 360}});
    const pc = new RTCPeerConnection();
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    window.pc = pc;
    window.firstFrame = new Promise((resolve) => {
        pc.ontrack = (e) => {
            if (e.track.kind !== 'video') return;
            const v = document.createElement('video');
            v.muted = true; v.autoplay = true; v.playsInline = true;
            v.srcObject = new MediaStream([e.track]);
            document.body.append(v);
            v.requestVideoFrameCallback(() => resolve(performance.now()));
        };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((r) => pc.iceGatheringState === 'complete' ? r()
        : pc.addEventListener('icegatheringstatechange',
            () => pc.iceGatheringState === 'complete' && r()));
    return pc.localDescription.sdp;
}"""
SUBSCRIBER_FINISH = """async (answer) => {
    await window.pc.setRemoteDescription({type: 'answer', sdp: answer});
    return await window.firstFrame;
}"""


async def open_page(browser: Browser, url: str) -> Page:
    context = await browser.new_context(permissions=["camera", "microphone"])
    page = await context.new_page()
    await page.goto(url)
    return page


async def through_antechamber(
    browser: Browser, up: Up, runs: int
) -> tuple[list[tuple[float, float]], list[float]]:
    """The first joins (from opening the link, and from clicking Join), then the reloads."""
    session = await new_session(up.web, guest_admission="direct")
    host = await open_page(browser, session["host_url"])
    await host.locator("#prejoin").wait_for(state="visible")
    await host.fill("#name", "Host")
    await host.click("#join-button")
    await host.locator("#call").wait_for(state="visible")
    guest_url = next(x["url"] for x in session["links"] if x["kind"] == "guest")
    results = []
    for _ in range(runs):
        guest = await open_page(browser, guest_url)
        await guest.locator("#prejoin").wait_for(state="visible", timeout=15_000)
        await guest.fill("#name", "Guest")
        await guest.click("#join-button")
        first, clicked = await asyncio.wait_for(guest.evaluate(FIRST_FRAME), 30)
        results.append((first, first - clicked))
        await guest.click("#leave")
        await guest.context.close()
        await asyncio.sleep(1.0)  # the node tells the host; the next guest starts afresh
    reloads = await reloading(browser, guest_url, runs)
    await host.context.close()
    return results, reloads


async def reloading(browser: Browser, guest_url: str, runs: int) -> list[float]:
    """A guest in the call reloads its page ``runs`` times: each time, from asking for the
    reload to the first frame of the host's video on the new page."""
    guest = await open_page(browser, guest_url)
    await guest.locator("#prejoin").wait_for(state="visible", timeout=15_000)
    await guest.fill("#name", "Guest")
    await guest.click("#join-button")
    await asyncio.wait_for(guest.evaluate(FIRST_FRAME_AT), 30)
    results = []
    for _ in range(runs):
        await asyncio.sleep(1.0)  # in the call for a moment, as a person would be
        asked = time.time() * 1000
        await guest.reload(wait_until="commit")
        shown = await asyncio.wait_for(guest.evaluate(FIRST_FRAME_AT), 30)
        if not await guest.evaluate("window.antechamber.rejoinedAfterReload"):
            raise RuntimeError("the reloaded page joined again instead of taking its place back")
        results.append(shown - asked)
    await guest.click("#leave")
    await guest.context.close()
    return results


async def direct_call(browser: Browser, up: Up, runs: int) -> list[float]:
    results = []
    for _ in range(runs):
        publisher = await open_page(browser, f"{up.web}/")
        await publisher.evaluate(PUBLISHER)
        subscriber = await open_page(browser, f"{up.web}/")
        offer = await subscriber.evaluate(SUBSCRIBER_OFFER)
        answer = await publisher.evaluate(ANSWER, offer)
        results.append(await asyncio.wait_for(subscriber.evaluate(SUBSCRIBER_FINISH, answer), 30))
        for page in (publisher, subscriber):
            await page.context.close()
    return results


def spread(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs each (the smoke test)")
    add_results_option(parser)
    args = parser.parse_args()
    runs = 2 if args.quick else 5
    try:
        executable = chromium()
    except Missing as exc:
        raise SystemExit(str(exc)) from exc
    with (
        tempfile.TemporaryDirectory(prefix="ac-bench-web-") as folder,
        platform_up(Path(folder) / "up.log") as up,
    ):
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS
            )
            started = time.monotonic()
            ours, reloads = await through_antechamber(browser, up, runs)
            direct = await direct_call(browser, up, runs)
            await browser.close()
    first = [f for f, _ in ours]
    after_click = [a for _, a in ours]
    median, baseline = statistics.median(first), statistics.median(direct)
    print(f"Chromium {executable}, {runs} runs each, {time.monotonic() - started:.0f} s")
    print("guest link -> first remote frame (direct admission, host in the call):")
    print(f"  median {median:.0f} ms from opening the link (runs: {spread(first)} ms)")
    print(
        f"  of which after clicking Join: median {statistics.median(after_click):.0f} ms "
        f"(runs: {spread(after_click)} ms)"
    )
    print("baseline: a direct browser-to-browser call, no server between (same Chromium):")
    print(f"  median {baseline:.0f} ms from opening the page (runs: {spread(direct)} ms)")
    print(f"ratio: {median / baseline:.1f}x the direct call")
    verdict = "met" if median <= GOAL_MS else "NOT met"
    print(f"goal <= {GOAL_MS:.0f} ms: {verdict}")
    reload_median = statistics.median(reloads)
    reload_met = reload_median <= RELOAD_GOAL_MS
    print("page reload -> remote video playing again (a guest in the call, same place, no knock):")
    print(
        f"  median {reload_median:.0f} ms from asking for the reload (runs: {spread(reloads)} ms), "
        f"next to the first join's {median:.0f} ms"
    )
    print(f"goal <= {RELOAD_GOAL_MS:.0f} ms: {'met' if reload_met else 'NOT met'}")
    figure = Figure(
        "web",
        f"guest link -> first remote frame, median of {runs}",
        median,
        "ms",
        f"direct browser-to-browser call, median of {runs}",
        baseline,
        goal=f"<= {GOAL_MS:.0f} ms",
        met=median <= GOAL_MS,
    )
    reload_figure = Figure(
        "web",
        f"page reload -> remote video playing again, median of {runs}",
        reload_median,
        "ms",
        f"guest link -> first remote frame, median of {runs}",
        median,
        goal=f"<= {RELOAD_GOAL_MS:.0f} ms",
        met=reload_met,
    )
    write_results(args.results, [figure, reload_figure])


if __name__ == "__main__":
    asyncio.run(main())
