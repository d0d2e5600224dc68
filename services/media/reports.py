"""The node's RTCP reports, all from one timer: sender reports to subscribers, receiver
reports and a bitrate cap to publishers.

aiortc would run two RTCP tasks per m-line; a full room has 480 of them. Instead, every
``report_interval_s`` each connection gets one compound packet (or a few, to stay under the
MTU) with:

- a sender report per m-line it receives on, whose RTP timestamp is translated from the
  publisher's own sender report, so a browser lines up a person's voice and picture as the
  publisher timed them (RFC 3550 6.4.1);
- a receiver report per stream it publishes (loss, jitter, and LSR/DLSR so the publisher
  can measure its round trip), and a REMB (the least any of its subscribers can take, and
  never above ``max_forward_kbps``) for its video.
"""

from typing import TYPE_CHECKING

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

from services.media.forwarding import Downstream, ntp_now

if TYPE_CHECKING:
    from services.media.sfu import Member, Sfu

PER_PACKET = 8
"""Sender reports per compound packet (with their SDES chunks, about 600 bytes)."""
CNAME_ITEM = 1


def send_reports(sfu: "Sfu", now: float) -> None:
    cap = sfu.settings.max_forward_kbps * 1000
    for room in sfu.rooms.values():
        for member in room.members.values():
            if member.wire is None or not member.wire.open:
                continue
            for packet in sender_reports(member, now):
                member.wire.send_rtcp(packet)
            report = receiver_report(member, now, cap)
            if report:
                member.wire.send_rtcp(report)


def sender_reports(member: "Member", now: float) -> list[bytes]:
    """Compound packets with a sender report for every m-line ``member`` receives on."""
    ntp = ntp_now()
    cname = f"antechamber-{member.participant_id.hex[:12]}".encode()
    downstreams: list[tuple[Downstream, float | None]] = [
        (o.downstream, o.publication.owner.ntp_offset)
        for o in member.outgoing
        if o.downstream is not None and o.downstream.started
    ]
    packets = []
    for start in range(0, len(downstreams), PER_PACKET):
        chunk = downstreams[start : start + PER_PACKET]
        reports = [
            RtcpSrPacket(
                ssrc=d.ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=d.rtp_timestamp_at(now, offset),
                    packet_count=d.packets & 0xFFFFFFFF,
                    octet_count=d.octets & 0xFFFFFFFF,
                ),
            )
            for d, offset in chunk
        ]
        sdes = RtcpSdesPacket(
            chunks=[RtcpSourceInfo(ssrc=d.ssrc, items=[(CNAME_ITEM, cname)]) for d, _ in chunk]
        )
        packets.append(b"".join(bytes(r) for r in reports) + bytes(sdes))
    return packets


def receiver_report(member: "Member", now: float, cap: int) -> bytes:
    """A receiver report on everything ``member`` publishes, and a REMB for its video."""
    blocks = []
    video = []
    least = cap
    for publication in member.publications:
        upstream = publication.upstream
        if upstream is None or upstream.ssrc is None or upstream.stats.base is None:
            continue
        lsr = dlsr = 0
        if upstream.sender_report is not None:
            ntp, _, arrived = upstream.sender_report
            lsr = (ntp >> 16) & 0xFFFFFFFF
            dlsr = min(0xFFFFFFFF, int((now - arrived) * 65536))
        stats = upstream.stats
        blocks.append(
            RtcpReceiverInfo(
                ssrc=upstream.ssrc,
                fraction_lost=stats.fraction_lost(),
                packets_lost=stats.lost,
                highest_sequence=stats.extended_highest & 0xFFFFFFFF,
                jitter=stats.jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
        )
        if upstream.kind == "video":
            video.append(upstream.ssrc)
            for downstream in upstream.downstreams:
                if downstream.remb is not None:
                    least = min(least, downstream.remb)
    if not blocks:
        return b""
    packet = bytes(RtcpRrPacket(ssrc=member.rtcp_ssrc, reports=blocks))
    if video:
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=member.rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(least, video)
        )
        packet += bytes(remb)
    return packet
