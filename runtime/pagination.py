"""Cursor pagination: a page of items and an opaque cursor for the next one."""

import base64
import json
from typing import Any, Generic, TypeVar

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


def decode_cursor(cursor: str | None, parts: int) -> list[str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != parts:
        raise Problem(
            400,
            "The cursor is not one this API returned; start again without it.",
            code="invalid_cursor",
        )
    return [str(v) for v in values]
