"""The recording compositor, fed real VP8 and Opus as RTP packets in real time, read back
with PyAV."""

import asyncio
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCRtpCodecParameters

from services.media import recorder as recorder_module
from services.media.keyframes import is_keyframe
from services.media.recorder import Recorder, RecordingError
from tests.media.rtp_packets import RtpStream

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, payloadType=111, channels=2)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, payloadType=102)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8_000, payloadType=0)
FPS = 15
BLACK_Y = 16


@dataclass(frozen=True)
class Sent:
    """One encoded frame of ``source``, due ``due`` seconds after the recording started."""

    due: float
    source: str
    codec: RTCRtpCodecParameters
    data: bytes
    timestamp: int


@dataclass(frozen=True)
class Packet:
    """One RTP packet of ``source``, due ``due`` seconds after the recording started."""

    due: float
    source: str
    mime: str
    data: bytes
    keyframe_start: bool


@dataclass(frozen=True)
class Leaves:
    due: float
    source: str


def packetized(frames: list[Sent], stream: RtpStream | None = None) -> list[Packet]:
    """``frames`` (one source's, of one codec) as the packets of one RTP stream (by default
    one with a random SSRC, sequence number and timestamp), each due with its frame."""
    if stream is None:
        stream = RtpStream(frames[0].codec)
    return [
        Packet(sent.due, sent.source, stream.mime, data, keyframe_start)
        for sent in frames
        for data, keyframe_start in stream.packets(sent.data, sent.timestamp)
    ]


def swapped(packets: list[Packet], firsts: list[int]) -> list[Packet]:
    """``packets`` with each one at ``firsts`` arriving after the next one (when it was due)."""
    reordered = list(packets)
    for i in firsts:
        first, second = reordered[i], reordered[i + 1]
        reordered[i] = replace(second, due=first.due)
        reordered[i + 1] = replace(first, due=second.due)
    return reordered


