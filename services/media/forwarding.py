"""The packet path: each RTP packet a publisher sends, rewritten once per subscriber.

An :class:`Upstream` is one track as the node receives it; a :class:`Downstream` is that
track going to one subscriber, on the m-line the node negotiated with them. For each packet
the upstream parses the header once and each downstream writes its own copy: its SSRC,
payload type, sequence number and timestamp (offsets from the publisher's), its header
extensions (its own ids, its ``mid``, the speaker's level, a fresh abs-send-time), and the
publisher's payload as it came. The copy is protected with the subscriber's SRTP session and
sent on their nominated ICE pair at once: no jitter buffer, no depacketizing, no queue or
task per subscriber.

A downstream's identity (SSRC, continuous sequence numbers and timestamps) belongs to the
subscriber's m-line, not to the publisher: when it is bound to another upstream (the
publisher reconnected) or a gated voice resumes, the offsets are moved so the subscriber
sees one stream. Video is held back from a new or rebound downstream until a keyframe.
"""

import itertools
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.media._fastpath import Copy, Outlet, fan_out
from services.media.keyframes import KeyframeTest
from services.media.receiving import ReceiveStats, newer
from services.media.rtp import (
    ABS_SEND_TIME,
    AUDIO_LEVEL,
    HEADER,
    MID,
    ExtensionWriter,
    RtpView,
    abs_send_time,
    audio_level,
)

HISTORY = 512
"""Packets of each video upstream kept to answer NACKs (about 5 s at 300 kbit/s)."""
RESEND_GAP_S = 0.1
"""One sequence number is resent to one subscriber at most this often..."""
RESEND_TRIES = 3
"""...and at most this many times."""
CATCH_UP = 64
"""Packets after a keyframe's first that a new copy may be sent from the history at once."""
RESENDS_PER_S = 200
"""What one subscriber may ask to be resent per second on one track, at most."""
NTP_EPOCH_OFFSET = 2208988800
UNKNOWN_LEVEL = 70
"""The level (-dBov) assumed for audio that carries none: it may speak, below real voices."""
_epochs = itertools.count(1)

RequestKeyframe = Callable[[], None]


class PacketSink(Protocol):
    """Where a subscriber's copies go: its connection's :class:`~aiortc_hooks.Wire`, whose
    ``outlet`` the C loop sends on (None: every copy goes through ``send_rtp``)."""

    @property
    def outlet(self) -> Outlet | None: ...

    def send_rtp(self, packet: bytes) -> None: ...


RecordPacket = Callable[[bytes, bool, float], None]


def ntp_now() -> int:
    """The wall clock as a 64-bit NTP timestamp."""
    now = time.time()
    seconds = int(now)
    return ((seconds + NTP_EPOCH_OFFSET) << 32) | int((now - seconds) * (1 << 32))


@dataclass(eq=False)
class Upstream:
    """One track a participant publishes, as the node receives it."""

    kind: str
    mime_type: str
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None
    level_id: int | None
    """The publisher's id for ssrc-audio-level, if negotiated."""
    keyframe_test: KeyframeTest | None
    nack: bool
    """The publisher takes NACKs for this track."""
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    downstreams: list["Downstream"] = field(default_factory=list)
    epoch: int = field(default_factory=lambda: next(_epochs))
    forwarding: bool = True
    """False while the loudest-speakers gate holds this voice back."""
    muted: bool = False
    """A host muted this voice: it is neither heard by the gate, nor recorded, nor
    forwarded, until :meth:`unmute`."""
    stats: ReceiveStats = field(init=False)
    history: list[RtpView | None] = field(init=False)
    received: int = 0
    repaired: int = 0
    """Of ``received``: retransmissions (RTX) that filled a gap."""
    last_packet_at: float = field(default_factory=time.monotonic)
    sender_report: tuple[int, int, float] | None = None
    """The publisher's latest SR: (NTP time, RTP timestamp, our monotonic arrival)."""
    request_keyframe: RequestKeyframe = lambda: None
    record: RecordPacket | None = None
    """Set while the room is recorded: takes (packet, keyframe start, arrival)."""
    heard: Callable[[bool, int, float], None] | None = None
    """Set for audio: takes (voice activity, level, arrival)."""

    def __post_init__(self) -> None:
        self.stats = ReceiveStats(self.clock_rate)
        self.history = [None] * HISTORY if self.kind == "video" else []

    def receive(self, view: RtpView, data: bytes, now: float) -> bool:
        """One packet from the publisher; True if it revealed a gap worth a NACK."""
        self.received += 1
        self.last_packet_at = now
        gap = self.stats.add(view.sequence, view.timestamp, now)
        keyframe = self.keyframe_test is not None and self.keyframe_test(view.payload)
        if self.history:
            self.history[view.sequence % HISTORY] = view
        if self.muted:
            return gap and self.nack
        if self.level_id is not None:
            level = view.extensions.get(self.level_id)
            if level:
                view.level = level[:1]
            if self.heard is not None:
                # A sender that does not say how loud it is is heard as a quiet voice.
                activity, value = audio_level(level) if level else (True, UNKNOWN_LEVEL)
                self.heard(activity, value, now)
        if self.record is not None:
            self.record(data, keyframe, now)
        if self.forwarding and self.downstreams:
            sent_at = abs_send_time(ntp_now())
            # Copies in steady state go out in C; the rest (waiting for a keyframe, to be
            # rebased, or with no socket of their own to send on) come back to Python.
            rest = fan_out(
                self.downstreams,
                self.epoch,
                view.first,
                view.marker,
                view.sequence,
                view.timestamp,
                view.csrc,
                view.payload,
                sent_at,
                view.level,
                now,
            )
            for downstream in rest or ():
                downstream.forward(view, keyframe, sent_at, now)
        return gap and self.nack

    def hold(self) -> None:
        """The gate closed: nothing is forwarded until :meth:`resume`."""
        self.forwarding = False

    def resume(self) -> None:
        """The gate opened again: downstreams continue their sequence from where they were."""
        self.forwarding = True
        self.epoch = next(_epochs)

    def mute(self) -> None:
        """A host muted the publisher: their packets still count for the link's quality, and
        go nowhere else."""
        self.muted = True

    def unmute(self) -> None:
        """They turned their microphone on: downstreams continue their sequence."""
        if self.muted:
            self.muted = False
            self.epoch = next(_epochs)


