"""Where the headless peer (:mod:`antechamber.peer`) reaches into aiortc 1.16's private parts.

aiortc has no public way to watch RTP and RTCP as they arrive, to take encoded frames from a
receiver, to put a chosen audio level on packed (pre-encoded) audio, or to answer a keyframe
request for a track it does not encode. Everything that does so is here, and each hook fails
with :class:`IncompatibleAiortc` when the part it needs is gone, rather than silently doing
nothing after an upgrade:

- :func:`tap_receiver` replaces ``put`` on ``RTCRtpReceiver.__decoder_queue``, so complete
  encoded frames leave the jitter buffer to the peer (and to the decoder thread only if asked);
- :func:`on_keyframe_request` replaces ``RTCRtpSender._send_keyframe``, which aiortc calls when
  the other side sends PLI or FIR;
- :func:`start_encoder_at` sets ``RTCRtpSender.__encoder`` before the first frame;
- :func:`stamp_audio_level` wraps ``RTCRtpSender._next_encoded_frame`` and the ``set`` of the
  sender's own ``RTCRtpSender.__rtp_header_extensions_map``;
- :func:`watch_receiver` wraps ``RTCRtpReceiver._handle_rtp_packet``, ``_handle_rtcp_packet``
  and ``_send_rtcp_nack``, and reads ``RTCRtpReceiver.__codecs`` and ``__rtx_ssrc``;
- :func:`filter_datagrams` wraps ``RTCIceTransport._recv``, where the DTLS transport reads
  datagrams off the network, still SRTP-protected;
- :func:`filter_sent` wraps ``RTCIceTransport._send``, where it writes them, SRTP-protected;
- :func:`leave_out_rtx` filters ``RTCRtpTransceiver._codecs`` (what an answer offers back).
"""

import dataclasses
import queue
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiortc
from aiortc import (
    RTCDtlsTransport,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import is_rtx
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import AnyRtcpPacket, HeaderExtensions, RtpPacket

from services.media.aiortc_hooks import AIORTC_VERSION, IncompatibleAiortc
from services.media.keyframes import is_keyframe


def check_aiortc() -> None:
    """Fail at start, with the reason, if the installed aiortc is not the expected release."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise IncompatibleAiortc(
            f"aiortc {aiortc.__version__} is installed; antechamber.peer hooks into private "
            f"parts of aiortc {AIORTC_VERSION} (see antechamber/peer_hooks.py)"
        )


def _private(owner: object, name: str) -> Any:
    """``owner``'s private attribute ``name``, or :class:`IncompatibleAiortc`."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise IncompatibleAiortc(
            f"aiortc's {type(owner).__name__} has no {name} any more "
            "(see antechamber/peer_hooks.py)"
        ) from None


# --- Receiving ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete encoded frame as it left a receiver's jitter buffer."""

    codec: RTCRtpCodecParameters
    data: bytes
    timestamp: int
    """In the codec's clock (90 kHz for video, 48 kHz for Opus), starting near 0."""
    keyframe: bool
    arrived: float
    """``time.monotonic()`` when it was complete."""


FrameSink = Callable[[EncodedFrame], None]
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink, *, decode: bool = False) -> None:
    """Hand every complete encoded frame of ``receiver`` to ``sink`` instead of decoding it
    (or as well, with ``decode``: aiortc's decoder still gets it).

    ``sink`` runs in the event loop, inside aiortc's packet handling: it must not block.
    """
    decoder_queue: queue.Queue[Any] = _private(receiver, _DECODER_QUEUE)
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


@dataclass(frozen=True, slots=True)
class Arrival:
    """One RTP packet that reached a receiver, before aiortc handles it."""

    packet: RtpPacket
    rtx: bool
    """Its payload type is a negotiated RTX one (RFC 4588): a retransmission."""
    repairs: int | None = None
    """For RTX, the media SSRC aiortc will restore it to; None when aiortc does not know the
    RTX SSRC (no ``a=ssrc-group:FID`` for it) and drops it, or the payload is too short."""

    @property
    def original_sequence_number(self) -> int | None:
        """For RTX, the sequence number of the packet it repeats (the payload's first bytes)."""
        if not self.rtx or len(self.packet.payload) < 2:
            return None
        return int.from_bytes(self.packet.payload[:2], "big")


