"""The pre-call network test on a browser's socket: a link checked as for a join, the media
node that will host the call found, a test token minted, the browser's offer relayed to that
node, and the verdict made from both ends' figures when the browser reports.

Who measures what: the node, the uplink (what reached it of the browser's media: loss,
jitter, best one-second bitrate, and the round trip from the browser's RTCP reports); the
browser, the downlink (what came back of the node's echo) and the round trip of its selected
ICE candidate pair. Signaling judges them (:mod:`network_verdict`), so every front end gets
the same verdict for the same figures.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import structlog

from contracts.media import SignalKind
from contracts.network_test import (
    NETWORK_TEST_AUDIENCE,
    NETWORK_TEST_HOST_SUBJECT,
    ProbeAction,
    ProbeHost,
    ProbeHostRequest,
    ProbeReply,
    ProbeSignal,
    Uplink,
    probe_subject,
)
from contracts.signaling_protocol import (
    Error,
    NetworkTest,
    NetworkTestReady,
    NetworkTestReport,
    NetworkTestResult,
    Refused,
    Signal,
)
from runtime.participant_tokens import mint
from runtime.ratelimit import RateLimiter
from services.signaling.connection import Connection
from services.signaling.joining import Joining, call_role
from services.signaling.network_verdict import Figures, judge
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats, Unavailable

log = structlog.get_logger(__name__)

REPORT_GRACE_S = 10.0
"""After the node has closed the test's connection, how long the browser has to report."""
STATUS = {"rate_limited": 429, "node_busy": 503}


@dataclass
class NetworkTestRun:
    """A test under way on one socket."""

    test_id: UUID
    room_id: UUID
    node_id: str
    token: str
    deadline: float
    """Loop time by which the browser must have reported (else the socket is closed)."""
    offered: bool = False


