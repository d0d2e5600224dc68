"""Recording a room: every participant's RTP packets in, one MP4 file out.

The media node forwards RTP packets without reassembling or decoding them; a recording has to
put the packets back together into frames, decode them all, tile the pictures and mix the
voices. All of that happens in a child process, so none of it runs on the node's event loop:
:class:`Recorder` only puts each packet's bytes on a queue (in a small tuple), and drops (and
counts) packets when the child is far behind. The child reassembles each source's frames with
aiortc's own parts, as aiortc's receiver would: ``RtpPacket.parse``, ``depayload`` and a
``JitterBuffer`` per source and kind, anew whenever the sender's SSRC changes.

The child lays everything on the timeline of the parent's ``time.monotonic()`` (system-wide on
Linux), which starts when the recording does: a file lasts as long as the recording did, however
late people came or early they left. A video frame is composed every ``1/fps`` from each
participant's latest picture; voices are placed by their RTP timestamps, anchored on arrival,
and summed. A frame arrived when the last of its packets did. Both run ``MARGIN_S`` behind the
newest packet so that late frames still land. A participant's tile appears with their first
keyframe and stays where it is until they leave, black while their pictures stop (``GAP_S``).

The file is fragmented MP4, written a fragment at a time (``FRAGMENT_S``): a child killed
outright leaves a file that plays up to its last fragment, which :meth:`Recorder.stop` keeps
as a *partial* recording, measured with :func:`playable_duration`.
"""

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Literal, NamedTuple, TypeAlias, cast

import av
import numpy as np
import numpy.typing as npt
import structlog
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtpPacket
from av.video.plane import VideoPlane

from services.media.keyframes import is_keyframe

log = structlog.get_logger(__name__)

DECODERS = {
    "video/vp8": ("vp8", 90_000),
    "video/h264": ("h264", 90_000),
    "audio/opus": ("opus", 48_000),
    "audio/pcmu": ("pcm_mulaw", 8_000),
    "audio/pcma": ("pcm_alaw", 8_000),
}
"""FFmpeg decoder and RTP clock rate of each codec a recording can decode, by MIME type."""
RTP_NAMES = {"video/vp8": "video/VP8", "video/h264": "video/H264"}
"""The MIME types aiortc's ``depayload`` knows by their spelling in SDP (the rest it leaves)."""
MARGIN_S = 0.2
"""How far composing runs behind the newest packet: a frame later than this is lost."""
QUEUE_DEPTH = 7500
"""Packets on their way to the child before new ones are dropped: about 7 s of three people
(each ~100-300 video packets a second at 1-2.5 Mbit/s, and 50 of voice)."""
VIDEO_BUFFER = 128
AUDIO_BUFFER = 16
"""Packets a source's jitter buffer holds, as in aiortc's receiver: a frame with a packet
missing is given up once this many later ones have come."""
AUDIO_PREFETCH = 0
"""Voice frames held back behind a complete one. aiortc's receiver holds 4 (80 ms), which only
delays them: a missing packet holds up the buffer whatever this is, and here a frame keeps its
own arrival time, so held frames would only be lost after a stall and at the end."""
KEYFRAME_HELD = 8
"""Packets of a video kept while it waits for a keyframe: the keyframe's own packets that
arrive before its first one (out of order) are sent after it instead of being lost."""
FRAGMENT_S = 0.5
"""The longest stretch the file holds in memory: it is written as fragmented MP4, a fragment
(with its own index) at every keyframe and at least this often, so a child killed outright
leaves a file that plays up to its last fragment."""
STOP_TIMEOUT_S = 30.0
"""How long ``stop`` waits for the child to finish the file."""
KEYFRAME_REQUEST_S = 1.0
"""How often to ask again for a keyframe a source's video is waiting for."""
GAP_S = 0.5
"""A participant whose pictures stop for longer than this (reconnecting, camera off, a stalled
network) shows black in their tile, which stays where it was; longer for a camera that sends
few pictures (three of its usual intervals), so that it does not flicker."""
CLOCK_DRIFT = 0.0005
"""How far a sender's audio clock may drift from ours (500 ppm) with its voice kept in place."""
SAMPLE_RATE = 48_000
AAC_FRAME = 1024
BLACK = (16, 128, 128)  # Y, U, V in the limited range H.264 players expect
SCREEN_SUFFIX = ":screen"
"""A source named ``<participant>:screen`` is a screen share: while it shows, it is the main
tile and everyone's camera goes to a strip below it."""
STRIP = 0.2
"""The share of the picture's height the strip of cameras takes under a screen share."""