class Downstream(Copy):
    """One upstream going to one subscriber, on the subscriber's m-line.

    Its rewrite state (SSRC, payload type, offsets, what was sent, the epoch it follows) lives
    in :class:`~services.media._fastpath.Copy`, shared with the C loop that sends the copies
    of packets in steady state; this class decides everything else (binding, waiting for a
    keyframe, rebasing, resending) and sends what the C loop leaves to it.
    """

    def __init__(
        self, kind: str, clock_rate: int, *, ssrc: int, rtx_ssrc: int, wire: PacketSink
    ) -> None:
        self.kind = kind
        self.clock_rate = clock_rate
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.wire = wire
        self.outlet = wire.outlet
        self.upstream: Upstream | None = None
        self.rtx_payload_type: int | None = None
        self.extensions = ExtensionWriter(None, None, None)
        self.set_extensions(0, b"", 0, 0)  # none until the m-line's terms say otherwise
        self.waiting = True
        """Video: nothing is sent until a keyframe starts."""
        self.anchored_to: Upstream | None = None
        """The upstream whose clock the timestamps follow (another one: they are moved on);
        None until the first packet went."""
        self.first_seq = 0
        """The first sequence number since the last rebase: NACKs before it are not answered."""
        self.rtx_seq = random.randrange(1 << 16)  # noqa: S311
        self.resent: dict[int, tuple[float, int]] = {}
        self.resends = 0
        self.budget: float = RESENDS_PER_S
        self.budget_at = 0.0
        self.remb: int | None = None
        """The subscriber's latest estimate of what it can receive (bits/s)."""

    def terms(
        self,
        mid: str,
        payload_type: int,
        rtx_payload_type: int | None,
        extensions: dict[str, int],
    ) -> None:
        """The m-line's negotiated terms (after each answer)."""
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        mid_id = extensions.get(MID)
        abs_id, level_id = extensions.get(ABS_SEND_TIME), extensions.get(AUDIO_LEVEL)
        self.extensions = ExtensionWriter(
            (mid_id, mid.encode()) if mid_id else None, abs_id, level_id
        )
        self.set_extensions(mid_id or 0, mid.encode(), abs_id or 0, level_id or 0)

    @property
    def started(self) -> bool:
        return self.anchored_to is not None

    def bind(self, upstream: Upstream | None) -> None:
        """Carry ``upstream`` from now on (None: nothing)."""
        if self.upstream is upstream:
            return
        if self.upstream is not None and self in self.upstream.downstreams:
            self.upstream.downstreams.remove(self)
        self.upstream = upstream
        self.epoch = 0
        self.waiting = self.kind == "video"
        if upstream is not None:
            upstream.downstreams.append(self)
            if self.waiting:
                upstream.request_keyframe()

    def forward(self, view: RtpView, keyframe: bool, sent_at: bytes, now: float) -> None:
        upstream = self.upstream
        assert upstream is not None
        if self.epoch != upstream.epoch:
            if self.waiting and not keyframe:
                return
            self._rebase(view, upstream, now)
            self._send(view, sent_at, now)
            if upstream.history:
                self._catch_up(view.sequence, upstream, sent_at, now)
            return
        self._send(view, sent_at, now)

    def _catch_up(self, start: int, upstream: Upstream, sent_at: bytes, now: float) -> None:
        """Packets after the keyframe's first that came before it (reordered on the way):
        dropped while this copy waited, so sent now from the history."""
        sequence = (start + 1) & 0xFFFF
        for _ in range(CATCH_UP):
            if newer(sequence, upstream.stats.highest):
                break
            view = upstream.history[sequence % HISTORY]
            if view is not None and view.sequence == sequence:
                self._send(view, sent_at, now)
            sequence = (sequence + 1) & 0xFFFF

    def _send(self, view: RtpView, sent_at: bytes, now: float) -> None:
        sequence = (view.sequence + self.seq_offset) & 0xFFFF
        timestamp = (view.timestamp + self.ts_offset) & 0xFFFFFFFF
        packet = self._packet(
            self.payload_type, sequence, timestamp, self.ssrc, view, sent_at, view.payload
        )
        self.wire.send_rtp(packet)
        if newer(sequence, self.highest_seq):
            self.highest_seq = sequence
            self.last_ts = timestamp
            self.last_sent_at = now
        self.packets += 1
        self.octets += len(view.payload)

    def _rebase(self, view: RtpView, upstream: Upstream, now: float) -> None:
        if not self.started:
            self.seq_offset = (random.randrange(1 << 16) - view.sequence) & 0xFFFF  # noqa: S311
            self.ts_offset = (random.randrange(1 << 32) - view.timestamp) & 0xFFFFFFFF  # noqa: S311
        else:
            self.seq_offset = (self.highest_seq + 1 - view.sequence) & 0xFFFF
            if self.anchored_to is not upstream:
                # Another source: its clock continues ours by the real time in between.
                elapsed = max(1, int((now - self.last_sent_at) * self.clock_rate))
                target = self.last_ts + elapsed
                self.ts_offset = (target - view.timestamp) & 0xFFFFFFFF
        self.anchored_to = upstream
        self.first_seq = (view.sequence + self.seq_offset) & 0xFFFF
        self.highest_seq = (self.first_seq - 1) & 0xFFFF
        self.epoch = upstream.epoch
        self.waiting = False
        self.resent.clear()

    def _packet(
        self,
        payload_type: int,
        sequence: int,
        timestamp: int,
        ssrc: int,
        view: RtpView,
        sent_at: bytes,
        payload: bytes,
    ) -> bytes:
        extensions = self.extensions.block(sent_at, view.level)
        first = view.first | 0x10 if extensions else view.first
        header = HEADER.pack(first, view.marker | payload_type, sequence, timestamp, ssrc)
        return header + view.csrc + extensions + payload

    # -- what the subscriber says back ---------------------------------------------------------

    def resend(self, sequences: list[int], now: float) -> int:
        """Answer a NACK from the upstream's history, as RTX where negotiated; how many went."""
        upstream = self.upstream
        if upstream is None or not upstream.history or not self.started:
            return 0
        self.budget = min(RESENDS_PER_S, self.budget + (now - self.budget_at) * RESENDS_PER_S)
        self.budget_at = now
        sent_at = abs_send_time(ntp_now())
        sent = 0
        for sequence in sequences:
            if self.budget < 1:
                break
            original = (sequence - self.seq_offset) & 0xFFFF
            if (sequence - self.first_seq) & 0xFFFF >= 0x8000 or newer(
                original, upstream.stats.highest
            ):
                continue  # from before the last rebase, or not come yet
            asked = self.resent.get(sequence)
            if asked is not None and (now - asked[0] < RESEND_GAP_S or asked[1] >= RESEND_TRIES):
                continue
            view = upstream.history[original % HISTORY]
            if view is None or view.sequence != original:
                continue
            self.resent[sequence] = (now, 1 if asked is None else asked[1] + 1)
            timestamp = (view.timestamp + self.ts_offset) & 0xFFFFFFFF
            if self.rtx_payload_type is not None:
                packet = self._packet(
                    self.rtx_payload_type,
                    self.rtx_seq,
                    timestamp,
                    self.rtx_ssrc,
                    view,
                    sent_at,
                    struct.pack("!H", sequence) + view.payload,
                )
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            else:
                packet = self._packet(
                    self.payload_type, sequence, timestamp, self.ssrc, view, sent_at, view.payload
                )
            self.wire.send_rtp(packet)
            self.budget -= 1
            sent += 1
        self.resends += sent
        if len(self.resent) > HISTORY:
            for sequence in list(self.resent)[: len(self.resent) - HISTORY]:
                del self.resent[sequence]
        return sent

    def rtp_timestamp_at(self, now: float, ntp_offset: float | None) -> int:
        """This copy's RTP timestamp at ``now`` for a sender report: from the publisher's own
        report when there is one (so audio and video of one person stay in sync), else from
        the last packet sent."""
        upstream = self.upstream
        if upstream is not None and upstream.sender_report is not None and ntp_offset is not None:
            ntp, rtp, _ = upstream.sender_report
            # The publisher's clock read at ``now``: our wall clock minus its measured offset.
            publisher_now = time.time() + NTP_EPOCH_OFFSET - ntp_offset
            elapsed = publisher_now - ntp / (1 << 32)
            return (rtp + int(elapsed * self.clock_rate) + self.ts_offset) & 0xFFFFFFFF
        elapsed = int((now - self.last_sent_at) * self.clock_rate)
        return (self.last_ts + elapsed) & 0xFFFFFFFF