class ReceiverWatch(Protocol):
    """What :func:`watch_receiver` tells; all called in the event loop, and must not block."""

    def rtp(self, arrival: Arrival) -> None:
        """A packet arrived (after SRTP), before aiortc handles it."""
        ...

    def rtcp(self, packet: AnyRtcpPacket) -> None:
        """aiortc routed this RTCP packet (a sender report or a BYE) to the receiver."""
        ...

    def nack(self, media_ssrc: int, lost: list[int]) -> None:
        """aiortc is about to send a generic NACK for ``lost`` of ``media_ssrc``."""
        ...


def watch_receiver(receiver: RTCRtpReceiver, watch: ReceiverWatch) -> None:
    """Tell ``watch`` what reaches ``receiver`` (RTP before its jitter buffer, RTCP sent to it)
    and the NACKs it sends.

    Call it before the receiver starts (in the ``track`` event, aiortc starts receivers after).
    """
    # Filled in place by receive(), before the transport routes anything to the receiver.
    codecs: dict[int, RTCRtpCodecParameters] = _private(receiver, "_RTCRtpReceiver__codecs")
    rtx_ssrcs: dict[int, int] = _private(receiver, "_RTCRtpReceiver__rtx_ssrc")
    handle_rtp: Callable[[RtpPacket, int], Awaitable[None]] = _private(
        receiver, "_handle_rtp_packet"
    )
    handle_rtcp: Callable[[AnyRtcpPacket], Awaitable[None]] = _private(
        receiver, "_handle_rtcp_packet"
    )
    send_nack: Callable[[int, list[int]], Awaitable[None]] = _private(receiver, "_send_rtcp_nack")

    async def rtp_arrived(packet: RtpPacket, arrival_time_ms: int) -> None:
        codec = codecs.get(packet.payload_type)
        rtx = codec is not None and is_rtx(codec)
        repairs = rtx_ssrcs.get(packet.ssrc) if rtx and len(packet.payload) >= 2 else None
        watch.rtp(Arrival(packet, rtx, repairs))
        await handle_rtp(packet, arrival_time_ms)

    async def rtcp_arrived(packet: AnyRtcpPacket) -> None:
        watch.rtcp(packet)
        await handle_rtcp(packet)

    async def nack_sent(media_ssrc: int, lost: list[int]) -> None:
        watch.nack(media_ssrc, lost)
        await send_nack(media_ssrc, lost)

    receiver._handle_rtp_packet = rtp_arrived  # type: ignore[method-assign]
    receiver._handle_rtcp_packet = rtcp_arrived  # type: ignore[method-assign]
    receiver._send_rtcp_nack = nack_sent  # type: ignore[method-assign]


def filter_datagrams(transport: RTCDtlsTransport, keep: Callable[[bytes], bool]) -> None:
    """Throw away the datagrams ``transport`` receives for which ``keep`` says False, as the
    network could: before SRTP, so that the same packet may still come again.

    After SRTP it could not: libsrtp has recorded its index, and its replay check refuses a
    plain retransmission of it (only RTX, with its own SSRC and numbers, would get through).
    ``keep`` sees every datagram: DTLS, and SRTP or SRTCP whose headers are in the clear.
    """
    ice = transport.transport
    receive: Callable[[], Awaitable[bytes]] = _private(ice, "_recv")

    async def filtered() -> bytes:
        while True:
            data = await receive()
            if keep(data):
                return data

    ice._recv = filtered


def filter_sent(transport: RTCDtlsTransport, keep: Callable[[bytes], bool]) -> None:
    """Throw away the datagrams ``transport`` sends for which ``keep`` says False, as a lossy
    uplink would: after SRTP, so the receiver sees a gap, asks for it (NACK), and gets it again
    as RTX (the sender keeps its history). ``keep`` sees every datagram, as above."""
    ice = transport.transport
    send: Callable[[bytes], Awaitable[None]] = _private(ice, "_send")

    async def filtered(data: bytes) -> None:
        if keep(data):
            await send(data)

    ice._send = filtered


