"""One browser's WebSocket on this replica: who it is once joined, and its queue of frames."""

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from fastapi import WebSocket
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from contracts.signaling import CallFeatures, CallRole

if TYPE_CHECKING:
    from services.signaling.network_test import NetworkTestRun

MAX_QUEUED = 1000
"""Frames waiting for a browser that does not read them, before it is disconnected."""


@dataclass(eq=False)
class Connection:
    """One browser's WebSocket on this replica."""

    websocket: WebSocket
    address: str
    participant_id: UUID | None = None
    room_id: UUID | None = None
    clinic_id: str | None = None
    role: CallRole | None = None
    cap: int = 16
    loudest_speakers: int | None = None
    features: CallFeatures = field(default_factory=CallFeatures)
    """What the clinic allows in its calls, as links told it when this person arrived."""
    grace_s: float = 0.0
    resume_token: str | None = None
    outbox: "asyncio.Queue[str | None]" = field(default_factory=asyncio.Queue)
    close_code: int = 1000
    close_reason: str = ""
    closing: bool = False
    done: bool = False
    """Gone for good (left, denied, removed, ended, replaced): no rejoin grace on close."""
    page_gone: bool = False
    """The browser closed the socket with 1001 (Going Away): its page was reloaded or closed."""
    last_sent: dict[str, str] = field(default_factory=dict)
    media: Subscription | None = None
    network_test: "NetworkTestRun | None" = None
    """A pre-call network test under way on this socket (it never joins)."""
    quality: Subscription | None = None
    """The room's network quality from its media node (``quality.py``)."""

    def place(self) -> tuple[UUID, UUID, str, CallRole]:
        """(participant, room, clinic, role) of a joined connection."""
        if not (self.participant_id and self.room_id and self.clinic_id and self.role):
            raise RuntimeError("this connection has not joined")
        return self.participant_id, self.room_id, self.clinic_id, self.role

    def send(self, message: BaseModel) -> None:
        if self.outbox.qsize() > MAX_QUEUED:
            self.close(1008, "not reading its messages", done=False)
        if not self.closing:
            self.outbox.put_nowait(message.model_dump_json())

    def send_once(self, key: str, message: BaseModel) -> None:
        """Send unless the same frame of this kind was the last one sent."""
        text = message.model_dump_json()
        if self.last_sent.get(key) != text and not self.closing:
            self.last_sent[key] = text
            self.outbox.put_nowait(text)

    def close(self, code: int = 1000, reason: str = "", *, done: bool = True) -> None:
        if self.closing:
            return
        self.done = self.done or done
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self.outbox.put_nowait(None)