def screen_source(participant: object) -> str:
    """The recording source of someone's screen share (their camera's is their id)."""
    return f"{participant}{SCREEN_SUFFIX}"


Samples = npt.NDArray[np.float32]
Plane = npt.NDArray[np.uint8]


class RecordingError(Exception):
    """The recording could not be written; the message says why, for a person."""


@dataclass(frozen=True)
class RecordingOutcome:
    """A finished recording."""

    path: Path
    duration_s: float
    size_bytes: int
    decode_errors: int
    """Packets and frames that could not be decoded (unknown codec, malformed, corrupt data)."""
    dropped: int
    """Packets the child was too far behind to take, and frames that came too late."""
    partial: bool = False
    """The child did not finish the file (it died, or failed or hung while writing): it plays
    up to its last whole fragment, and ``duration_s`` is measured from what is there."""
    failure: str | None = None
    """Why a partial recording ended early."""


# What the parent sends the child: plain values, no aiortc objects. A packet is a bare tuple
# (source, MIME type, RTP packet, arrival, restart), which pickles eight times faster than a
# NamedTuple; ``restart`` says packets of that source and kind were dropped just before it.
_Packet: TypeAlias = tuple[str, str, bytes, float, bool]
_Message: TypeAlias = "_Packet | _Left | _Stop"


# A frame the child put together from packets.
class _Frame(NamedTuple):
    source: str
    mime: str
    data: bytes
    timestamp: int
    keyframe: bool
    arrived: float


class _Left(NamedTuple):
    source: str
    at: float


class _Stop(NamedTuple):
    at: float


# What the child answers, once.
class _Finished(NamedTuple):
    duration_s: float
    decode_errors: int
    late: int
    cpu_s: float


class _Failed(NamedTuple):
    reason: str


