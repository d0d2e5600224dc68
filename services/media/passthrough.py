"""Forwarding encoded frames with aiortc 1.16, without decoding or re-encoding.

aiortc decodes every track it receives and encodes every track it sends. It has a supported
way to *send* encoded data (a track whose ``recv()`` returns an :class:`av.Packet` is packed,
not encoded), but none to *receive* it. Everything here that reaches into aiortc's private
parts is in this module, checked by :func:`check_aiortc` when a node starts and by
``tests/media/test_passthrough.py``, so that an upgrade fails loudly instead of silently
decoding again:

- :func:`tap_receiver` replaces ``put`` on the receiver's private decoder queue
  (``RTCRtpReceiver.__decoder_queue``), so complete encoded frames leave the jitter buffer to
  us and the decoder thread only ever sees the end-of-stream marker;
- :func:`on_keyframe_request` replaces ``RTCRtpSender._send_keyframe``, which aiortc calls
  when a subscriber sends PLI or FIR and which only matters on the encode path;
- :func:`request_keyframe` sends a PLI upstream with ``RTCRtpReceiver._send_rtcp_pli``.
"""

import asyncio
import fractions
import functools
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiortc
import av
from aiortc import MediaStreamTrack, RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

AIORTC_VERSION = "1.16.0"
"""The aiortc release whose private parts this module relies on (pinned in pyproject)."""
_QUEUE = "_RTCRtpReceiver__decoder_queue"


class IncompatibleAiortc(RuntimeError):
    """The installed aiortc is not the one the forwarding hooks were written for."""


def check_aiortc() -> None:
    """Fail at start, with the reason, if the hooks would not hold."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise IncompatibleAiortc(
            f"aiortc {aiortc.__version__} is installed; the media node forwards encoded "
            f"frames through private hooks of aiortc {AIORTC_VERSION} only "
            "(see services/media/passthrough.py)"
        )
    for owner, name in (
        (RTCRtpSender, "_send_keyframe"),
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpReceiver, "getSynchronizationSources"),
    ):
        if not callable(getattr(owner, name, None)):
            raise IncompatibleAiortc(f"aiortc has no {owner.__name__}.{name}")


@dataclass(frozen=True)
class EncodedFrame:
    """One complete encoded frame as it left a receiver's jitter buffer."""

    codec: RTCRtpCodecParameters
    data: bytes
    timestamp: int
    """In the codec's clock (90 kHz for video, 48 kHz for Opus), starting near 0."""
    keyframe: bool
    arrived: float
    """``time.monotonic()`` when it was complete."""

    @functools.cached_property
    def packet(self) -> "av.Packet[Any]":
        """One packet for every subscriber (senders only read it)."""
        packet = av.Packet(self.data)
        packet.pts = self.timestamp
        packet.dts = self.timestamp
        packet.time_base = fractions.Fraction(1, self.codec.clockRate)
        return packet


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether a depayloaded frame starts a picture that decodes on its own."""
    kind = mime_type.lower()
    if kind == "video/vp8":
        # RFC 6386 9.1: the first bit of the frame tag is 0 for a key frame.
        return bool(data) and not data[0] & 0x01
    if kind == "video/h264":
        return any(nal_type in (5, 7) for nal_type in _h264_nal_types(data))
    return True  # audio: every frame stands alone


def _h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types of an Annex B stream (as aiortc's H.264 depayloader writes it)."""
    types = []
    start = data.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(data):
        types.append(data[start + 3] & 0x1F)
        start = data.find(b"\x00\x00\x01", start + 3)
    return types


FrameSink = Callable[[EncodedFrame], None]


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink, *, decode: bool = False) -> None:
    """Hand every complete encoded frame of ``receiver`` to ``sink`` instead of decoding it
    (or as well, with ``decode``: aiortc's decoder still gets it).

    ``sink`` runs in the event loop, inside aiortc's packet handling: it must not block.
    """
    decoder_queue: queue.Queue[Any] = getattr(receiver, _QUEUE)
    put = decoder_queue.put

    def tapped(item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # end of stream: lets the (idle) decoder thread finish
            put(None)
            return
        codec, frame = item
        sink(
            EncodedFrame(
                codec=codec,
                data=frame.data,
                timestamp=frame.timestamp,
                keyframe=is_keyframe(codec.mimeType, frame.data),
                arrived=time.monotonic(),
            )
        )
        if decode:
            put(item)

    decoder_queue.put = tapped  # type: ignore[method-assign]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the subscriber behind ``sender`` asks for a keyframe."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI for every source ``receiver`` has heard from (no-op before the first)."""
    for source in receiver.getSynchronizationSources():
        task = asyncio.ensure_future(receiver._send_rtcp_pli(source.source))
        _sending.add(task)
        task.add_done_callback(_sending.discard)


_sending: set["asyncio.Future[None]"] = set()


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a publisher's track: encoded frames as :class:`av.Packet`.

    A video track holds frames back until a keyframe (a subscriber that starts mid-picture
    only gets decode errors) and asks for one through ``want_keyframe``. A subscriber that
    does not keep up loses its oldest frames, and video waits for the next keyframe.
    """

    def __init__(self, kind: str, want_keyframe: Callable[[], None], depth: int = 64) -> None:
        super().__init__()
        self.kind = kind
        self._want_keyframe = want_keyframe
        self._queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue(depth)
        self.waiting_for_keyframe = kind == "video"
        self.forwarded = 0
        self.dropped = 0

    def push(self, frame: EncodedFrame) -> None:
        if self.readyState != "live":
            return
        if self.waiting_for_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return
            self.waiting_for_keyframe = False
        if self._queue.full():
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            if self.kind == "video" and not frame.keyframe:
                self.waiting_for_keyframe = True
                self._want_keyframe()
                return
        self._queue.put_nowait(frame)

    async def recv(self) -> "av.Packet[Any]":
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        self.forwarded += 1
        return frame.packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
