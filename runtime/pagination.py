"""Cursor pagination: a page of items and an opaque cursor for the next one."""

import base64
import json
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from runtime.http import Problem

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last page."
    )


def encode_cursor(*values: Any) -> str:
    """The sort key of the last item on a page, opaque to callers."""
    raw = json.dumps([str(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


INVALID_CURSOR = "The cursor is not one this API returned; start again without it."


def decode_cursor(cursor: str | None, parts: int) -> list[str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != parts:
        raise Problem(400, INVALID_CURSOR, code="invalid_cursor")
    return [str(v) for v in values]


def cursor_time(text: str) -> datetime:
    """A time from a decoded cursor, as a query argument; 400 ``invalid_cursor`` unless
    Postgres can take it: with an offset, and within Python's years once in UTC. A cursor is
    opaque, but a caller can forge one (``9999-12-31T22:00:00-14:00`` fails asyncpg)."""
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            raise ValueError("a cursor's time has an offset")
        value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Problem(400, INVALID_CURSOR, code="invalid_cursor") from exc
    return value


def time_and_id(values: list[str] | None) -> tuple[datetime | None, UUID]:
    """A decoded ``(time, id)`` cursor as query arguments, the way most lists page; no cursor
    is ``(None, nil)``, before everything. A forged one is a 400 ``invalid_cursor``."""
    if values is None:
        return None, UUID(int=0)
    at = cursor_time(values[0])
    try:
        return at, UUID(values[1])
    except ValueError as exc:
        raise Problem(400, INVALID_CURSOR, code="invalid_cursor") from exc
