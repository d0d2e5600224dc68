"""Types of the compiled per-copy loop (services/media/_fastpath.c)."""

from typing import TypeVar

MAX_PACKET: int

class Outlet:
    """One connection's socket, address and SRTP session, for sending RTP."""

    sent: int
    dropped: int
    protect_failures: int
    @property
    def sending(self) -> bool: ...
    @property
    def protecting(self) -> bool: ...
    def protect_with(self, context: int, srtp_protect: int, session: object) -> None: ...
    def send_on(self, fd: int, host: str, port: int) -> None: ...
    def close(self) -> None: ...
    def protect(self, packet: bytes) -> bytes: ...
    def send(self, packet: bytes) -> None: ...

class Copy:
    """One track going to one subscriber: the rewrite state the C loop uses."""

    ssrc: int
    payload_type: int
    seq_offset: int
    ts_offset: int
    highest_seq: int
    last_ts: int
    last_sent_at: float
    packets: int
    octets: int
    epoch: int
    outlet: Outlet | None
    def set_extensions(self, mid_id: int, mid: bytes, abs_id: int, level_id: int) -> None: ...

_C = TypeVar("_C", bound=Copy)

def fan_out(
    copies: list[_C],
    epoch: int,
    first: int,
    marker: int,
    sequence: int,
    timestamp: int,
    csrc: bytes,
    payload: bytes,
    sent_at: bytes,
    level: bytes | None,
    now: float,
) -> list[_C] | None: ...
