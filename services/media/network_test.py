"""Pre-call network tests: a short-lived connection that echoes a browser's media back.

A test is not a participant. It holds no seat, joins no room and is not part of the SFU: its
connection only sends back, decoded and encoded again by aiortc, what it receives on itself,
so nothing it carries can reach anyone else. It needs a test token (signaling's, audience
``NETWORK_TEST_AUDIENCE``; refused once the token's window has ended), is closed after
``network_test_max_s`` whatever happens, and counts against a per-address limit and a limit
on tests running at once on the node.

The node measures the uplink (browser to node) from its receivers' statistics: packets
received and lost, RFC 3550 jitter, the best one-second bitrate, and the round trip from the
browser's receiver reports of the echo. The browser measures the downlink from its own
``getStats()``; signaling puts both together (``docs/media.md``, ``docs/signaling.md``).
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    RTCStatsReport,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from contracts.network_test import (
    NETWORK_TEST_AUDIENCE,
    ProbeAction,
    ProbeHost,
    ProbeHostRequest,
    ProbeReply,
    ProbeSignal,
    Uplink,
)
from runtime.context import ServiceContext
from runtime.participant_tokens import ParticipantTokenError, verify
from runtime.ratelimit import RateLimiter
from services.media import metrics
from services.media.config import MediaSettings
from services.media.placement import Placement, least_loaded
from services.media.sfu import SignalRefused

log = structlog.get_logger(__name__)

CLOCK_RATES = {"audio": 48_000, "video": 90_000}
KEPT_S = 60.0
"""How long a finished test's figures wait for signaling to ask for them."""
SAMPLE_S = 1.0


async def probe_host(placement: Placement, request: ProbeHostRequest) -> ProbeHost:
    """The node that will host the room: its owner while that lives, else the node a
    placement would choose now (the least loaded live one). Nothing is placed."""
    owner = await placement.owner(request.room_id)
    if owner is not None and await placement.is_live(owner.node_id):
        card = placement.cards.get(owner.node_id)
        return ProbeHost(
            node_id=owner.node_id,
            media_url=card.public_url if card else None,
            placed=True,
            max_s=placement.settings.network_test_max_s,
        )
    besides = owner.node_id if owner else None
    card = least_loaded(placement.cards.values(), placement.clock(), placement.ttl, besides=besides)
    if card is None:
        await placement.reload()
        card = least_loaded(
            placement.cards.values(), placement.clock(), placement.ttl, besides=besides
        )
    if card is None:
        return ProbeHost(node_id=None, placed=False)
    return ProbeHost(
        node_id=card.node_id,
        media_url=card.public_url,
        placed=False,
        max_s=placement.settings.network_test_max_s,
    )


async def answer_host(
    placement_of: Callable[[ServiceContext], Awaitable[Placement]],
    ctx: ServiceContext,
    request: ProbeHostRequest,
) -> bytes:
    """``NETWORK_TEST_HOST_SUBJECT``: any node answers from its view of the cluster."""
    host = await probe_host(await placement_of(ctx), request)
    return host.model_dump_json().encode()


@dataclass(eq=False)
class Probe:
    """One test's connection."""

    test_id: UUID
    pc: RTCPeerConnection
    started: float
    connected_at: float | None = None
    ended_at: float | None = None
    peak_kbps: float = 0.0
    deadline: asyncio.TimerHandle | None = None
    sampler: asyncio.Task[None] | None = None
    figures: Uplink | None = None
    closing: asyncio.Future[Uplink] | None = None