class Recorder:
    """One room's recording, composed in a child process into a fragmented H.264 + AAC MP4.

    ``add_packet`` and ``remove`` are for the event loop: they never block. Each ``source``
    is one picture and one voice; a person who sends two videos needs two sources. A video
    that cannot be decoded until its next keyframe (at the start, after a drop, or when its
    SSRC changes) is skipped until the first packet of one, and ``want_keyframe(source)`` is
    called, at most once a second, so the caller can ask the sender for one.

    The child is spawned, so it imports the program's main module again: that module must
    start nothing unless ``__name__ == "__main__"``. Always ``stop()`` a started recording.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int = 1280,
        height: int = 720,
        fps: int = 15,
        want_keyframe: Callable[[str], None] | None = None,
    ) -> None:
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"a recording's size must be even: {width}x{height} is not")
        if fps < 1:
            raise ValueError(f"a recording needs at least 1 frame a second, not {fps}")
        self.path = path
        self._size = (width, height, fps)
        self._want_keyframe = want_keyframe
        self._context = multiprocessing.get_context("spawn")
        # Unbounded so that a departure or the stop always gets through; packets are held to
        # QUEUE_DEPTH by ``add_packet``.
        self._inbox: multiprocessing.queues.Queue[_Message] = self._context.Queue()
        self._inbox.cancel_join_thread()  # a dead child must not hold this process at exit
        self._from_child, self._to_parent = self._context.Pipe(duplex=False)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._state: Literal["new", "recording", "stopping", "stopped"] = "new"
        self._decodable: set[str] = set()  # sources whose video the child can decode
        self._video: dict[str, tuple[str, bytes]] = {}  # each source's video: MIME type, SSRC
        self._held: dict[str, deque[bytes]] = {}  # video packets awaiting a keyframe
        self._voice_gaps: set[str] = set()  # sources whose last voice packet was dropped
        self._keyframe_asked: dict[str, float] = {}
        self._undecodable = 0
        self._dropped = 0

    @property
    def running(self) -> bool:
        """Started, not stopped, and the child is alive."""
        return self._state == "recording" and self._process is not None and self._process.is_alive()

    def start(self) -> None:
        """Start the child; the recording's t=0 is now."""
        if self._state != "new":
            raise RecordingError("This recording has already been started.")
        folder = self.path.parent
        if not folder.is_dir():
            raise RecordingError(
                f"The recording cannot be written to {self.path}: "
                f"the folder {folder} does not exist."
            )
        if not os.access(folder, os.W_OK):
            raise RecordingError(
                f"The recording cannot be written to {self.path}: "
                f"the folder {folder} is not writable."
            )
        width, height, fps = self._size
        started = time.monotonic()
        self._process = self._context.Process(
            target=_record,
            args=(str(self.path), width, height, fps, started, self._inbox, self._to_parent),
            name=f"recorder {self.path.name}",
            daemon=True,  # ended (and its file closed) if this process exits without stop()
        )
        self._process.start()
        self._to_parent.close()  # the child's end now; ours would hide the child's death
        self._state = "recording"
        log.info("recording started", path=str(self.path), width=width, height=height, fps=fps)

    def add_packet(
        self, source: str, mime: str, packet: bytes, keyframe_start: bool, arrived: float
    ) -> None:
        """Hand the child one RTP packet of ``source``; never blocks.

        ``packet`` is as the sender sent it (decrypted), ``mime`` its codec's MIME type,
        ``keyframe_start`` whether it is the first packet of a keyframe, and ``arrived`` the
        ``time.monotonic()`` it came at.
        """
        if self._state != "recording":
            return
        if mime not in DECODERS:
            mime = mime.lower()
            if mime not in DECODERS:
                self._undecodable += 1
                return
        inbox = self._inbox
        if not mime.startswith("video/"):
            if inbox.qsize() >= QUEUE_DEPTH:
                self._dropped += 1
                self._voice_gaps.add(source)
                return
            restart = source in self._voice_gaps
            if restart:
                self._voice_gaps.discard(source)
            inbox.put_nowait((source, mime, packet, arrived, restart))
            return
        stream = (mime, packet[8:12])
        if self._video.get(source) != stream:  # a new sender (or codec): from a keyframe on
            self._video[source] = stream
            self._decodable.discard(source)
        if source not in self._decodable:
            self._wait_for_keyframe(source, mime, packet, keyframe_start, arrived)
            return
        if inbox.qsize() >= QUEUE_DEPTH:
            self._dropped += 1
            self._decodable.discard(source)  # the next frames depend on this one
            self._ask_keyframe(source, arrived)
            return
        inbox.put_nowait((source, mime, packet, arrived, False))

    def _wait_for_keyframe(
        self, source: str, mime: str, packet: bytes, keyframe_start: bool, arrived: float
    ) -> None:
        """Hold back ``source``'s video until a keyframe starts, then send the child that."""
        held = self._held.get(source)
        if not keyframe_start:
            if held is None:
                held = self._held[source] = deque(maxlen=KEYFRAME_HELD)
            held.append(packet)
            self._ask_keyframe(source, arrived)
            return
        if self._inbox.qsize() >= QUEUE_DEPTH:
            self._dropped += 1
            self._ask_keyframe(source, arrived)
            return
        self._decodable.add(source)
        self._held.pop(source, None)
        self._inbox.put_nowait((source, mime, packet, arrived, True))
        # The rest of this keyframe that came before its first packet (same timestamp, SSRC).
        frame = packet[4:12]
        for early in held or ():
            if early[4:12] == frame:
                self._inbox.put_nowait((source, mime, early, arrived, False))

    def remove(self, source: str) -> None:
        """``source`` left: from now on its tile is gone and its voice silent."""
        if self._state != "recording":
            return
        self._decodable.discard(source)
        self._video.pop(source, None)
        self._held.pop(source, None)
        self._voice_gaps.discard(source)
        self._keyframe_asked.pop(source, None)
        self._inbox.put_nowait(_Left(source, time.monotonic()))

    async def stop(self) -> RecordingOutcome:
        """Finish and close the file.

        A file the child did not finish (it died, failed or hung while writing) is kept as
        ``partial`` if any of it plays; :class:`RecordingError` if none of it does.
        """
        if self._state == "new" or self._process is None:
            raise RecordingError("This recording was never started.")
        if self._state != "recording":
            raise RecordingError("This recording has already been stopped.")
        self._state = "stopping"
        self._inbox.put_nowait(_Stop(time.monotonic()))
        try:
            answer = await asyncio.to_thread(self._wait_for_child, self._process)
            if isinstance(answer, _Failed):
                outcome = await asyncio.to_thread(self._salvage, answer.reason)
            else:
                outcome = RecordingOutcome(
                    path=self.path,
                    duration_s=answer.duration_s,
                    size_bytes=self.path.stat().st_size,
                    decode_errors=answer.decode_errors + self._undecodable,
                    dropped=answer.late + self._dropped,
                )
        except RecordingError as error:
            log.warning("recording failed", path=str(self.path), reason=str(error))
            raise
        finally:
            self._state = "stopped"
            self._inbox.close()
            self._from_child.close()
        log.info(
            "recording partial" if outcome.partial else "recording finished",
            path=str(self.path),
            duration_s=round(outcome.duration_s, 2),
            size_bytes=outcome.size_bytes,
            decode_errors=outcome.decode_errors,
            dropped=outcome.dropped,
            cpu_s=None if isinstance(answer, _Failed) else round(answer.cpu_s, 2),
            failure=outcome.failure,
        )
        return outcome

    async def ended(self) -> int | None:
        """Wait until the child has exited, for whatever reason (stopped, crashed, killed);
        its exit code."""
        process = self._process
        if process is None:
            raise RecordingError("This recording was never started.")
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        # The sentinel is readable once the child is gone: no thread is held for hours.
        loop.add_reader(process.sentinel, _settle, exited)
        try:
            await exited
        finally:
            loop.remove_reader(process.sentinel)
        process.join(1)
        return process.exitcode

    def _salvage(self, reason: str) -> RecordingOutcome:
        """What is left of a file the child did not finish (in a worker thread: it reads it)."""
        duration_s = playable_duration(self.path)
        if duration_s <= 0:
            raise RecordingError(reason)
        return RecordingOutcome(
            path=self.path,
            duration_s=duration_s,
            size_bytes=self.path.stat().st_size,
            decode_errors=self._undecodable,
            dropped=self._dropped,
            partial=True,
            failure=reason,
        )

    def _ask_keyframe(self, source: str, now: float) -> None:
        if self._want_keyframe is None:
            return
        if now - self._keyframe_asked.get(source, -math.inf) < KEYFRAME_REQUEST_S:
            return
        self._keyframe_asked[source] = now
        self._want_keyframe(source)

    def _wait_for_child(self, process: multiprocessing.process.BaseProcess) -> _Finished | _Failed:
        """The child's answer, or why there is none (in a worker thread: this blocks)."""
        multiprocessing.connection.wait([self._from_child, process.sentinel], STOP_TIMEOUT_S)
        answer: _Finished | _Failed | None = None
        with contextlib.suppress(EOFError, OSError):
            if self._from_child.poll():
                answer = self._from_child.recv()
        if answer is None and process.is_alive():
            process.kill()
            process.join()
            return _Failed(
                f"The recording did not finish within {STOP_TIMEOUT_S:g} s and was abandoned."
            )
        process.join(5)
        if answer is None:
            return _Failed(
                f"The recording process stopped unexpectedly (exit code {process.exitcode})."
            )
        return answer