def camera(
    source: str, joins: float, leaves: float, rgb: tuple[int, int, int], codec: str = "libvpx"
) -> list[Sent]:
    """A 320x240 VP8 (or H.264) picture of one colour with a white bar sweeping across it.

    The colour is grainy, and the grain drifts, so that at 1 Mbit/s a keyframe takes some 25
    RTP packets and every other picture a few.
    """
    encoder = cast(av.VideoCodecContext, av.CodecContext.create(codec, "w"))
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.options = {"tune": "zerolatency"} if codec == "libx264" else {}
    encoder.time_base, encoder.framerate, encoder.gop_size = Fraction(1, FPS), Fraction(FPS), FPS
    encoder.bit_rate = 1_000_000
    grain = np.random.default_rng(sum(rgb)).integers(-24, 25, (240, 320 + 240, 1))
    packets: list[bytes] = []
    for i in range(round((leaves - joins) * FPS)):
        drift = (i * 8) % 240
        pixels = (np.array(rgb) + grain[:, drift : drift + 320]).clip(0, 255).astype(np.uint8)
        pixels[:, (i * 16) % 280 : (i * 16) % 280 + 40] = 255
        picture = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        picture.pts = i
        packets += [bytes(p) for p in encoder.encode(picture)]
    packets += [bytes(p) for p in encoder.encode(None)]
    rtp = VP8 if codec == "libvpx" else H264
    return [
        Sent(joins + i / FPS, source, rtp, data, i * 90_000 // FPS)
        for i, data in enumerate(packets)
    ]


def voice(
    source: str, joins: float, leaves: float, pitch: float, codec: str = "libopus"
) -> list[Sent]:
    """A sine tone as Opus (or G.711 µ-law), 20 ms a packet."""
    rtp, rate = (OPUS, 48_000) if codec == "libopus" else (PCMU, 8_000)
    encoder = cast(av.AudioCodecContext, av.CodecContext.create(codec, "w"))
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    per_packet = rate // 50
    count = round((leaves - joins) / 0.02)
    t = np.arange(count * per_packet) / rate
    tone = (np.sin(2 * np.pi * pitch * t) * 0.25 * 32_767).astype(np.int16)
    packets: list[bytes] = []
    for i in range(count):
        part = tone[None, i * per_packet : (i + 1) * per_packet]
        frame = av.AudioFrame.from_ndarray(part, "s16", "mono")
        frame.sample_rate, frame.pts = rate, i * per_packet
        packets += [bytes(p) for p in encoder.encode(frame)]
    return [
        Sent(joins + i * 0.02, source, rtp, data, i * per_packet) for i, data in enumerate(packets)
    ]


def stalling(frames: list[Sent], every: int, for_s: float) -> list[Sent]:
    """As a network that stalls every ``every`` frames, then delivers what it held at once."""
    held: list[Sent] = []
    until = -1.0
    for i, sent in enumerate(frames):
        if i % every == every // 2:
            until = sent.due + for_s
        held.append(Sent(max(sent.due, until), sent.source, sent.codec, sent.data, sent.timestamp))
    return held


async def play(recorder: Recorder, started: float, schedule: list[Packet | Leaves]) -> None:
    """Hand each packet to the recorder when it is due, as the media node would."""
    for event in sorted(schedule, key=lambda e: e.due):  # stable: packets stay in their order
        await asyncio.sleep(max(0.0, started + event.due - time.monotonic()))
        if isinstance(event, Leaves):
            recorder.remove(event.source)
            continue
        recorder.add_packet(
            event.source, event.mime, event.data, event.keyframe_start, time.monotonic()
        )


@dataclass
class Written:
    """An MP4 file as a player would see it."""

    codecs: list[tuple[str, str]]
    duration_s: float
    decode_errors: int
    pictures: list[tuple[float, npt.NDArray[np.uint8]]]
    """The luma of every picture, with its time."""
    sound: npt.NDArray[np.float32]


def read(path: Path) -> Written:
    pictures: list[tuple[float, npt.NDArray[np.uint8]]] = []
    sound: list[npt.NDArray[np.float32]] = []
    errors = 0
    with av.open(str(path)) as container:
        codecs = [(str(s.type), s.codec_context.name) for s in container.streams]
        duration_s = (container.duration or 0) / av.time_base
        for packet in container.demux():
            try:
                frames = packet.decode()
            except av.FFmpegError:
                errors += 1
                continue
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    luma = frame.planes[0]
                    lines = np.frombuffer(memoryview(luma), np.uint8)
                    lines = lines.reshape(luma.height, luma.line_size)[:, : luma.width].copy()
                    pictures.append((float(frame.time or 0), lines))
                elif isinstance(frame, av.AudioFrame):
                    sound.append(frame.to_ndarray()[0])
    samples = np.concatenate(sound) if sound else np.zeros(0, np.float32)
    return Written(codecs, duration_s, errors, pictures, samples)


def at(written: Written, second: float) -> npt.NDArray[np.uint8]:
    """The picture shown at ``second``."""
    return next(luma for time_s, luma in reversed(written.pictures) if time_s <= second)


def is_black(area: npt.NDArray[np.uint8]) -> bool:
    return bool(area.max() <= BLACK_Y + 4)


def lit(luma: npt.NDArray[np.uint8]) -> set[str]:
    """Which parts of a 1280x720 picture show something, as the grid lays them out."""
    if is_black(luma):
        return set()
    if is_black(luma[:100]) and is_black(luma[-100:]):  # one row of 4:3 pictures
        return {
            name
            for name, half in (("left", luma[:, :640]), ("right", luma[:, 640:]))
            if not is_black(half)
        }
    # Less 8 pixels along the cells' edges, where the encoder's blocks (16x16, across them)
    # may smear a neighbour's picture by a few levels.
    quarters = {
        "top left": luma[:352, :632],
        "top right": luma[:352, 648:],
        "bottom left": luma[368:, :632],
        "bottom right": luma[368:, 648:],
    }
    return {name for name, quarter in quarters.items() if not is_black(quarter)}


def loudness(sound: npt.NDArray[np.float32], pitch: float, start_s: float, end_s: float) -> float:
    """The amplitude of the tone at ``pitch`` between two times."""
    part = sound[round(start_s * 48_000) : round(end_s * 48_000)]
    t = np.arange(part.size) / 48_000
    window = np.hanning(part.size)
    return float(2 * abs(np.sum(part * window * np.exp(-2j * np.pi * pitch * t))) / window.sum())


@dataclass(frozen=True)
class Levels:
    """The quietest and the loudest, in % of full scale."""

    quietest: int
    loudest: int

    def within(self, low: int, high: int) -> bool:
        return low <= self.quietest and self.loudest <= high


def heard(sound: npt.NDArray[np.float32], pitch: float, start_s: float, end_s: float) -> Levels:
    """How loud the tone at ``pitch`` was between two times, in 40 ms steps."""
    steps = [loudness(sound, pitch, t, t + 0.04) for t in np.arange(start_s, end_s - 0.039, 0.04)]
    return Levels(round(min(steps) * 100), round(max(steps) * 100))


async def test_a_room_is_recorded_as_one_tiled_video_and_one_mixed_voice(tmp_path: Path) -> None:
    # Alice is there throughout; Carol leaves at 2.5 s; Bob joins at 0.8 s mid-picture (his
    # first frames need an earlier keyframe) and only shows from his next keyframe on.
    bob_video = camera("bob", 0.8, 4.3, (80, 200, 80))
    bob_video = [
        Sent(s.due - 5 / FPS, s.source, s.codec, s.data, s.timestamp) for s in bob_video[5:]
    ]
    assert not is_keyframe("video/VP8", bob_video[0].data)
    bob_shows = next(s.due for s in bob_video if is_keyframe("video/VP8", s.data))
    # Bob's network stalls now and then, for less than the recorder waits; Carol's once, at
    # 1 s, for 0.4 s: what she said in the first half of it comes too late to be heard.
    bob_voice = stalling(voice("bob", 0.8, 4.0, 660), every=30, for_s=0.15)
    carol_voice = stalling(voice("carol", 0.0, 2.5, 550), every=100, for_s=0.4)
    schedule: list[Packet | Leaves] = [
        *packetized(camera("alice", 0.0, 4.0, (200, 80, 80))),
        *packetized(voice("alice", 0.0, 4.0, 440)),
        *packetized(bob_video),
        *packetized(bob_voice),
        *packetized(camera("carol", 0.0, 2.5, (80, 80, 200))),
        *packetized(carol_voice),
        Leaves(2.5, "carol"),
    ]
    schedule = [event for event in schedule if event.due < 4.0]
    asked: list[str] = []
    path = tmp_path / "room.mp4"
    recorder = Recorder(path, want_keyframe=asked.append)

    started = time.monotonic()
    recorder.start()
    assert recorder.running
    await play(recorder, started, schedule)
    await asyncio.sleep(max(0.0, started + 4.0 - time.monotonic()))
    outcome = await recorder.stop()
    wall_s = 4.0

    assert not recorder.running
    assert outcome.path == path
    assert outcome.duration_s == pytest.approx(wall_s, abs=0.5)
    assert outcome.size_bytes == path.stat().st_size > 0
    assert outcome.decode_errors == 0
    assert 5 <= outcome.dropped <= 15  # Carol's, 20 ms each
    assert asked == ["bob"]  # once: his keyframe came within the second

    written = read(path)
    assert written.codecs == [("video", "h264"), ("audio", "aac")]
    assert written.duration_s == pytest.approx(wall_s, abs=0.5)
    assert written.decode_errors == 0
    assert len(written.pictures) == pytest.approx(wall_s * FPS, abs=2)
    assert all(luma.shape == (720, 1280) for _, luma in written.pictures)

    # Two side by side (cells of 640x720): black above and below, a picture in each half.
    assert lit(at(written, 0.5)) == {"left", "right"}
    # Three in two rows of two from Bob's first keyframe: the fourth cell stays black.
    assert lit(at(written, bob_shows - 0.15)) == {"left", "right"}
    assert lit(at(written, bob_shows + 0.15)) == {"top left", "top right", "bottom left"}
    assert lit(at(written, 2.4)) == {"top left", "top right", "bottom left"}
    # Carol left: back to two side by side.
    assert lit(at(written, 2.7)) == {"left", "right"}
    assert lit(at(written, 3.9)) == {"left", "right"}

    assert written.sound.size == pytest.approx(wall_s * 48_000, abs=0.5 * 48_000)
    assert np.abs(written.sound).max() <= 1.0
    # Each voice where it was, at the level it was sent (25%), without gaps or overlaps (a
    # gap or an echo of 20 ms in 40 would make it 12% or 50%), and nowhere else.
    spoken, silent = (18, 32), (0, 1)
    assert heard(written.sound, 440, 0.1, 3.9).within(*spoken)
    assert heard(written.sound, 550, 0.1, 0.95).within(*spoken)
    assert heard(written.sound, 550, 1.02, 1.14).within(*silent)  # too late after her stall
    assert heard(written.sound, 550, 1.35, 2.4).within(*spoken)
    assert heard(written.sound, 550, 2.6, 3.9).within(*silent)
    assert heard(written.sound, 660, 0.1, 0.7).within(*silent)
    assert heard(written.sound, 660, 0.9, 3.9).within(*spoken)  # his stalls were short enough


async def test_h264_and_g711_are_recorded_too(tmp_path: Path) -> None:
    video = camera("dan", 0.0, 1.5, (200, 200, 80), codec="libx264")
    assert video[0].data.startswith(b"\x00\x00\x00\x01")  # Annex B, as aiortc gives it
    schedule: list[Packet | Leaves] = [
        *packetized(video),
        *packetized(voice("dan", 0.0, 1.5, 440, codec="pcm_mulaw")),
    ]
    path = tmp_path / "h264.mp4"
    recorder = Recorder(path)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, schedule)
    outcome = await recorder.stop()

    assert (outcome.decode_errors, outcome.dropped) == (0, 0)
    written = read(path)
    assert written.decode_errors == 0
    assert lit(at(written, 1.0)) == {"top left", "top right", "bottom left", "bottom right"}
    assert heard(written.sound, 440, 0.3, 1.4).within(18, 32)