@dataclass
class Probes:
    """The network tests running on this node, and the figures of those just finished."""

    settings: MediaSettings
    key: Callable[[], str]
    node_id: str
    running: dict[UUID, Probe] = field(default_factory=dict)
    finished: dict[UUID, tuple[float, Uplink]] = field(default_factory=dict)
    by_address: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.by_address = RateLimiter(
            s.network_tests_per_address_per_minute, s.network_tests_per_address_burst
        )

    async def answer(self, ctx: ServiceContext, signal: ProbeSignal) -> bytes:
        return (await self.handle(signal)).model_dump_json().encode()

    async def run(self, ctx: ServiceContext) -> None:
        """Background task: forget old figures; on stop, close every test connection."""
        try:
            while True:
                await asyncio.sleep(KEPT_S)
                self._forget_old()
        finally:
            await self.close_all()

    async def handle(self, signal: ProbeSignal) -> ProbeReply:
        """One step of a test (``probe_subject(node)``)."""
        try:
            match signal.action:
                case ProbeAction.offer:
                    try:
                        answer = await self._offer(signal)
                    except SignalRefused as refused:
                        metrics.network_tests.labels(self.node_id, refused.reason).inc()
                        raise
                    metrics.network_tests.labels(self.node_id, "started").inc()
                    return ProbeReply(ok=True, answer_sdp=answer)
                case ProbeAction.candidate:
                    await self._candidate(signal)
                    return ProbeReply(ok=True)
                case ProbeAction.finish:
                    return ProbeReply(ok=True, uplink=await self._finish(signal.test_id))
        except SignalRefused as refused:
            return ProbeReply(ok=False, reason=refused.reason, message=refused.message)
        return ProbeReply(ok=False, reason="invalid", message="Unknown action.")

    async def _offer(self, signal: ProbeSignal) -> str:
        self._check_token(signal)
        if signal.test_id in self.running or signal.test_id in self.finished:
            raise SignalRefused("test_used", "This test has run already; start another.")
        if not signal.sdp:
            raise SignalRefused("sdp_missing", "An offer needs its session description.")
        if len(self.running) >= self.settings.network_tests_at_once:
            raise SignalRefused("node_busy", "The video server is busy; try the test again soon.")
        if signal.client_address and self.by_address.retry_after(signal.client_address):
            raise SignalRefused("rate_limited", "Too many network tests from here; wait a minute.")
        pc = RTCPeerConnection(self._configuration())
        probe = Probe(signal.test_id, pc, time.monotonic())
        self.running[signal.test_id] = probe
        pc.on("track", lambda track: self._echo(pc, track))
        pc.on("connectionstatechange", lambda: self._state_changed(probe))
        loop = asyncio.get_running_loop()
        probe.deadline = loop.call_later(
            self.settings.network_test_max_s, lambda: self._spawn_close(probe)
        )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=signal.sdp, type="offer"))
            kinds = [t.kind for t in pc.getTransceivers()]
            if not kinds or len(kinds) > 2 or len(set(kinds)) != len(kinds):
                raise SignalRefused(
                    "sdp_invalid", "A network test sends at most one audio and one video track."
                )
            await pc.setLocalDescription(await pc.createAnswer())
        except SignalRefused:
            await self._close(probe)
            raise
        except Exception as exc:  # aiortc raises many kinds for an offer it cannot use
            await self._close(probe)
            log.info("network test offer refused", error=repr(exc))
            raise SignalRefused("sdp_invalid", "The test's media offer could not be used.") from exc
        probe.sampler = asyncio.create_task(self._sample(probe))
        log.info("network test started", test_id=str(signal.test_id))
        return unthrottled(pc.localDescription.sdp)

    def _check_token(self, signal: ProbeSignal) -> None:
        try:
            claims = verify(
                self.key(),
                signal.test_token,
                room_id=str(signal.room_id),
                node_id=self.node_id,
                audience=NETWORK_TEST_AUDIENCE,
            )
        except ParticipantTokenError as exc:
            raise SignalRefused("token_invalid", f"Network test refused: {exc}.") from exc
        if claims.sub != str(signal.test_id):
            raise SignalRefused("token_invalid", "Network test refused: the token is another's.")

    async def _candidate(self, signal: ProbeSignal) -> None:
        self._check_token(signal)
        probe = self.running.get(signal.test_id)
        if probe is None:
            raise SignalRefused("not_running", "This network test is not running.")
        if not signal.candidate:
            return
        try:
            parsed = candidate_from_sdp(signal.candidate.removeprefix("candidate:"))
            parsed.sdpMid = signal.sdp_mid
            parsed.sdpMLineIndex = signal.sdp_mline_index
            await probe.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise SignalRefused("candidate_invalid", "This ICE candidate cannot be used.") from exc

    async def _finish(self, test_id: UUID) -> Uplink:
        self._forget_old()
        probe = self.running.get(test_id)
        if probe is not None:
            return await self._close(probe)
        kept = self.finished.get(test_id)
        if kept is None:
            raise SignalRefused("unknown_test", "No such network test on this node.")
        return kept[1]

    def _configuration(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in self.settings.ice_servers
        ]
        return RTCConfiguration(iceServers=servers)

    def _echo(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        # Back on the transceiver it came on: only ever to the browser that sent it.
        pc.addTrack(track)

    def _state_changed(self, probe: Probe) -> None:
        state = probe.pc.connectionState
        if state == "connected" and probe.connected_at is None:
            probe.connected_at = time.monotonic()
        elif state in ("failed", "closed"):
            self._spawn_close(probe)

    async def _sample(self, probe: Probe) -> None:
        """The best one-second bitrate that reached the node."""
        last: tuple[float, int] | None = None
        while True:
            await asyncio.sleep(SAMPLE_S)
            received = _bytes_received(await probe.pc.getStats())
            now = time.monotonic()
            if last is not None and now > last[0]:
                kbps = (received - last[1]) * 8 / 1000 / (now - last[0])
                probe.peak_kbps = max(probe.peak_kbps, kbps)
            last = (now, received)

    def _spawn_close(self, probe: Probe) -> None:
        if probe.closing is None:
            probe.closing = asyncio.ensure_future(self._closed(probe))

    async def _close(self, probe: Probe) -> Uplink:
        self._spawn_close(probe)
        assert probe.closing is not None
        return await asyncio.shield(probe.closing)

    async def _closed(self, probe: Probe) -> Uplink:
        if probe.deadline is not None:
            probe.deadline.cancel()
        if probe.sampler is not None:
            probe.sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe.sampler
        now = time.monotonic()
        try:
            figures = _uplink(await probe.pc.getStats(), probe, now)
        except Exception:
            log.warning("network test figures not read", exc_info=True)
            figures = Uplink(packets_received=0, packets_lost=0, jitter_ms=0, peak_kbps=0)
        with contextlib.suppress(Exception):
            await probe.pc.close()
        self.running.pop(probe.test_id, None)
        self.finished[probe.test_id] = (now + KEPT_S, figures)
        log.info("network test ended", test_id=str(probe.test_id), s=round(now - probe.started, 1))
        return figures

    def _forget_old(self) -> None:
        now = time.monotonic()
        for test_id in [t for t, (until, _) in self.finished.items() if until <= now]:
            del self.finished[test_id]

    async def close_all(self) -> None:
        await asyncio.gather(
            *(self._close(p) for p in list(self.running.values())), return_exceptions=True
        )


START_KBPS = 1500
"""Where a browser's sender starts its estimate of the uplink (``x-google-start-bitrate``)."""
REMB = re.compile(r"a=rtcp-fb:\d+ goog-remb")
VIDEO_RTPMAP = re.compile(r"a=rtpmap:(\d+) (?:VP8|H264)/90000")
FMTP = re.compile(r"a=fmtp:(\d+) ")


def unthrottled(sdp: str) -> str:
    """The answer, so a browser sends what the path can carry, within the test's seconds.

    A browser's sender starts at 300 kbit/s and, with only a receiver's REMB to go by, climbs
    about 8% a second: 8 s would measure the ramp, not the network. So this answer offers no
    REMB (the browser adapts to loss alone) and asks the sender to start at 1.5 Mbit/s
    (``x-google-start-bitrate``, which Chromium reads from the remote description; other
    browsers ignore it)."""
    start = f"x-google-start-bitrate={START_KBPS}"
    lines = [line for line in sdp.split("\r\n") if not REMB.match(line)]
    video = {m.group(1) for line in lines if (m := VIDEO_RTPMAP.match(line))}
    with_fmtp = {m.group(1) for line in lines if (m := FMTP.match(line))}
    out: list[str] = []
    for line in lines:
        fmtp = FMTP.match(line)
        out.append(f"{line};{start}" if fmtp and fmtp.group(1) in video else line)
        rtpmap = VIDEO_RTPMAP.match(line)
        if rtpmap and rtpmap.group(1) not in with_fmtp:
            out.append(f"a=fmtp:{rtpmap.group(1)} {start}")
    return "\r\n".join(out)


def _bytes_received(report: RTCStatsReport) -> int:
    stats = report.values()
    return sum(getattr(s, "bytesReceived", 0) or 0 for s in stats if s.type == "transport")


def worst_track(report: RTCStatsReport) -> tuple[int, int, float]:
    """(received, lost) of the inbound track that lost the largest share (audio is never
    repaired, video's retransmissions hide part of its loss), and the jitter in ms: audio's
    where there is audio, as the packets of one video frame share a timestamp and leave in a
    burst, which reads as jitter nobody sees or hears."""
    worst = (0, 0)
    jitter_ms: dict[str, float] = {}
    for s in report.values():
        if s.type != "inbound-rtp":
            continue
        lost = max(0, s.packetsLost)
        if lost * (worst[0] + worst[1]) >= worst[1] * (s.packetsReceived + lost):
            worst = (s.packetsReceived, lost)
        ms = s.jitter * 1000 / CLOCK_RATES.get(s.kind, 90_000)
        jitter_ms[s.kind] = max(jitter_ms.get(s.kind, 0.0), ms)
    return worst[0], worst[1], jitter_ms.get("audio", jitter_ms.get("video", 0.0))


def _uplink(report: RTCStatsReport, probe: Probe, now: float) -> Uplink:
    received, lost, jitter_ms = worst_track(report)
    rtts = [
        s.roundTripTime * 1000
        for s in report.values()
        if s.type == "remote-inbound-rtp" and s.roundTripTime is not None
    ]
    connected = None if probe.connected_at is None else now - probe.connected_at
    return Uplink(
        packets_received=received,
        packets_lost=lost,
        jitter_ms=round(jitter_ms, 1),
        peak_kbps=round(probe.peak_kbps, 1),
        rtt_ms=round(min(rtts), 1) if rtts else None,
        connected_s=None if connected is None else round(connected, 1),
    )
