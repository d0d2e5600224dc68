"""Opening a guest link to the first remote frame, in headless Chromium, against a baseline.

The figure: a session whose guests enter directly, its host already in the call; a guest
opens the link, types a name, joins, and the first frame of the host's video is shown
(``requestVideoFrameCallback``), measured from the start of the page's navigation. It covers
the link check, the camera starting, the join, the seat, the WebRTC negotiation relayed
through signaling, ICE and DTLS with the media node, and the node's first keyframe.

The baseline, in the same run and the same Chromium: the same two fake cameras in a direct
browser-to-browser call with no server between them (the offer and answer handed over by the
benchmark itself), from the start of the page's navigation to the first remote frame.

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
FIRST_FRAME = """() => new Promise((resolve) => {
    const check = () => window.antechamber && window.antechamber.firstRemoteFrameMs !== null
        ? resolve([window.antechamber.firstRemoteFrameMs, window.antechamber.joinClickedMs])
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


async def through_antechamber(browser: Browser, up: Up, runs: int) -> list[tuple[float, float]]:
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
    await host.context.close()
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
            ours = await through_antechamber(browser, up, runs)
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
    write_results(args.results, [figure])


if __name__ == "__main__":
    asyncio.run(main())
