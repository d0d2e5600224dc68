"""Every private part of aiortc 1.16 (and aioice) the packet path uses, in one place.

aiortc runs ICE, DTLS, SRTP and the signaling of each peer connection; the node forwards RTP
itself. aiortc has no public API for that, so this module reaches into its private parts and
:func:`check_aiortc` proves, when a node starts and in ``tests/media/test_aiortc_hooks.py``,
that each one is still there, so that an upgrade fails loudly instead of forwarding nothing:

- receiving: ``StunProtocol.datagram_received`` on each of the connection's sockets
  (``Connection._protocols``), with ``RTCDtlsTransport._rx_srtp`` to unprotect, so RTP never
  takes aioice's queue, aiortc's receive task or its jitter buffer; until DTLS is up, and for
  anything the socket hook does not take, ``RTCDtlsTransport._handle_rtp_data``;
- sending: ``RTCDtlsTransport._tx_srtp`` to protect (the C loop of ``_fastpath.c`` calls
  libsrtp's ``srtp_protect`` from pylibsrtp's binding on the session's ``_srtp`` context)
  and the nominated pair (``Connection._nominated``) to send on, by its socket's file
  descriptor, with no task or await; ``StunProtocol.connection_lost`` to stop using that
  descriptor before asyncio closes it;
- RTCP in: ``RTCRtpSender._handle_rtcp_packet`` (a subscriber's NACK, PLI, FIR, REMB, RR) and
  ``RTCRtpReceiver._handle_rtcp_packet`` (a publisher's SR);
- the idle sender: ``RTCRtpSender._run_rtp`` and ``_run_rtcp`` replaced by waits that set
  the sender's private start/exit events, so ``stop()`` still works;
- negotiated terms: ``RTCRtpTransceiver._codecs`` and ``_headerExtensions``; the SSRCs
  ``RTCRtpSender._ssrc``, ``_rtx_ssrc``, ``RTCRtpReceiver.__rtcp_ssrc`` and the CNAME.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
import pylibsrtp
import pylibsrtp._binding
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import is_rtx
from aiortc.rtp import AnyRtcpPacket

from services.media._fastpath import Outlet
from services.media.rtp import is_rtcp

AIORTC_VERSION = "1.16.0"
"""The aiortc release whose private parts this module relies on (pinned in pyproject)."""

RtpSink = Callable[[bytes, float], None]
"""Takes a decrypted RTP packet and its arrival (``time.monotonic()``)."""
RtcpHandler = Callable[[AnyRtcpPacket], Coroutine[Any, Any, None]]

CLASS_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (RTCDtlsTransport, "_handle_rtp_data"),
    (RTCDtlsTransport, "_handle_rtcp_data"),
    (RTCRtpSender, "_handle_rtcp_packet"),
    (RTCRtpSender, "_run_rtp"),
    (RTCRtpSender, "_run_rtcp"),
    (RTCRtpReceiver, "_handle_rtcp_packet"),
    (aioice.ice.StunProtocol, "datagram_received"),
    (aioice.ice.StunProtocol, "connection_lost"),
)
"""Methods replaced per object or called: each must exist on its class."""
INSTANCE_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("dtls", "_rx_srtp"),
    ("dtls", "_tx_srtp"),
    ("dtls", "transport"),
    ("ice", "_connection"),
    ("connection", "_nominated"),
    ("connection", "_protocols"),
    ("sender", "_ssrc"),
    ("sender", "_rtx_ssrc"),
    ("sender", "_RTCRtpSender__cname"),
    ("sender", "_RTCRtpSender__rtp_started"),
    ("sender", "_RTCRtpSender__rtp_exited"),
    ("sender", "_RTCRtpSender__rtcp_started"),
    ("sender", "_RTCRtpSender__rtcp_exited"),
    ("receiver", "_RTCRtpReceiver__rtcp_ssrc"),
    ("transceiver", "_codecs"),
    ("transceiver", "_headerExtensions"),
    ("srtp", "_srtp"),
)
"""Attributes aiortc sets in ``__init__``, read on live objects (object, attribute)."""


class IncompatibleAiortc(RuntimeError):
    """The installed aiortc is not the one the packet path was written for."""


def check_aiortc() -> None:
    """Fail at start, with the reason, if a hook would not hold (needs a running loop)."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise IncompatibleAiortc(
            f"aiortc {aiortc.__version__} is installed; the media node forwards RTP through "
            f"private parts of aiortc {AIORTC_VERSION} only (see services/media/aiortc_hooks.py)"
        )
    for owner, name in CLASS_ATTRIBUTES:
        if not callable(vars(owner).get(name)):  # its own, not one a base class has
            raise IncompatibleAiortc(f"aiortc has no {owner.__name__}.{name}")
    if not callable(getattr(pylibsrtp._binding.lib, "srtp_protect", None)):
        raise IncompatibleAiortc("pylibsrtp's binding has no srtp_protect")
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="sendonly")
    dtls = transceiver.sender.transport
    objects: dict[str, Any] = {
        "dtls": dtls,
        "ice": dtls.transport,
        "connection": getattr(dtls.transport, "_connection", None),
        "sender": transceiver.sender,
        "receiver": transceiver.receiver,
        "transceiver": transceiver,
        "srtp": pylibsrtp.Session(),
    }
    for owner_name, name in INSTANCE_ATTRIBUTES:
        owner = objects[owner_name]
        if owner is None or not hasattr(owner, name):
            raise IncompatibleAiortc(f"aiortc's {owner_name} object has no attribute {name}")


