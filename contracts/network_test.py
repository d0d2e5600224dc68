"""The pre-call network test between signaling and the media nodes.

Before joining, a browser (or any front end) may run a few seconds of real media to the node
that will host its call. Signaling asks any node which one that is
(``NETWORK_TEST_HOST_SUBJECT``: the room's owner, else the least-loaded live node), mints a
test token (its own audience: it opens no seat and cannot be used to join), and relays the
browser's offer to that node (``probe_subject(node)``). The node answers with a connection of
its own that echoes the browser's media back, measures what reaches it, and closes the
connection after at most ``max_s``. When the browser reports what it measured, signaling asks
the node for the uplink's figures (``finish``) and tells the browser the verdict.

The protocol the browser sees is in ``contracts/signaling_protocol.py`` (``network_test``);
the procedure is ``docs/signaling.md``.
"""

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from contracts.media import MAX_SDP

NETWORK_TEST_HOST_SUBJECT = "rpc.media.network_test_host"
"""Request/reply: a :class:`ProbeHostRequest` in, a :class:`ProbeHost` out (any node answers)."""
NETWORK_TEST_AUDIENCE = "antechamber-media-test"
"""The ``aud`` of a test token: a media node's call endpoints refuse it, as its test endpoint
refuses a participant token."""


def probe_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`ProbeSignal` in, a :class:`ProbeReply` out."""
    return f"rpc.media.node.{node_id}.test"


class ProbeHostRequest(BaseModel):
    clinic_id: str
    room_id: UUID


class ProbeHost(BaseModel):
    """The node a test should run against; none when no live node can take a room."""

    node_id: str | None
    media_url: str | None = None
    placed: bool = Field(description="The room is on that node already (else it would go there).")
    max_s: float = Field(default=12.0, description="The node closes a test connection by then.")


class ProbeAction(StrEnum):
    offer = "offer"
    candidate = "candidate"
    finish = "finish"
    """Stop the test and answer the uplink's figures (signaling's, when the browser reports)."""


class ProbeSignal(BaseModel):
    """One step of a test, relayed by signaling."""

    test_id: UUID
    room_id: UUID = Field(description="The room the test is for (the token's).")
    test_token: str = Field(description="The JWT signaling minted for this test.")
    client_address: str = Field(
        default="",
        max_length=64,
        description="The browser's address, for the node's per-address limit (never stored).",
    )
    action: ProbeAction
    sdp: str | None = Field(default=None, max_length=MAX_SDP)
    candidate: str | None = Field(default=None, max_length=1024)
    sdp_mid: str | None = Field(default=None, max_length=32)
    sdp_mline_index: int | None = Field(default=None, ge=0, le=1024)


class Direction(BaseModel):
    """What one direction of the test carried, as its receiving end saw it. Packets are
    those of the track that lost the largest share (audio is never repaired; video's
    retransmissions hide part of its loss)."""

    packets_received: int = Field(ge=0, le=10_000_000)
    packets_lost: int = Field(ge=0, le=10_000_000)
    jitter_ms: float = Field(
        ge=0, le=60_000, description="RFC 3550 interarrival jitter: audio's, else video's."
    )
    peak_kbps: float = Field(
        ge=0, le=10_000_000, description="The best one-second bitrate that arrived."
    )

    @property
    def loss(self) -> float:
        """The fraction of packets lost (0 when none were expected)."""
        expected = self.packets_received + self.packets_lost
        return self.packets_lost / expected if expected else 0.0


class Uplink(Direction):
    """The node's view of what the browser sent (its receivers' RTCP statistics)."""

    rtt_ms: float | None = Field(
        default=None, description="From the browser's receiver reports of the echo (RTCP)."
    )
    connected_s: float | None = Field(
        default=None, description="How long media was connected; none if it never was."
    )


class ProbeReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""
    answer_sdp: str | None = Field(default=None, description="With an offer's reply.")
    uplink: Uplink | None = Field(default=None, description="With finish's reply.")