def tile(luma: npt.NDArray[np.uint8]) -> float:
    """The typical brightness of one 4:3 picture alone in a 1280x720 recording."""
    return float(np.median(luma[:, 160:1120]))


async def test_packets_out_of_order_from_any_start_across_wraps_give_the_same_recording(
    tmp_path: Path,
) -> None:
    # Both streams' sequence numbers wrap within a second, and their RTP timestamps at 1 s. A
    # few packets come after the next one: every keyframe's first, a video packet in 7 and a
    # voice packet in 5 (20 ms late, which the recorder must not take as a gap or an echo).
    # One voice packet, at 1.5 s, never comes: the voice goes on once its jitter buffer gives
    # up on it (16 packets later), without lagging behind from then on.
    video_rtp = RtpStream(VP8, sequence=(1 << 16) - 25, timestamp=(1 << 32) - 90_000)
    voice_rtp = RtpStream(OPUS, sequence=(1 << 16) - 30, timestamp=(1 << 32) - 48_000)
    video = packetized(camera("fay", 0.0, 2.5, (200, 80, 80)), video_rtp)
    keyframes = [i for i, packet in enumerate(video) if packet.keyframe_start]
    assert len(keyframes) == 3
    assert all(video[k].data[4:8] == video[k + 1].data[4:8] for k in keyframes)  # 2+ packets
    others = [i for i in range(3, len(video) - 1, 7) if all(abs(i - k) > 1 for k in keyframes)]
    video = swapped(video, sorted([*keyframes, *others]))
    audio = packetized(voice("fay", 0.0, 2.5, 440), voice_rtp)
    audio = swapped(audio, list(range(2, len(audio) - 1, 5)))
    lost = audio.pop(75)
    assert lost.due == pytest.approx(1.5)
    path = tmp_path / "reordered.mp4"
    recorder = Recorder(path)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, [*video, *audio])
    await asyncio.sleep(max(0.0, started + 2.5 - time.monotonic()))
    outcome = await recorder.stop()

    assert outcome.decode_errors == 0
    assert 1 <= outcome.dropped <= 10  # voice frames held up by the lost one for too long
    written = read(path)
    assert written.decode_errors == 0
    four = {"top left", "top right", "bottom left", "bottom right"}  # one picture, 4:3
    assert all(lit(at(written, second)) == four for second in (0.3, 0.9, 1.1, 1.6, 2.3))
    assert not np.array_equal(at(written, 0.9), at(written, 1.1))  # on past the wrap
    assert not np.array_equal(at(written, 2.0), at(written, 2.3))
    assert heard(written.sound, 440, 0.1, 1.45).within(18, 32)
    assert heard(written.sound, 440, 1.75, 2.4).within(18, 32)


