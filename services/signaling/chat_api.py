"""Signaling's HTTP API for clinics: the chat a clinic keeps with its sessions.

A clinic API key (vouched for by scheduling) scopes every read to its clinic: another clinic's
session answers 404, as does a session with no kept chat (chat is not kept by default, and
what was kept is deleted after ``settings.call.chat_retention_days``).
"""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from contracts.personal import personal_data
from contracts.signaling import CallRole
from runtime.clinic_keys import CLINIC_KEY_PROBLEMS, ClinicId
from runtime.context import ServiceContext
from runtime.http import NO_STORE, Problem, problems
from runtime.pagination import (
    DEFAULT_LIMIT,
    INVALID_CURSOR,
    MAX_LIMIT,
    Page,
    cursor_time,
    decode_cursor,
    encode_cursor,
)
from runtime.service import context_of
from services.signaling.kept_chat import KeptChat, ReadMessage

router = APIRouter(tags=["chat"], dependencies=[NO_STORE])
Context = Annotated[ServiceContext, Depends(context_of)]


async def kept_chat_of(request: Request) -> KeptChat:
    kept: KeptChat = request.app.state.signaling.chat.kept
    return kept


KeptDep = Annotated[KeptChat, Depends(kept_chat_of)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


class KeptChatMessage(BaseModel):
    message_id: UUID
    room_id: UUID = Field(description="The room of the call (a session link's: the session).")
    session_id: UUID | None = Field(description="The appointment; null for a room's call.")
    number: int = Field(description="Its place in its call's chat: 1, 2, 3…")
    participant_id: UUID = Field(description="Who sent it (their presence in that call).")
    role: CallRole
    sender_name: str | None = personal_data(
        description="Their name as the call showed it; null if it can no longer be opened."
    )
    text: str | None = personal_data(
        description="What they wrote; null if it can no longer be opened (see docs/signaling.md)."
    )
    sent_at: datetime
    delete_after: datetime = Field(description="When it is deleted, whatever happens.")


def _view(m: ReadMessage) -> KeptChatMessage:
    return KeptChatMessage.model_validate(m, from_attributes=True)


def _after(cursor: str | None) -> tuple[datetime, int, UUID] | None:
    values = decode_cursor(cursor, 3)
    if values is None:
        return None
    try:
        return cursor_time(values[0]), int(values[1]), UUID(values[2])
    except ValueError as exc:
        raise Problem(400, INVALID_CURSOR, code="invalid_cursor") from exc


async def _page(
    ctx: ServiceContext,
    kept: KeptChat,
    clinic_id: str,
    cursor: str | None,
    limit: int,
    *,
    session_id: UUID | None = None,
    room_id: UUID | None = None,
) -> Page[KeptChatMessage]:
    after = _after(cursor)
    rows = await kept.read(
        ctx.pool, clinic_id, session_id=session_id, room_id=room_id, after=after, limit=limit + 1
    )
    if not rows and after is None:
        raise Problem(
            404,
            "No chat is kept for that in this clinic: the clinic does not keep chat, nobody "
            "wrote, or its retention is over.",
            code="chat_not_found",
        )
    items = rows[:limit]
    last = items[-1] if len(rows) > limit else None
    return Page(
        items=[_view(m) for m in items],
        next_cursor=encode_cursor(last.sent_at.isoformat(), last.number, last.message_id)
        if last
        else None,
    )


@router.get(
    "/v1/sessions/{session_id}/chat",
    summary="A session's kept chat, in the order it was sent",
    responses=CLINIC_KEY_PROBLEMS | problems(400, 404),
)
async def session_chat(
    ctx: Context,
    kept: KeptDep,
    clinic_id: ClinicId,
    session_id: UUID,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[KeptChatMessage]:
    return await _page(ctx, kept, clinic_id, cursor, limit, session_id=session_id)


@router.get(
    "/v1/rooms/{room_id}/chat",
    summary="A room's kept chat (calls without an appointment too), in the order it was sent",
    responses=CLINIC_KEY_PROBLEMS | problems(400, 404),
)
async def room_chat(
    ctx: Context,
    kept: KeptDep,
    clinic_id: ClinicId,
    room_id: UUID,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[KeptChatMessage]:
    return await _page(ctx, kept, clinic_id, cursor, limit, room_id=room_id)