class NetworkTests:
    def __init__(self, replica: Replica, seats: MediaSeats, joining: Joining) -> None:
        self.replica = replica
        self.seats = seats
        self.joining = joining
        s = replica.settings
        self.by_address = RateLimiter(
            s.network_tests_per_address_per_minute, s.network_tests_per_address_burst
        )

    async def start(self, conn: Connection, message: NetworkTest) -> None:
        """``network_test``: the link may join now, the node is found, the browser may offer."""
        wait = self.by_address.retry_after(conn.address)
        if wait is not None:
            seconds = max(1, round(wait))
            self._refuse(
                conn,
                Refused(
                    reason="rate_limited",
                    status=429,
                    message=f"Too many network tests from here; wait {seconds} seconds.",
                    retry_after_s=wait,
                ),
            )
            return
        decision = await self.joining.allowed(conn, message)
        if decision is None:
            return  # refused, and told why
        room_id = decision.room_id or decision.session_id
        if room_id is None or decision.clinic_id is None:
            self._refuse(conn, Refused(reason="unknown", status=404, message=decision.message))
            return
        try:
            host = await self.seats.ask(
                NETWORK_TEST_HOST_SUBJECT,
                ProbeHostRequest(clinic_id=decision.clinic_id, room_id=room_id),
                ProbeHost,
            )
        except Unavailable as exc:
            self._refuse(conn, Refused(reason=exc.code, status=503, message=exc.detail))
            return
        if host.node_id is None:
            message_text = "No video server can take this call right now; try again in a minute."
            self._refuse(conn, Refused(reason="no_capacity", status=503, message=message_text))
            return
        s = self.replica.settings
        test_id = uuid4()
        role = call_role(decision)
        token, expires = mint(
            self.replica.key,
            participant_id=str(test_id),
            room_id=str(room_id),
            clinic_id=decision.clinic_id,
            role=role,
            node_id=host.node_id,
            ttl_s=s.network_test_window_s,
            audience=NETWORK_TEST_AUDIENCE,
        )
        now = asyncio.get_running_loop().time()
        deadline = now + s.network_test_window_s + host.max_s + REPORT_GRACE_S
        conn.network_test = NetworkTestRun(test_id, room_id, host.node_id, token, deadline)
        conn.send(
            NetworkTestReady(
                test_id=test_id,
                media_node=host.node_id,
                placed=host.placed,
                duration_s=s.network_test_duration_s,
                max_s=host.max_s,
                expires_at=datetime.fromtimestamp(expires, UTC),
            )
        )

    async def step(self, conn: Connection, message: Signal | NetworkTestReport) -> None:
        run = conn.network_test
        assert run is not None
        if isinstance(message, NetworkTestReport):
            await self._report(conn, run, message)
        elif message.kind is SignalKind.offer:
            if run.offered:
                conn.send(Error(code="test_offered", message="This test has its offer already."))
                return
            run.offered = True
            reply = await self._ask(conn, run, ProbeAction.offer, message)
            if not reply.ok:
                status = STATUS.get(reply.reason or "", 400)
                refusal = Refused(
                    reason=reply.reason or "refused", status=status, message=reply.message
                )
                self._refuse(conn, refusal)
                return
            conn.send(Signal(kind=SignalKind.answer, sdp=reply.answer_sdp))
        elif message.kind is SignalKind.candidate:
            reply = await self._ask(conn, run, ProbeAction.candidate, message)
            if not reply.ok:
                conn.send(Error(code=reply.reason or "candidate_invalid", message=reply.message))
        elif message.kind is SignalKind.bye:
            await self.abandoned(conn)
            conn.close()
        else:
            conn.send(Error(code="no_offer", message="A network test has no offer to answer."))

    async def _ask(
        self, conn: Connection, run: NetworkTestRun, action: ProbeAction, message: Signal
    ) -> ProbeReply:
        request = ProbeSignal(
            test_id=run.test_id,
            room_id=run.room_id,
            test_token=run.token,
            client_address=conn.address[:64],
            action=action,
            sdp=message.sdp,
            candidate=message.candidate,
            sdp_mid=message.sdp_mid,
            sdp_mline_index=message.sdp_mline_index,
        )
        return await self.seats.ask(probe_subject(run.node_id), request, ProbeReply)

    async def _report(
        self, conn: Connection, run: NetworkTestRun, report: NetworkTestReport
    ) -> None:
        uplink = await self._finish(run)
        down = report.downlink
        flowed = (uplink is not None and uplink.packets_received > 0) or (
            down is not None and down.packets_received > 0
        )
        connected = flowed and (report.connected or bool(uplink and uplink.connected_s))
        rtt = report.rtt_ms if report.rtt_ms is not None else (uplink.rtt_ms if uplink else None)
        judged = judge(
            Figures(
                connected=connected,
                rtt_ms=rtt,
                uplink_loss=uplink.loss if uplink and uplink.packets_received else None,
                downlink_loss=down.loss if down and down.packets_received else None,
                uplink_jitter_ms=uplink.jitter_ms if uplink else None,
                downlink_jitter_ms=down.jitter_ms if down else None,
                uplink_kbps=uplink.peak_kbps if uplink else None,
            )
        )
        conn.network_test = None
        log.info("network test judged", verdict=judged.verdict.value, reasons=judged.reasons)
        conn.send(
            NetworkTestResult(
                verdict=judged.verdict,
                headline=judged.headline,
                advice=judged.advice,
                reasons=judged.reasons,
                rtt_ms=rtt,
                uplink=uplink,
                downlink=down,
                relayed=report.relayed,
            )
        )
        conn.close()

    async def _finish(self, run: NetworkTestRun) -> Uplink | None:
        """The node's figures (the test's connection closes now if it had not yet)."""
        try:
            reply = await self.seats.ask(
                probe_subject(run.node_id),
                ProbeSignal(
                    test_id=run.test_id,
                    room_id=run.room_id,
                    test_token=run.token,
                    action=ProbeAction.finish,
                ),
                ProbeReply,
            )
        except Unavailable:
            return None
        return reply.uplink if reply.ok else None

    async def abandoned(self, conn: Connection) -> None:
        """The socket went before the report: end the test on the node now."""
        run, conn.network_test = conn.network_test, None
        if run is not None and run.offered:
            await self._finish(run)

    def _refuse(self, conn: Connection, refused: Refused) -> None:
        conn.network_test = None
        conn.send(refused)
        conn.close()