async def test_a_source_that_reconnects_with_a_new_ssrc_keeps_being_recorded(
    tmp_path: Path,
) -> None:
    # Gus's connection drops at 1.2 s; from 1.3 s his new one sends as the same source, with a
    # new SSRC, sequence number and timestamp: his camera (from a keyframe) in another colour,
    # and another tone.
    schedule: list[Packet | Leaves] = [
        *packetized(camera("gus", 0.0, 1.2, (200, 80, 80))),
        *packetized(voice("gus", 0.0, 1.2, 440)),
        *packetized(camera("gus", 1.3, 2.6, (80, 80, 200))),
        *packetized(voice("gus", 1.3, 2.6, 660)),
    ]
    asked: list[str] = []
    path = tmp_path / "reconnected.mp4"
    recorder = Recorder(path, want_keyframe=asked.append)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, schedule)
    await asyncio.sleep(max(0.0, started + 2.6 - time.monotonic()))
    outcome = await recorder.stop()

    assert (outcome.decode_errors, outcome.dropped) == (0, 0)
    assert asked == []  # each camera started with a keyframe
    written = read(path)
    assert written.decode_errors == 0
    red, blue = 115, 96  # their luma
    assert tile(at(written, 0.6)) == pytest.approx(red, abs=6)
    assert tile(at(written, 1.25)) == pytest.approx(red, abs=6)  # the last picture stays
    assert tile(at(written, 1.6)) == pytest.approx(blue, abs=6)
    assert tile(at(written, 2.4)) == pytest.approx(blue, abs=6)
    assert not np.array_equal(at(written, 2.0), at(written, 2.4))
    spoken, silent = (18, 32), (0, 1)
    assert heard(written.sound, 440, 0.1, 1.1).within(*spoken)
    assert heard(written.sound, 660, 0.1, 1.1).within(*silent)
    assert heard(written.sound, 660, 1.4, 2.5).within(*spoken)  # placed anew, not lost
    assert heard(written.sound, 440, 1.4, 2.5).within(*silent)