# -- terms a transceiver negotiated ---------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """What one m-line uses for sending or receiving, after an answer."""

    mid: str
    codecs: dict[int, RTCRtpCodecParameters]
    """Media codecs by payload type (not RTX)."""
    rtx: dict[int, int]
    """RTX payload type -> the payload type it repairs."""
    extensions: dict[str, int]
    """Header extension URI -> id."""

    def payload_type(self, mime_type: str) -> int | None:
        return next((pt for pt, c in self.codecs.items() if c.mimeType.lower() == mime_type), None)

    def rtx_for(self, payload_type: int) -> int | None:
        return next((rtx for rtx, apt in self.rtx.items() if apt == payload_type), None)

    def feedback(self, payload_type: int, kind: str) -> bool:
        """Whether the codec was negotiated with this RTCP feedback (e.g. ``nack``)."""
        codec = self.codecs.get(payload_type)
        return codec is not None and any(
            f.type == kind and not f.parameter for f in codec.rtcpFeedback
        )


def negotiated(transceiver: RTCRtpTransceiver) -> Negotiated | None:
    """The transceiver's negotiated terms; None before it has any."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    if transceiver.mid is None or not codecs:
        return None
    media: dict[int, RTCRtpCodecParameters] = {}
    rtx: dict[int, int] = {}
    for codec in codecs:
        if codec.payloadType is None:
            continue
        if is_rtx(codec):
            apt = codec.parameters.get("apt")
            if isinstance(apt, int):
                rtx[codec.payloadType] = apt
        else:
            media[codec.payloadType] = codec
    extensions = {x.uri: x.id for x in transceiver._headerExtensions}
    return Negotiated(transceiver.mid, media, rtx, extensions)


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The media and RTX SSRCs aiortc announced for ``sender`` in the SDP."""
    return sender._ssrc, sender._rtx_ssrc


def sender_cname(sender: RTCRtpSender) -> str:
    cname: str | None = sender._RTCRtpSender__cname  # type: ignore[attr-defined]
    return cname or ""


