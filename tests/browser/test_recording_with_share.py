"""A recording of a call with a screen share, end to end in headless Chromium (issue 24): the
host shares, everyone consents to the recording, and the MP4 the clinic downloads shows the
share as the main tile over a strip of the three cameras; once the share ends, the grid.

Chromium's fake screen is the very pattern of its fake camera (the green Pac-Man with a
clock, only 1280x720), and with ``--use-fake-device-for-media-stream`` every
``getDisplayMedia`` returns it, ``preferCurrentTab`` with ``--auto-accept-this-tab-capture``
too (checked on Chromium 156: still the fake "monitor"), so a recording could not tell the
share from a camera. The host's page is therefore handed a magenta canvas as the surface it
picks: a real video track that share.js sends on the node's screen mid like any other, in a
colour neither camera comes near.

Made to fail: run against a recorder that ignored the share (the screen one more camera in
a grid of four, or left out of the picture), the test failed: the share was the main tile in
0 pictures (3 once, while the screen was alone in the grid).
"""

import asyncio
import io
import re
import time
from typing import cast

import av
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from playwright.async_api import expect

from tests.browser.conftest import People, Platform
from tests.browser.test_recording_consent import record_with_everyones_consent, three_in_a_call
from tests.browser.test_screen_share import SCREEN, participant_id, shown_share
from tests.media.test_recorder_screen import is_black
from tests.support import eventually

pytestmark = pytest.mark.slow

SCREEN_RGB = (230, 40, 200)
"""The surface the host shares: a magenta neither camera comes near."""
FPS = 15
"""The node records at 15 pictures a second (the Recorder's default)."""
STRIP_TOP = 720 - 144
"""The stage's strip of cameras: the bottom fifth of 1280x720."""
STRIP_CELLS = (352, 544, 736)
"""Three cameras in the strip: 192x144 cells, side by side and centred (the pages' cameras
are 640x360, so 192x108 in them)."""
GRID_CELLS = ((0, 0), (640, 0), (0, 360))
"""Three cameras in the grid: 640x360 cells in two columns, which they fill (the fourth cell
is black)."""

PICKED_SURFACE = """([r, g, b]) => {
    const canvas = document.createElement("canvas");
    canvas.width = 1280;
    canvas.height = 720;
    const context = canvas.getContext("2d");
    let tick = 0;
    // A flat colour and a thin band that moves, so new pictures keep coming.
    const paint = () => {
        context.fillStyle = `rgb(${r}, ${g}, ${b})`;
        context.fillRect(0, 0, 1280, 720);
        context.fillStyle = `rgb(${r - 30}, ${g}, ${b - 30})`;
        context.fillRect((tick++ * 16) % 1280, 0, 16, 720);
    };
    paint();
    setInterval(paint, 50);
    navigator.mediaDevices.getDisplayMedia = async () => canvas.captureStream(20);
}"""


def media_url(platform: Platform) -> str:
    """The media service's address, as `antechamber up` printed it."""
    found = re.search(r"^media\s+(http://127\.0\.0\.1:\d+)", platform.log.read_text(), re.M)
    assert found is not None, "antechamber up did not print the media service's address"
    return found.group(1)


async def downloaded_recording(platform: Platform, recording_id: str) -> bytes:
    """The recording's MP4, once the node has written it, through the clinic's media API."""
    async with platform.api(media_url(platform)) as media:

        async def available() -> bool:
            view = await media.get(f"/v1/recordings/{recording_id}")
            assert view.status_code == 200, view.text
            status = view.json()["status"]
            assert status in ("recording", "available"), view.json()
            return bool(status == "available")

        await eventually(available, timeout=30, what="the recording available")
        link = await media.post(f"/v1/recordings/{recording_id}/download")
        assert link.status_code == 200, link.text
        async with httpx.AsyncClient(timeout=10) as anyone:  # the signed URL is enough
            got = await anyone.get(link.json()["url"])
        assert got.status_code == 200
        assert got.headers["content-type"] == "video/mp4"
        return got.content


def pictures(mp4: bytes) -> list[npt.NDArray[np.uint8]]:
    with av.open(io.BytesIO(mp4), mode="r") as container:
        return [
            cast(npt.NDArray[np.uint8], frame.to_ndarray(format="rgb24"))
            for frame in container.decode(video=0)
        ]


def colour(area: npt.NDArray[np.uint8]) -> tuple[int, ...]:
    """The area's median colour, from every fourth pixel each way (quick enough for every
    picture of the file)."""
    return tuple(int(v) for v in np.median(area[::4, ::4].reshape(-1, 3), axis=0))


def screen_coloured(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Which pixels are the screen's magenta (the canvas's (230, 40, 200) comes out of
    WebRTC and the recording about (225, 0, 204)): far from the green cameras and black."""
    r, g, b = (pixels[..., c].astype(np.int16) for c in range(3))
    return (r >= 150) & (b >= 150) & (g <= 90)


def is_screen(area: npt.NDArray[np.uint8]) -> bool:
    return bool(screen_coloured(np.array([[colour(area)]], dtype=np.uint8))[0, 0])


def is_camera(area: npt.NDArray[np.uint8]) -> bool:
    """Chromium's fake camera: mostly green (a dark green ground, a bright green Pac-Man)."""
    r, g, b = colour(area)
    return g >= 90 and g - r >= 50 and g - b >= 50