async def test_a_video_is_not_sent_to_the_child_before_its_first_keyframe(
    tmp_path: Path,
) -> None:
    # Hal's camera is mid-picture when the recording starts: none of his video goes to the
    # child until the first packet of a keyframe, and the keyframe's second packet, which
    # comes before it, goes with it. His voice goes at once.
    video = packetized(camera("hal", 0.0, 1.4, (80, 200, 80))[5:])
    first = next(i for i, packet in enumerate(video) if packet.keyframe_start)
    assert first > 0
    assert video[first].data[4:8] == video[first + 1].data[4:8]  # the keyframe's second packet
    before, keyframe, rest = video[:first], video[first : first + 2], video[first + 2 :]
    asked: list[str] = []
    path = tmp_path / "keyframe.mp4"
    recorder = Recorder(path, want_keyframe=asked.append)
    recorder.start()
    (child,) = multiprocessing.active_children()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)  # takes nothing off the queue: its size is what we sent
    try:

        def send(packets: list[Packet]) -> int:
            for packet in packets:
                recorder.add_packet(
                    "hal", packet.mime, packet.data, packet.keyframe_start, time.monotonic()
                )
            return recorder._inbox.qsize()

        assert send(packetized(voice("hal", 0.0, 0.06, 440))) == 3
        assert send(before) == 3
        assert asked == ["hal"]  # once
        assert send(keyframe[1:]) == 3
        assert send(keyframe[:1]) == 5
        assert send(rest) == 5 + len(rest)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    await asyncio.sleep(0.5)
    outcome = await recorder.stop()

    assert asked == ["hal"]
    assert (outcome.decode_errors, outcome.dropped) == (0, 0)
    written = read(path)
    assert written.decode_errors == 0
    assert lit(written.pictures[-1][1]) == {"top left", "top right", "bottom left", "bottom right"}


