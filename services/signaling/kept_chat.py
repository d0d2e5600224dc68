"""In-call chat kept with its session, for clinics that keep it, and deleted when its time is up.

A clinic keeps chat by setting ``settings.call.chat_retention_days`` above 0 (the sender's
connection carries it, as links told it when they arrived). Each message is then a row of
``chat_messages`` with its ``delete_after``; ``purge`` deletes what is due in one statement on
an index, and the clinic reads a session's chat through ``chat_api``.

Personal data at rest: scheduling seals a client's values under that person's key, which only
scheduling holds (it offers to open values, not to seal them), and a guest in a call is not a
person scheduling knows. So the text and the sender's name are sealed here under signaling's
own key instead: AES-256-GCM under a key derived from the participant key (a secret from the
environment, never in the database), bound to the clinic, the message and the field. A copy
of the database alone does not read them; a participant key rotated since a message was kept
leaves it unreadable (read as ``null``) until it is deleted on time.
"""

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.signaling import CallRole
from runtime.db import Queryable

PREFIX = "chat1"
_LABEL = b"antechamber signaling: chat at rest, v1"
_NONCE = 12


@dataclass(frozen=True)
class KeptMessage:
    """One chat message as it is kept (plain here; sealed in the row)."""

    message_id: UUID
    clinic_id: str
    room_id: UUID
    session_id: UUID | None
    number: int
    participant_id: UUID
    role: CallRole
    sender_name: str
    text: str
    sent_at: datetime


@dataclass(frozen=True)
class ReadMessage:
    """A kept message as the clinic reads it: name and text None when they cannot be opened."""

    message_id: UUID
    room_id: UUID
    session_id: UUID | None
    number: int
    participant_id: UUID
    role: CallRole
    sender_name: str | None
    text: str | None
    sent_at: datetime
    delete_after: datetime


class ChatSeal:
    """Seals kept chat under a key derived from the participant key."""

    def __init__(self, participant_key: str) -> None:
        key = hmac.new(participant_key.encode(), _LABEL, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    @staticmethod
    def _associated(clinic_id: str, message_id: UUID, field: str) -> bytes:
        return f"{PREFIX}|{clinic_id}|{message_id}|{field}".encode()

    def seal(self, value: str, clinic_id: str, message_id: UUID, field: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        body = self._aead.encrypt(
            nonce, value.encode(), self._associated(clinic_id, message_id, field)
        )
        return f"{PREFIX}.{base64.urlsafe_b64encode(nonce + body).decode().rstrip('=')}"

    def open(self, sealed: str, clinic_id: str, message_id: UUID, field: str) -> str | None:
        """The plain value; None when this key does not open it (the key was rotated since)."""
        prefix, _, body = sealed.partition(".")
        if prefix != PREFIX:
            return None
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._aead.decrypt(
                raw[:_NONCE], raw[_NONCE:], self._associated(clinic_id, message_id, field)
            )
        except (InvalidTag, ValueError):
            return None
        return plain.decode()


KEEP = (
    "INSERT INTO chat_messages (message_id, clinic_id, room_id, session_id, number, "
    "participant_id, role, sender_name, text, sent_at, delete_after) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
)
COLUMNS = (
    "message_id, room_id, session_id, number, participant_id, role, sender_name, text, "
    "sent_at, delete_after"
)


class KeptChat:
    def __init__(self, seal: ChatSeal) -> None:
        self.seal = seal

    async def keep(self, db: Queryable, message: KeptMessage, days: int) -> None:
        """Keep ``message`` for ``days`` after it was sent."""
        m = message
        await db.execute(
            KEEP,
            m.message_id,
            m.clinic_id,
            m.room_id,
            m.session_id,
            m.number,
            m.participant_id,
            m.role.value,
            self.seal.seal(m.sender_name, m.clinic_id, m.message_id, "sender_name"),
            self.seal.seal(m.text, m.clinic_id, m.message_id, "text"),
            m.sent_at,
            m.sent_at + timedelta(days=days),
        )

    @staticmethod
    async def purge(db: Queryable, now: datetime) -> int:
        """Delete every kept message whose time is up; how many went."""
        status: str = await db.execute("DELETE FROM chat_messages WHERE delete_after <= $1", now)
        return int(status.rsplit(" ", 1)[1])

    async def read(
        self,
        db: Queryable,
        clinic_id: str,
        *,
        session_id: UUID | None = None,
        room_id: UUID | None = None,
        after: tuple[datetime, int, UUID] | None = None,
        limit: int,
    ) -> list[ReadMessage]:
        """A session's (or a room's) kept chat of one clinic, in the order it was sent, from
        after the ``(sent_at, number, message_id)`` of the last one read."""
        where = "session_id = $2" if session_id is not None else "room_id = $2"
        at, number, message_id = after or (None, 0, UUID(int=0))
        rows = await db.fetch(
            f"SELECT {COLUMNS} FROM chat_messages WHERE clinic_id = $1 AND {where} "
            "AND ($3::timestamptz IS NULL OR (sent_at, number, message_id) > ($3, $4, $5)) "
            "ORDER BY sent_at, number, message_id LIMIT $6",
            clinic_id,
            session_id if session_id is not None else room_id,
            at,
            number,
            message_id,
            limit,
        )
        return [self._opened(clinic_id, row) for row in rows]

    def _opened(self, clinic_id: str, row: asyncpg.Record) -> ReadMessage:
        mid: UUID = row["message_id"]
        return ReadMessage(
            message_id=mid,
            room_id=row["room_id"],
            session_id=row["session_id"],
            number=row["number"],
            participant_id=row["participant_id"],
            role=CallRole(row["role"]),
            sender_name=self.seal.open(row["sender_name"], clinic_id, mid, "sender_name"),
            text=self.seal.open(row["text"], clinic_id, mid, "text"),
            sent_at=row["sent_at"],
            delete_after=row["delete_after"],
        )