def no_screen(area: npt.NDArray[np.uint8]) -> bool:
    return float(screen_coloured(area[::2, ::2]).mean()) < 0.001


def staged(picture: npt.NDArray[np.uint8]) -> bool:
    """The screen fills the main tile (16:9 in 1280x576: 1024x576 from x=128)."""
    return is_screen(picture[40 : STRIP_TOP - 40, 200:1080])


def stage_layout(picture: npt.NDArray[np.uint8]) -> bool:
    """Black where the stage with three cameras has nothing: either side of the main tile,
    and the strip either side of its three cells; nothing of the screen in the strip. (A
    tile is black too while its pictures stop, so this holds in a gap as well.)"""
    return (
        is_black(picture[: STRIP_TOP - 8, :120])
        and is_black(picture[: STRIP_TOP - 8, 1160:])
        and is_black(picture[STRIP_TOP + 8 :, : STRIP_CELLS[0] - 8])
        and is_black(picture[STRIP_TOP + 8 :, STRIP_CELLS[-1] + 200 :])
        and no_screen(picture[STRIP_TOP + 4 :, :])
    )


def cameras_in_the_strip(picture: npt.NDArray[np.uint8]) -> bool:
    return all(
        is_camera(picture[STRIP_TOP + 24 : 700, left + 8 : left + 184]) for left in STRIP_CELLS
    )


def grid_layout(picture: npt.NDArray[np.uint8]) -> bool:
    """The fourth cell of the grid of three empty, nothing of the screen anywhere."""
    return is_black(picture[368:, 648:]) and no_screen(picture)


def cameras_in_the_grid(picture: npt.NDArray[np.uint8]) -> bool:
    return all(is_camera(picture[y + 20 : y + 340, x + 20 : x + 620]) for x, y in GRID_CELLS)


async def test_a_recording_shows_the_share_as_the_main_tile_over_the_cameras(
    platform: Platform, people: People
) -> None:
    session, host, ana, ben = await three_in_a_call(platform, people)
    await host.evaluate(PICKED_SURFACE, list(SCREEN_RGB))
    await host.click("#share-toggle")
    sharer = await participant_id(host)
    for page in (ana, ben):
        await shown_share(page, sharer, SCREEN)

    await record_with_everyones_consent(host, [ana, ben])
    # What the recording is for: a few seconds of the share, then a couple of the grid.
    share_until = time.monotonic() + 3.0
    (started,) = await platform.room_events(session["session_id"], "RecordingStarted")
    await people.shoot("recording-the-share")
    await asyncio.sleep(max(0.0, share_until - time.monotonic()))
    await host.click("#share-toggle")
    for page in (host, ana, ben):
        await shown_share(page, None, None)
    await asyncio.sleep(2.0)
    await host.click("#record")
    for page in (host, ana, ben):
        await expect(page.locator("#recording")).to_be_hidden(timeout=15_000)

    mp4 = await downloaded_recording(platform, started["recording_id"])
    (people.folder / "recording.mp4").write_bytes(mp4)  # to look at when this fails
    shown = pictures(mp4)
    assert all(picture.shape == (720, 1280, 3) for picture in shown)

    # The share, on before the recording began, is the main tile from its first pictures
    # (the cameras' may come a little sooner: a grid until then) until it ended.
    on_stage = [i for i, picture in enumerate(shown) if staged(picture)]
    assert len(on_stage) >= 2 * FPS, f"the share was the main tile in {len(on_stage)} pictures"
    first, last = on_stage[0], on_stage[-1]
    assert first <= 2 * FPS, f"the share first showed at picture {first}"
    # All along, the stage: the screen large, the cameras small below it. On a busy machine
    # a tile may go black for a moment (its pictures late), the layout stays.
    wrong = [i for i in range(first, last + 1) if not stage_layout(shown[i])]
    assert not wrong, f"pictures {wrong} of the share are not the stage"
    full = [i for i in on_stage if cameras_in_the_strip(shown[i])]
    assert len(full) >= FPS, f"the three cameras showed in the strip in {len(full)} pictures"

    # Until the screen's first picture came (the cameras' may come sooner), the grid.
    wrong = [i for i in range(first) if not grid_layout(shown[i])]
    assert not wrong, f"pictures {wrong} before the screen showed are not the grid"

    # Once the share ended: the grid of the three cameras, nothing of the screen. (Its tile
    # may have gone black just before, the stage still up: those pictures are not counted.)
    end = last + 1
    while end < len(shown) and is_black(shown[end][:STRIP_TOP]) and stage_layout(shown[end]):
        end += 1
    after = range(end, len(shown))
    assert len(after) >= 1.5 * FPS, f"{len(after)} pictures after the share"
    wrong = [i for i in after if not grid_layout(shown[i])]
    assert not wrong, f"pictures {wrong} after the share are not the grid"
    full = [i for i in after if cameras_in_the_grid(shown[i])]
    assert len(full) >= FPS, f"the three cameras showed in the grid in {len(full)} pictures"