def _settle(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


def playable_duration(path: Path) -> float:
    """How long the MP4 at ``path`` plays with both sound and picture: to the end of the
    last whole packet of its shorter stream, demuxed to the end (its header may not say, when
    it was never finished). 0 if nothing in it plays or it cannot be read."""
    size = path.stat().st_size if path.is_file() else 0
    ends: dict[int, float] = {}
    try:
        with av.open(str(path)) as container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            ends = dict.fromkeys((s.index for s in streams), 0.0)
            for packet in container.demux(streams):
                if packet.pts is None or packet.time_base is None:
                    continue  # the demuxer's end-of-stream marker
                if packet.pos is not None and packet.pos + packet.size > size:
                    break  # cut off by the end of the file
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                ends[packet.stream.index] = max(ends[packet.stream.index], end)
    except (OSError, av.FFmpegError):  # nothing more can be read from here on
        pass
    return min(ends.values()) if ends else 0.0


# Everything below runs in the child process.


def _record(
    path: str,
    width: int,
    height: int,
    fps: int,
    started: float,
    inbox: "multiprocessing.queues.Queue[_Message]",
    answer: multiprocessing.connection.Connection,
) -> None:
    """The child: compose until told to stop (or orphaned), then close the file and answer."""
    os.umask(0o077)  # a recording is the clinic's: its file is this user's alone (0600)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us
    ending = _Ending()
    signal.signal(signal.SIGTERM, ending.now)
    try:
        composition = _Composition(path, width, height, fps, started)
    except (OSError, av.FFmpegError) as error:
        _reply(answer, _Failed(f"The recording cannot be written to {path}: {_reason(error)}."))
        return
    try:
        ended = composition.run(inbox, ending)
        _reply(answer, composition.close(ended))
    except (OSError, av.FFmpegError) as error:
        _reply(answer, _Failed(f"Writing the recording {path} failed: {_reason(error)}."))
    except Exception as error:
        _reply(answer, _Failed(f"The recording {path} failed on a bug: {error!r}."))
        raise  # for the traceback


def _reply(answer: multiprocessing.connection.Connection, outcome: _Finished | _Failed) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        answer.send(outcome)


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error)


