"""A screen share in a recording: while it shows it is the main tile, with the cameras in a
strip below; before and after, the usual grid. Fed real VP8 as RTP in real time, read back
with PyAV and looked at in colour."""

import asyncio
import time
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
import pytest

from services.media.recorder import Recorder, screen_source
from tests.media.test_recorder import (
    FPS,
    VP8,
    Leaves,
    Packet,
    Sent,
    camera,
    packetized,
    play,
)

SCREEN_RGB = (230, 40, 200)
"""A magenta neither camera (red, green) comes near."""


def screen(source: str, joins: float, leaves: float) -> list[Sent]:
    """A 640x360 VP8 screen of one flat colour with a little grain (a worksheet, say)."""
    encoder = cast(av.VideoCodecContext, av.CodecContext.create("libvpx", "w"))
    encoder.width, encoder.height, encoder.pix_fmt = 640, 360, "yuv420p"
    encoder.time_base, encoder.framerate, encoder.gop_size = Fraction(1, FPS), Fraction(FPS), FPS
    encoder.bit_rate = 1_000_000
    grain = np.random.default_rng(7).integers(-6, 7, (360, 640, 1))
    packets: list[bytes] = []
    for i in range(round((leaves - joins) * FPS)):
        pixels = (np.array(SCREEN_RGB) + np.roll(grain, i, axis=1)).clip(0, 255)
        picture = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")
        picture = picture.reformat(format="yuv420p")
        picture.pts = i
        packets += [bytes(p) for p in encoder.encode(picture)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return [
        Sent(joins + i / FPS, source, VP8, data, i * 90_000 // FPS)
        for i, data in enumerate(packets)
    ]


def pictures(path: Path) -> list[tuple[float, npt.NDArray[np.uint8]]]:
    """Every picture of the file in RGB, with its time."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append((float(frame.time or 0), frame.to_ndarray(format="rgb24")))
    return out


def at(shown: list[tuple[float, npt.NDArray[np.uint8]]], second: float) -> npt.NDArray[np.uint8]:
    return next(rgb for time_s, rgb in reversed(shown) if time_s <= second)


def colour(area: npt.NDArray[np.uint8]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.median(area.reshape(-1, 3), axis=0))


def near(found: tuple[int, ...], wanted: tuple[int, ...], within: int = 30) -> bool:
    return all(abs(a - b) <= within for a, b in zip(found, wanted, strict=True))


def is_black(area: npt.NDArray[np.uint8]) -> bool:
    return bool(area.max() <= 30)


async def test_a_screen_share_is_the_main_tile_with_the_cameras_in_a_strip(
    tmp_path: Path,
) -> None:
    # Alice and Bob are on camera throughout; Alice shares her screen from 1 s to 3 s.
    alice_screen = screen_source("alice")
    schedule: list[Packet | Leaves] = [
        *packetized(camera("alice", 0.0, 4.0, (200, 80, 80))),
        *packetized(camera("bob", 0.0, 4.0, (80, 200, 80))),
        *packetized(screen(alice_screen, 1.0, 3.0)),
        Leaves(3.0, alice_screen),
    ]
    path = tmp_path / "shared.mp4"
    recorder = Recorder(path)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, schedule)
    await asyncio.sleep(max(0.0, started + 4.0 - time.monotonic()))
    outcome = await recorder.stop()
    assert outcome.decode_errors == 0

    shown = pictures(path)
    assert all(rgb.shape == (720, 1280, 3) for _, rgb in shown)
    strip_top = 720 - 144

    # Before the share: two cameras side by side, and nothing of the screen's colour.
    before = at(shown, 0.8)
    assert near(colour(before[200:520, 80:560]), (200, 80, 80), 50)
    assert near(colour(before[200:520, 720:1200]), (80, 200, 80), 50)
    assert not near(colour(before[:, 320:960]), SCREEN_RGB)

    # During the share: the screen fills the main tile (16:9 in 1280x576: 1024x576 centred),
    # the cameras sit in the strip below it, small.
    for second in (1.6, 2.5):
        during = at(shown, second)
        assert near(colour(during[40 : strip_top - 40, 200:1080]), SCREEN_RGB), second
        strip = during[strip_top + 8 :, :]
        assert not is_black(strip)
        assert not near(colour(strip[:, 448:832]), SCREEN_RGB)
        # The cameras (192x144 each, centred) show their own colours, left to right.
        assert near(colour(during[strip_top + 20 : 700, 460:620]), (200, 80, 80), 50)
        assert near(colour(during[strip_top + 20 : 700, 660:820]), (80, 200, 80), 50)

    # The share over: back to the grid, the cameras large again.
    after = at(shown, 3.6)
    assert near(colour(after[200:520, 80:560]), (200, 80, 80), 50)
    assert near(colour(after[200:520, 720:1200]), (80, 200, 80), 50)
    assert not near(colour(after[:, 320:960]), SCREEN_RGB)


@pytest.mark.parametrize("cameras", [0, 3, 15])
def test_the_stage_keeps_every_cell_inside_the_picture(cameras: int) -> None:
    from services.media.recorder import _Grid

    cells = _Grid(1280, 720).stage(cameras + 1)
    assert cells[0] == (0, 0, 1280, 576)
    for x, y, w, h in cells[1:]:
        assert (y, h) == (576, 144)
        assert x >= 0
        assert x + w <= 1280
        assert w > 0
        assert w % 2 == 0