def leave_out_rtx(transceiver: RTCRtpTransceiver) -> None:
    """Take RTX out of what ``transceiver`` negotiated from a remote offer, before the answer.

    ``setCodecPreferences`` only shapes the next offer (and filters later remote offers by exact
    fmtp parameters, which a node need not repeat): the answer is made from ``_codecs``.
    """
    codecs: list[RTCRtpCodecParameters] = _private(transceiver, "_codecs")
    transceiver._codecs = [codec for codec in codecs if not is_rtx(codec)]


# --- Sending --------------------------------------------------------------------------------


def watch_sender(sender: RTCRtpSender, watch: Callable[[AnyRtcpPacket], None]) -> None:
    """Show ``watch`` the RTCP that arrives about what ``sender`` sends (receiver reports,
    REMB, NACK, PLI) before aiortc handles it as usual."""
    handle: Callable[[AnyRtcpPacket], Awaitable[None]] = _private(sender, "_handle_rtcp_packet")

    async def watched(packet: AnyRtcpPacket) -> None:
        watch(packet)
        await handle(packet)

    sender._handle_rtcp_packet = watched  # type: ignore[method-assign]


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the receiver behind ``sender`` asks for a keyframe (PLI or FIR)."""
    _private(sender, "_send_keyframe")
    sender._send_keyframe = callback  # type: ignore[method-assign]


def start_encoder_at(sender: RTCRtpSender, encoder: Encoder) -> None:
    """Make ``sender`` encode with ``encoder`` (e.g. one set to start at another bitrate).

    aiortc makes its encoder at the first frame unless one is there already (the private
    attribute set here); REMB from the other side moves its bitrate from there.
    """
    _private(sender, "_RTCRtpSender__encoder")
    sender._RTCRtpSender__encoder = encoder  # type: ignore[attr-defined]


AudioLevel = Callable[[], int]
"""The RFC 6464 byte for the frame just read from the track: voice activity in the top bit,
the level in -dBov (0 loudest, 127 silence) in the other seven."""


def stamp_audio_level(sender: RTCRtpSender, level: AudioLevel) -> None:
    """Put ``level()`` in the ssrc-audio-level header extension of every packet ``sender``
    sends, whether aiortc encodes the audio or only packs it.

    aiortc sets the extension only for audio it encodes, always as ``(False, measured)``: it
    writes ``(False, -frame.audio_level)`` for each packet of the :class:`RTCEncodedFrame` that
    ``_next_encoded_frame`` returns. So the wrapper of ``_next_encoded_frame`` puts the whole
    byte there, negated, right after the track gave the frame, and the wrapper of the sender's
    own header-extension map's ``set`` (only this sender serializes with it) unpacks that byte
    into ``(voice activity, level)`` when each packet is serialized. The byte is stored on the
    packet, so a retransmission of it (RTX shares the extensions) carries the same level.
    Without the extension in the answer aiortc writes nothing, as for any extension.
    """
    next_encoded_frame: Callable[[RTCRtpCodecParameters], Awaitable[RTCEncodedFrame | None]] = (
        _private(sender, "_next_encoded_frame")
    )
    extensions_map = _private(sender, "_RTCRtpSender__rtp_header_extensions_map")
    pack_extensions: Callable[[HeaderExtensions], tuple[int, bytes]] = extensions_map.set

    async def stamped(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        frame = await next_encoded_frame(codec)
        if frame is not None:
            frame.audio_level = -level()
        return frame

    def unpacked(values: HeaderExtensions) -> tuple[int, bytes]:
        if values.audio_level is not None:
            byte = values.audio_level[1]
            level_ = (bool(byte & 0x80), byte & 0x7F)
            values = dataclasses.replace(values, audio_level=level_)  # the packet keeps its byte
        return pack_extensions(values)

    sender._next_encoded_frame = stamped  # type: ignore[method-assign]
    extensions_map.set = unpacked