class _Ending:
    """Whether the child should finish now: SIGTERM, or the parent is gone."""

    def __init__(self) -> None:
        self.signalled = False
        self._parent = multiprocessing.parent_process()

    def now(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def due(self) -> bool:
        return self.signalled or (self._parent is not None and not self._parent.is_alive())


class _Composition:
    """The output file and everything composed into it, on the parent's monotonic clock."""

    def __init__(self, path: str, width: int, height: int, fps: int, started: float) -> None:
        self.started = started
        self.fps = fps
        fragment_us = str(round(FRAGMENT_S * 1_000_000))
        self.container = av.open(
            path,
            mode="w",
            format="mp4",
            options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": fragment_us,
                # Each fragment goes to the file when it is complete, not when a buffer fills.
                "flush_packets": "1",
            },
        )
        # zerolatency: a picture is encoded when it is composed (no lookahead, no B-frames),
        # so the last fragment before a crash is as recent as can be.
        self.video = self.container.add_stream(
            "libx264", rate=fps, options={"preset": "veryfast", "crf": "23", "tune": "zerolatency"}
        )
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.codec_context.gop_size = 2 * fps
        # The default "twoloop" coder garbles steady tones (a beep, music) now and then.
        self.audio = self.container.add_stream(
            "aac", rate=SAMPLE_RATE, layout="mono", options={"aac_coder": "fast"}
        )
        self.audio.bit_rate = 96_000
        self.container.start_encoding()  # opens the file: fail here, not on the first frame
        self.grid = _Grid(width, height)
        self.streams: dict[tuple[str, bool], _Stream] = {}  # by source and whether video
        self.cameras: dict[str, _Camera] = {}
        self.voices: dict[str, _Voice] = {}
        self.mix = _Mix()
        self.frames_out = 0
        self.decode_errors = 0
        self.late = 0

    def run(self, inbox: "multiprocessing.queues.Queue[_Message]", ending: _Ending) -> float:
        """Compose what arrives until told to stop; the time the recording ended."""
        # Everything that arrived until ``clock`` is here: the queue is in arrival order, and
        # when it is empty nothing is on its way.
        clock = self.started
        while True:
            try:
                message = inbox.get(timeout=0.5 / self.fps)
            except queue.Empty:
                if ending.due():
                    return clock
                clock = max(clock, time.monotonic())
            else:
                if isinstance(message, _Left):
                    self.leave(message.source, message.at)
                elif isinstance(message, _Stop):
                    return message.at
                else:
                    self.receive_packet(*message)
                    clock = max(clock, message[3])
            self.compose_until(clock - MARGIN_S)

    def receive_packet(
        self, source: str, mime: str, data: bytes, arrived: float, restart: bool
    ) -> None:
        """Put one packet in its stream; compose the frame it completes, if any."""
        try:
            packet = _Stream.parse(mime, data)
        except ValueError:
            self.decode_errors += 1  # not RTP, or a payload its codec cannot have
            return
        key = (source, mime.startswith("video/"))
        stream = self.streams.get(key)
        if stream is None or stream.ssrc != packet.ssrc or stream.mime != mime:
            if stream is not None and not key[1]:
                self.voices.pop(source, None)  # a new sender: its own timestamps and decoder
            stream = self.streams[key] = _Stream(source, mime, packet.ssrc)
        elif restart:
            stream.restart()
        for frame in stream.add(packet, arrived):
            self.receive(frame)

    def receive(self, frame: _Frame) -> None:
        decoder, clock_rate = DECODERS[frame.mime]
        if frame.mime.startswith("video/"):
            camera = self.cameras.get(frame.source)
            if camera is None or camera.left_at is not None or camera.codec != decoder:
                # Another codec (a reconnect): the same tile, black until its keyframe.
                keep_tile = camera is not None and camera.left_at is None and camera.in_layout
                camera = self.cameras[frame.source] = _Camera(decoder, in_layout=keep_tile)
            self.decode_errors += camera.decode(frame.data, frame.keyframe, frame.arrived)
            return
        voice = self.voices.get(frame.source)
        if voice is None:
            voice = self.voices[frame.source] = _Voice(decoder, clock_rate)
        try:
            samples = voice.decode(frame.data)
        except av.FFmpegError:
            self.decode_errors += 1
            return
        arrival = round((frame.arrived - self.started) * SAMPLE_RATE)
        at = voice.place(frame.timestamp, arrival, earliest=self.mix.written)
        if at is None:
            self.late += 1
        else:
            self.mix.add(at, samples)

    def leave(self, source: str, at: float) -> None:
        # Its frames are all in (the queue is in order); its tile goes when the video gets to
        # ``at``, its voice has nothing more to say.
        self.voices.pop(source, None)
        self.streams.pop((source, True), None)
        self.streams.pop((source, False), None)
        camera = self.cameras.get(source)
        if camera is not None:
            camera.left_at = at

    def compose_until(self, horizon: float, *, last: bool = False) -> None:
        """Encode the video and audio frames due by ``horizon`` (all before it, if ``last``)."""
        elapsed = (horizon - self.started) * self.fps
        frames = math.ceil(elapsed) if last else math.floor(elapsed) + 1
        while self.frames_out < frames:
            self.encode_picture(self.started + self.frames_out / self.fps)
        end = round((horizon - self.started) * SAMPLE_RATE)
        while self.mix.written + AAC_FRAME <= end:
            self.encode_sound(AAC_FRAME)
        if last and self.mix.written < end:
            self.encode_sound(end - self.mix.written)

    def encode_picture(self, at: float) -> None:
        for source, camera in list(self.cameras.items()):
            if camera.left_at is not None and camera.left_at <= at:
                del self.cameras[source]
            else:
                camera.advance(at)
        # Everyone who has shown a picture keeps a tile, black while their pictures stop; a
        # screen share that has shown one is the main tile, over a strip of the cameras.
        shown = [(s, c) for s, c in self.cameras.items() if c.in_layout]
        screen = next((c.tile(at) for s, c in shown if s.endswith(SCREEN_SUFFIX)), None)
        sharing = any(s.endswith(SCREEN_SUFFIX) for s, _ in shown)
        tiles = [c.tile(at) for s, c in shown if not s.endswith(SCREEN_SUFFIX)]
        frame = self.grid.compose([screen, *tiles] if sharing else tiles, stage=sharing)
        frame.pts = self.frames_out
        frame.time_base = Fraction(1, self.fps)
        self.container.mux(self.video.encode(frame))
        self.frames_out += 1

    def encode_sound(self, count: int) -> None:
        frame = av.AudioFrame.from_ndarray(self.mix.take(count)[None, :], "fltp", "mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.mix.written - count
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self.container.mux(self.audio.encode(frame))

    def close(self, ended: float) -> _Finished:
        self.compose_until(ended, last=True)
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()
        with av.open(self.container.name) as written:
            duration_s = (written.duration or 0) / av.time_base
        return _Finished(duration_s, self.decode_errors, self.late, time.process_time())


class _Stream:
    """One sender's packets of one kind (one SSRC), put back together into frames.

    As aiortc's ``RTCRtpReceiver`` does it: each payload depayloaded into the packet's
    ``_data``, a jitter buffer that gives a frame once the next one starts, and timestamps
    mapped to start near 0 (across their wrap).
    """

    def __init__(self, source: str, mime: str, ssrc: int) -> None:
        self.source = source
        self.mime = mime
        self.ssrc = ssrc
        self.video = mime.startswith("video/")
        self.timestamps = TimestampMapper()
        self.buffer = self._buffer()
        self.arrived: dict[int, float] = {}  # when each frame's latest packet came, by timestamp

    @staticmethod
    def parse(mime: str, data: bytes) -> RtpPacket:
        """``data`` as an RTP packet with its payload depayloaded; ValueError if malformed."""
        packet = RtpPacket.parse(data)
        codec = _CODECS[mime]
        packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        return packet

    def _buffer(self) -> JitterBuffer:
        if self.video:
            return JitterBuffer(capacity=VIDEO_BUFFER, is_video=True)
        return JitterBuffer(capacity=AUDIO_BUFFER, prefetch=AUDIO_PREFETCH)

    def restart(self) -> None:
        """Packets were dropped before the next one: start afresh from it, on the same clock."""
        self.buffer = self._buffer()
        self.arrived.clear()

    def add(self, packet: RtpPacket, arrived: float) -> list[_Frame]:
        """The frames ``packet`` completes (usually none or one)."""
        self.arrived[packet.timestamp] = arrived
        if len(self.arrived) > 2 * VIDEO_BUFFER:  # frames the buffer gave up on
            del self.arrived[next(iter(self.arrived))]
        frames = []
        _, frame = self.buffer.add(packet)
        while frame is not None:
            frames.append(self._frame(frame, arrived))
            if frame.timestamp == packet.timestamp:
                break  # the packet went out in it
            # The buffer gives one frame an add, so a late packet that completes two would
            # leave it a frame behind for good: add the same packet again (it stays as it is)
            # for the next.
            _, frame = self.buffer.add(packet)
        return frames

    def _frame(self, frame: JitterFrame, now: float) -> _Frame:
        complete = self.arrived.pop(frame.timestamp, now)
        timestamp = self.timestamps.map(frame.timestamp)
        keyframe = is_keyframe(self.mime, frame.data)
        return _Frame(self.source, self.mime, frame.data, timestamp, keyframe, complete)


_CODECS = {
    mime: RTCRtpCodecParameters(mimeType=RTP_NAMES.get(mime, mime), clockRate=clock_rate)
    for mime, (_, clock_rate) in DECODERS.items()
}
"""What ``depayload`` needs to know of each codec."""


class _Camera:
    """One participant's video: a decoder and the pictures it gave, in arrival order."""

    def __init__(self, decoder: str, *, in_layout: bool = False) -> None:
        self.codec = decoder
        self.decoder = cast(av.VideoCodecContext, av.CodecContext.create(decoder, "r"))
        self.decoder.thread_count = 1  # frame threads would hold pictures back
        self.waiting_for_keyframe = True
        self.arrived: deque[tuple[float, av.VideoFrame]] = deque()
        self.picture: av.VideoFrame | None = None
        self.left_at: float | None = None
        self.in_layout = in_layout
        """Has a tile: has shown a picture."""
        self.shown_at = -math.inf  # when the picture shown arrived
        self.interval = 0.0  # the usual time between two pictures (a moving average)

    def decode(self, data: bytes, keyframe: bool, arrived: float) -> int:
        """Decode one frame; the number of decode errors (0 or 1)."""
        if self.waiting_for_keyframe:
            if not keyframe:
                return 0
            self.waiting_for_keyframe = False
        try:
            pictures = self.decoder.decode(av.Packet(data))
        except av.FFmpegError:
            self.waiting_for_keyframe = True  # what follows would only be worse
            return 1
        self.arrived.extend((arrived, picture) for picture in pictures)
        return 0

    def advance(self, at: float) -> None:
        """Show the latest picture that had arrived by ``at``."""
        while self.arrived and self.arrived[0][0] <= at:
            arrived, self.picture = self.arrived.popleft()
            if self.in_layout and self.shown_at > -math.inf:
                # A long gap (camera off for minutes) counts as 2 s: it is not the usual.
                since = min(arrived - self.shown_at, 2.0)
                self.interval += (since - self.interval) * 0.1
            self.shown_at = arrived
            self.in_layout = True

    def tile(self, at: float) -> av.VideoFrame | None:
        """What its tile shows at ``at``: its latest picture, or black (None) in a gap."""
        if at - self.shown_at > max(GAP_S, 3 * self.interval):
            return None
        return self.picture


class _Grid:
    """Pictures tiled on a black canvas: n tiles in ceil(sqrt(n)) columns; or, on a stage,
    the first picture large above a strip of the others."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.shown: list[av.VideoFrame | None] = []
        self.staged = False
        self.frame = self._paint([], stage=False)

    def compose(self, pictures: list[av.VideoFrame | None], stage: bool = False) -> av.VideoFrame:
        """The canvas with ``pictures`` in their cells (None: a black cell); with ``stage``,
        the first is the main tile."""
        # The encoder takes its own reference, so an unchanged canvas is sent again as it is.
        if (
            stage != self.staged
            or len(pictures) != len(self.shown)
            or any(a is not b for a, b in zip(pictures, self.shown, strict=True))
        ):
            self.frame = self._paint(pictures, stage)
            self.shown, self.staged = pictures, stage
        return self.frame

    def _paint(self, pictures: list[av.VideoFrame | None], stage: bool) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        planes = [_plane_array(plane) for plane in frame.planes]
        for plane, value in zip(planes, BLACK, strict=True):
            plane[:] = value
        cells = self.stage(len(pictures)) if stage else self.cells(len(pictures))
        for picture, cell in zip(pictures, cells, strict=True):
            if picture is None:
                continue
            x, y, w, h = _fit(picture, cell)
            tile = picture.reformat(width=w, height=h, format="yuv420p")
            for scale, plane, part in zip((1, 2, 2), planes, tile.planes, strict=True):
                pixels = _plane_array(part)
                top, left = y // scale, x // scale
                plane[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
        return frame

    def cells(self, count: int) -> list[tuple[int, int, int, int]]:
        """Where each of ``count`` pictures goes: x, y, width, height (all even)."""
        if count == 0:
            return []
        columns = math.ceil(math.sqrt(count))
        rows = math.ceil(count / columns)
        cell_w, cell_h = _even(self.width // columns), _even(self.height // rows)
        return [
            (column * cell_w, row * cell_h, cell_w, cell_h)
            for row, column in (divmod(i, columns) for i in range(count))
        ]

    def stage(self, count: int) -> list[tuple[int, int, int, int]]:
        """The main tile (the whole width, above the strip) and ``count - 1`` cells of 4:3
        at most, side by side and centred in the strip at the bottom."""
        if count == 0:
            return []
        strip = _even(self.height * STRIP)
        main = (0, 0, self.width, self.height - strip)
        others = count - 1
        if others == 0:
            return [main]
        cell_w = _even(min(self.width / others, strip * 4 / 3))
        left = _even((self.width - cell_w * others) / 2)
        return [main] + [
            (left + i * cell_w, self.height - strip, cell_w, strip) for i in range(others)
        ]


def _fit(picture: av.VideoFrame, cell: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The largest even rectangle of ``picture``'s shape centred in ``cell``."""
    x, y, w, h = cell
    scale = min(w / picture.width, h / picture.height)
    fit_w, fit_h = max(2, _even(picture.width * scale)), max(2, _even(picture.height * scale))
    return x + _even((w - fit_w) / 2), y + _even((h - fit_h) / 2), fit_w, fit_h


def _even(value: float) -> int:
    return int(value) // 2 * 2


def _plane_array(plane: VideoPlane) -> Plane:
    """A writable view of a plane's pixels, without the padding at the end of each line."""
    lines = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return lines[:, : plane.width]


class _Voice:
    """One participant's audio: a decoder, and where its timestamps fall on the timeline."""

    def __init__(self, decoder: str, clock_rate: int) -> None:
        self.decoder = cast(av.AudioCodecContext, av.CodecContext.create(decoder, "r"))
        # The decoder mixes a stereo voice down itself (and G.711 says nothing about itself).
        self.decoder.sample_rate = clock_rate
        self.decoder.layout = "mono"
        self.resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
        self.clock_rate = clock_rate
        self.first_timestamp: int | None = None
        self.anchor = 0.0
        self.last_offset = 0
        self.late_since: int | None = None

    def decode(self, data: bytes) -> Samples:
        frames = [
            resampled
            for decoded in self.decoder.decode(av.Packet(data))
            for resampled in self.resampler.resample(decoded)
        ]
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float32)

    def place(self, timestamp: int, arrival: int, *, earliest: int) -> int | None:
        """The sample where a frame with ``timestamp`` that arrived at ``arrival`` begins.

        None if that is before ``earliest``: the frame came too late to be heard.
        """
        if self.first_timestamp is None:
            self.first_timestamp = timestamp
            self.anchor = arrival
        offset = (timestamp - self.first_timestamp) * SAMPLE_RATE // self.clock_rate
        # Timestamps keep the voice continuous; the anchor ties them to arrival times, and
        # follows those too slowly to be heard (but faster than the sender's clock drifts).
        step = max(0, offset - self.last_offset) * CLOCK_DRIFT
        self.last_offset = offset
        self.anchor += max(-step, min(step, arrival - offset - self.anchor))
        at = round(self.anchor) + offset
        if at > arrival + SAMPLE_RATE:  # the timestamps jumped ahead
            return self._restart(offset, arrival)
        if at >= earliest:
            self.late_since = None
            return at
        if self.late_since is None:
            self.late_since = offset
        if offset - self.late_since < SAMPLE_RATE:
            return None  # held up on the way: lost, as it would be in a call
        return self._restart(offset, arrival)  # late for a second: the timestamps jumped back

    def _restart(self, offset: int, arrival: int) -> int:
        self.anchor, self.late_since = arrival - offset, None
        return arrival


class _Mix:
    """The sum of all voices from sample ``written`` (the first not encoded yet) on."""

    def __init__(self) -> None:
        self.written = 0
        self.pending: Samples = np.zeros(SAMPLE_RATE, np.float32)

    def add(self, at: int, samples: Samples) -> None:
        """Add ``samples`` from sample ``at`` on, less any part that was written already."""
        start = at - self.written
        if start < 0:
            samples, start = samples[-start:], 0
        end = start + samples.size
        self._hold(end)
        self.pending[start:end] += samples

    def _hold(self, count: int) -> None:
        if count > self.pending.size:
            grown = np.zeros(max(count, self.pending.size + SAMPLE_RATE), np.float32)
            grown[: self.pending.size] = self.pending
            self.pending = grown

    def take(self, count: int) -> Samples:
        """The next ``count`` samples, clipped, and silence where nobody spoke."""
        self._hold(count)
        taken = np.clip(self.pending[:count], -1.0, 1.0)
        self.pending = self.pending[count:]
        self.written += count
        return taken