async def test_a_recording_nobody_sent_to_is_black_silent_and_as_long(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    recorder = Recorder(path, width=640, height=360)
    recorder.start()
    await asyncio.sleep(1.5)
    outcome = await recorder.stop()

    assert outcome.duration_s == pytest.approx(1.5, abs=0.5)
    written = read(path)
    assert written.codecs == [("video", "h264"), ("audio", "aac")]
    assert written.duration_s == pytest.approx(1.5, abs=0.5)
    assert written.decode_errors == 0
    assert all(lit(luma) == set() for _, luma in written.pictures)
    assert np.abs(written.sound).max() < 1e-3

    size = path.stat().st_size
    late = packetized(voice("late", 0.0, 0.1, 440))[0]
    recorder.add_packet("late", late.mime, late.data, False, time.monotonic())
    recorder.remove("late")
    assert not recorder.running
    assert path.stat().st_size == size
    with pytest.raises(RecordingError, match="already been stopped"):
        await recorder.stop()


async def test_packets_the_child_cannot_take_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "QUEUE_DEPTH", 0)
    asked: list[str] = []
    recorder = Recorder(tmp_path / "full.mp4", want_keyframe=asked.append)
    recorder.start()
    video = packetized(camera("ann", 0.0, 0.2, (90, 90, 90))[:2])
    assert len(video) > 2  # a keyframe of several packets, then the next picture
    for packet in [*packetized(voice("ann", 0.0, 0.06, 440)), *video]:
        recorder.add_packet("ann", packet.mime, packet.data, packet.keyframe_start, 0.0)
    outcome = await recorder.stop()

    # Three voice packets and the keyframe's first; the rest of the keyframe and the next
    # picture need the dropped one, so they wait for a keyframe rather than reach the child.
    assert outcome.dropped == 4
    assert asked == ["ann"]


async def test_a_missing_folder_is_refused_at_start(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "nowhere" / "room.mp4")
    with pytest.raises(RecordingError, match=r"cannot be written .* does not exist\.$"):
        recorder.start()
    assert not recorder.running


async def test_a_file_that_cannot_be_opened_fails_the_recording_with_the_reason(
    tmp_path: Path,
) -> None:
    recorder = Recorder(tmp_path)  # a folder, not a file
    recorder.start()
    with pytest.raises(RecordingError, match=r"cannot be written to .*: is a directory\.$"):
        await recorder.stop()


async def test_a_recording_whose_process_died_fails(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "killed.mp4")
    recorder.start()
    (child,) = multiprocessing.active_children()
    child.kill()
    child.join()
    assert not recorder.running
    with pytest.raises(RecordingError, match="stopped unexpectedly"):
        await recorder.stop()


async def test_a_recording_that_does_not_finish_in_time_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "STOP_TIMEOUT_S", 0.5)
    recorder = Recorder(tmp_path / "stuck.mp4")
    recorder.start()
    (child,) = multiprocessing.active_children()
    assert child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)  # alive, and answering nothing
    with pytest.raises(RecordingError, match=r"did not finish within 0\.5 s"):
        await asyncio.wait_for(recorder.stop(), timeout=5)
    assert not child.is_alive()


def playable_s(written: Written) -> tuple[float, float]:
    """How long the pictures and the sound that decode last, read to the last frame."""
    video_s = written.pictures[-1][0] + 1 / FPS if written.pictures else 0.0
    return video_s, written.sound.size / 48_000


async def test_a_recorder_killed_midway_leaves_a_playable_partial_file(tmp_path: Path) -> None:
    # SIGKILL gives the child no chance to finish the file: what was written by then must play.
    schedule: list[Packet | Leaves] = [
        *packetized(camera("ivy", 0.0, 10.0, (200, 80, 80))),
        *packetized(voice("ivy", 0.0, 10.0, 440)),
    ]
    path = tmp_path / "killed.mp4"
    recorder = Recorder(path)
    started = time.monotonic()
    recorder.start()
    (child,) = multiprocessing.active_children()
    await play(recorder, started, schedule)
    child.kill()
    recorded_s = time.monotonic() - started
    child.join()
    assert not recorder.running
    outcome = await recorder.stop()

    written = read(path)
    assert written.decode_errors == 0
    assert written.codecs == [("video", "h264"), ("audio", "aac")]
    video_s, audio_s = playable_s(written)
    kept = min(video_s, audio_s) / recorded_s
    print(  # noqa: T201 - the issue's goal (>= 90% kept), with -s
        f"after SIGKILL at {recorded_s:.2f} s: {video_s:.2f} s of video and "
        f"{audio_s:.2f} s of sound play ({kept:.1%} kept)"
    )
    assert kept >= 0.9
    assert abs(video_s - audio_s) <= 2 / FPS
    assert outcome.partial
    assert outcome.duration_s == pytest.approx(min(video_s, audio_s), abs=2 / FPS)
    assert outcome.size_bytes == path.stat().st_size
    assert lit(written.pictures[-1][1]) == {"top left", "top right", "bottom left", "bottom right"}
    assert heard(written.sound, 440, 0.2, audio_s - 0.2).within(18, 32)


