"""Page cursors: opaque to callers, yet a forged one is a 400, never a 500."""

from datetime import UTC, datetime
from uuid import UUID

import pytest

from runtime.http import Problem
from runtime.pagination import cursor_time, decode_cursor, encode_cursor, time_and_id


def test_a_cursor_time_reads_back_as_written() -> None:
    written = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
    [text, _] = decode_cursor(encode_cursor(written, "id"), 2) or []
    assert cursor_time(text) == written


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T22:00:00-14:00",  # past year 9999 in UTC: asyncpg cannot send it
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "2026-12-01T09:30:00",  # no offset: which moment is it?
        "yesterday",
    ],
)
def test_a_forged_cursor_time_is_a_400(text: str) -> None:
    with pytest.raises(Problem) as refused:
        cursor_time(text)
    assert refused.value.status == 400
    assert refused.value.extra == {"code": "invalid_cursor"}


def test_a_time_and_id_cursor_starts_before_everything_or_after_its_item() -> None:
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    item = UUID(int=7)
    assert time_and_id(None) == (None, UUID(int=0))
    assert time_and_id(decode_cursor(encode_cursor(at, item), 2)) == (at, item)
    with pytest.raises(Problem) as refused:
        time_and_id([at.isoformat(), "not-an-id"])
    assert refused.value.status == 400