def receiver_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC the node's RTCP about ``receiver``'s stream goes out under."""
    ssrc: int | None = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
    return ssrc


# -- the idle sender ------------------------------------------------------------------------


def idle_sender(sender: RTCRtpSender) -> None:
    """Keep aiortc's own RTP and RTCP loops of ``sender`` from running: the node sends its
    packets and its sender reports itself. ``stop()`` still finds the events it waits for."""

    async def idle(started: str, exited: str) -> None:
        getattr(sender, started).set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass
        finally:
            getattr(sender, exited).set()

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        await idle("_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited")

    async def run_rtcp() -> None:
        await idle("_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")

    sender._run_rtp = run_rtp  # type: ignore[method-assign]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]


def on_sender_rtcp(sender: RTCRtpSender, handler: RtcpHandler) -> None:
    """RTCP about what ``sender`` sends (NACK, PLI, FIR, REMB, RR) goes to ``handler``."""
    sender._handle_rtcp_packet = handler  # type: ignore[method-assign,assignment]


def on_receiver_rtcp(receiver: RTCRtpReceiver, handler: RtcpHandler) -> None:
    """RTCP about what ``receiver`` gets (the publisher's SR, BYE) goes to ``handler``."""
    receiver._handle_rtcp_packet = handler  # type: ignore[method-assign,assignment]


# -- the wire -------------------------------------------------------------------------------


class Wire:
    """One peer connection's socket side: decrypted RTP in, protected RTP and RTCP out.

    Built as soon as the connection has its sockets (after the local description): from then
    on every SRTP packet is taken in the socket's callback, in the order it came, once DTLS
    has made the SRTP sessions (before that, aiortc drops them). Sending starts when DTLS is
    done and ICE has a nominated pair: RTP through :attr:`outlet` (protected and sent in C,
    on the pair's socket), or, on a TURN relay of the node's, protected there and handed to
    aioice. ``open`` turns False for good when the connection closes: nothing is sent on, or
    taken from, a closed connection. The outlet closes before the socket does (the socket's
    ``connection_lost`` comes first) and before the connection's SRTP session goes.
    """

    def __init__(self, pc: RTCPeerConnection, receive: RtpSink) -> None:
        self._dtls = _bundled_transport(pc)
        self._receive = receive
        self._hooked: list[tuple[Any, str, Any]] = []
        self.open = True
        self.relayed = 0
        self.unprotect_failures = 0
        self._connection: aioice.Connection = self._dtls.transport._connection
        self.outlet = Outlet()
        self._way: tuple[Callable[[bytes, Any], None], pylibsrtp.Session, Any] | None = None
        """sendto on the nominated pair in Python (RTCP; RTP over a relay), the session, the
        address."""
        self._take_over_receiving()

    @property
    def sent(self) -> int:
        return self.outlet.sent + self.relayed

    def refresh(self) -> bool:
        """Send on the connection's nominated pair (it may change after a consent failure),
        protected with its SRTP session; False while either is missing, or once closed."""
        self.outlet.close()
        self._way = None
        pair = self._connection._nominated.get(1)
        tx: pylibsrtp.Session | None = self._dtls._tx_srtp
        if not self.open or pair is None or tx is None:
            return False
        protocol = pair.protocol
        relayed = not isinstance(protocol, aioice.ice.StunProtocol)  # a TURN allocation's
        if not relayed and protocol.transport.is_closing():
            return False  # lost: nothing to send on until ICE finds another pair
        self.outlet.protect_with(srtp_context(tx), SRTP_PROTECT, tx)
        if relayed:  # aioice's own (async) way
            sendto = _scheduled(protocol.send_data)
        else:
            sendto = protocol.transport.sendto
            host, port = pair.remote_addr[:2]
            with contextlib.suppress(ValueError, OSError):  # e.g. a scoped IPv6 address
                socket = protocol.transport.get_extra_info("socket")
                self.outlet.send_on(socket.fileno(), host, port)
        self._way = (sendto, tx, pair.remote_addr)
        return True

    def send_rtp(self, packet: bytes) -> None:
        outlet = self.outlet
        if not outlet.sending and self._way is None:
            self.refresh()
        if outlet.sending:
            outlet.send(packet)
        elif self._way is not None:  # no socket of its own for the C loop: a relay
            sendto, _, address = self._way
            sendto(outlet.protect(packet), address)
            self.relayed += 1

    def send_rtcp(self, packet: bytes) -> None:
        if self._way is None and not self.refresh():
            return
        way = self._way
        assert way is not None
        sendto, tx, address = way
        sendto(tx.protect_rtcp(packet), address)

    def close(self) -> None:
        self.open = False
        self.outlet.close()
        self._way = None
        for protocol, name, original in self._hooked:
            setattr(protocol, name, original)
        self._hooked.clear()

    def _take_over_receiving(self) -> None:
        for protocol in list(self._connection._protocols):
            if isinstance(protocol, aioice.ice.StunProtocol):
                self._hook(protocol, "datagram_received", self._datagram)
                self._hook(protocol, "connection_lost", self._lost)

    def _hook(self, protocol: Any, name: str, wrap: Callable[[Any], Any]) -> None:
        original = getattr(protocol, name)
        setattr(protocol, name, wrap(original))
        self._hooked.append((protocol, name, original))

    def _lost(self, original: Callable[[Exception | None], None]) -> Callable[..., None]:
        def connection_lost(exc: Exception | None) -> None:
            # Called before asyncio closes the socket: the C loop stops using its number now
            # (it could be given to another socket next), and finds the next pair, if any.
            self.outlet.close()
            self._way = None
            original(exc)

        return connection_lost

    def _datagram(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        dtls = self._dtls
        receive = self._receive
        monotonic = time.monotonic

        def datagram_received(data: bytes, addr: Any) -> None:
            # SRTP (first byte 128-191) that is not SRTCP: ours once DTLS made the session;
            # DTLS, STUN, RTCP: aiortc's.
            rx = dtls._rx_srtp
            if rx is not None and self.open and 127 < data[0] < 192 and not 191 < data[1] < 224:
                try:
                    plain = rx.unprotect(data)
                except pylibsrtp.Error:
                    self.unprotect_failures += 1
                    return
                receive(plain, monotonic())
                return
            original(data, addr)

        return datagram_received


def srtp_context(session: pylibsrtp.Session) -> int:
    """The address of a pylibsrtp session's libsrtp context (``srtp_t``)."""
    return int(pylibsrtp._binding.ffi.cast("uintptr_t", session._srtp[0]))


SRTP_PROTECT = int(
    pylibsrtp._binding.ffi.cast(
        "uintptr_t", pylibsrtp._binding.ffi.addressof(pylibsrtp._binding.lib, "srtp_protect")
    )
)
"""The address of libsrtp's ``srtp_protect`` in pylibsrtp's binding, for the C loop."""


def on_rtp(pc: RTCPeerConnection, receive: RtpSink) -> None:
    """Decrypted RTP that reaches aiortc's DTLS transport (before the :class:`Wire` takes the
    sockets over, or through a TURN relay) goes to ``receive`` instead of aiortc's receivers."""
    dtls = _bundled_transport(pc)

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        if not is_rtcp(data):
            receive(data, time.monotonic())

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]


def _scheduled(send: Callable[[bytes, Any], Awaitable[None]]) -> Callable[[bytes, Any], None]:
    pending: set[asyncio.Task[None]] = set()

    def sendto(data: bytes, address: Any) -> None:
        task = asyncio.ensure_future(send(data, address))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return sendto


def _bundled_transport(pc: RTCPeerConnection) -> RTCDtlsTransport:
    """The connection's one DTLS transport (the node bundles every m-line on it)."""
    transport: RTCDtlsTransport = pc.getTransceivers()[0].receiver.transport
    return transport