async def test_a_participant_without_pictures_is_a_black_tile_in_place_and_in_sync(
    tmp_path: Path,
) -> None:
    # Amy's connection drops at 1.0 s and is back at 2.0 s (a new SSRC, from a keyframe); her
    # voice goes on throughout. Bob's voice drops for the same second; his camera does not.
    schedule: list[Packet | Leaves] = [
        *packetized(camera("amy", 0.0, 1.0, (200, 80, 80))),
        *packetized(camera("amy", 2.0, 3.5, (200, 80, 80))),
        *packetized(voice("amy", 0.0, 3.5, 440)),
        *packetized(camera("bob", 0.0, 3.5, (80, 80, 200))),
        *packetized(voice("bob", 0.0, 1.0, 660)),
        *packetized(voice("bob", 2.0, 3.5, 660)),
    ]
    path = tmp_path / "gaps.mp4"
    recorder = Recorder(path)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, schedule)
    await asyncio.sleep(max(0.0, started + 3.5 - time.monotonic()))
    outcome = await recorder.stop()

    assert (outcome.decode_errors, outcome.dropped) == (0, 0)
    written = read(path)
    assert written.decode_errors == 0
    # Her last picture stays for a moment, then her tile is black where it was: Bob's stays
    # on the right, not alone in the middle.
    assert lit(at(written, 0.5)) == {"left", "right"}
    assert lit(at(written, 1.2)) == {"left", "right"}
    assert all(lit(at(written, t)) == {"right"} for t in (1.6, 1.8, 1.95))
    assert lit(at(written, 2.3)) == {"left", "right"}
    assert lit(at(written, 3.4)) == {"left", "right"}
    # Sound and picture last as long, within a frame or two, and each voice is where it was.
    video_s, audio_s = playable_s(written)
    assert abs(video_s - audio_s) <= 2 / FPS
    assert video_s == pytest.approx(3.5, abs=0.3)
    spoken, silent = (18, 32), (0, 1)
    assert heard(written.sound, 440, 0.1, 3.4).within(*spoken)
    assert heard(written.sound, 660, 0.1, 0.95).within(*spoken)
    assert heard(written.sound, 660, 1.05, 1.95).within(*silent)
    assert heard(written.sound, 660, 2.1, 3.4).within(*spoken)


async def test_a_reconnect_mid_picture_shows_black_until_its_keyframe_never_garbage(
    tmp_path: Path,
) -> None:
    # Ned's new connection (1.0 s, a new SSRC) starts between keyframes: none of its pictures
    # can be decoded until the next keyframe, which the recorder asks for. Until then his
    # tile is black, in its place; then it shows his whole picture, never a grey smear.
    before = camera("ned", 0.0, 0.9, (200, 80, 80))
    after = camera("ned", 1.0, 3.0, (200, 80, 80))
    after = [replace(s, due=s.due - 5 / FPS) for s in after[5:]]
    assert not is_keyframe("video/VP8", after[0].data)
    shows = next(s.due for s in after if is_keyframe("video/VP8", s.data))
    assert shows > 1.6
    asked: list[str] = []
    path = tmp_path / "midway.mp4"
    recorder = Recorder(path, want_keyframe=asked.append)
    started = time.monotonic()
    recorder.start()
    await play(recorder, started, [*packetized(before), *packetized(after)])
    await asyncio.sleep(max(0.0, started + 3.0 - time.monotonic()))
    outcome = await recorder.stop()

    assert asked == ["ned"]
    assert (outcome.decode_errors, outcome.dropped) == (0, 0)
    written = read(path)
    assert written.decode_errors == 0
    red = 115  # his picture's luma
    assert tile(at(written, 0.5)) == pytest.approx(red, abs=6)
    assert is_black(at(written, shows - 0.1))
    for time_s, luma in written.pictures:
        if time_s >= shows + 0.1:
            assert tile(luma) == pytest.approx(red, abs=6), time_s
