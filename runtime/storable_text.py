"""Text that Postgres cannot store: a NUL character, or half of a surrogate pair.

Both are valid in a JSON string (``\\u0000``, a lone ``\\ud800``) and in a ``str``, so request
validation lets them through; the INSERT that follows then fails (NUL is not allowed in
``text`` or ``jsonb``, a lone surrogate cannot be encoded as UTF-8). The HTTP layer refuses
such requests up front, as invalid, instead of failing them with a 500.
"""

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

MESSAGE = "Text may not contain NUL characters or unpaired surrogates"
NOT_UTF8 = "The body is not UTF-8 text"
# Escapes that can spell either; a body without one needs no parsing. (Raw NUL bytes and raw
# surrogates are not valid JSON text and are refused by the JSON parser.)
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATES = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> bool:
    # json.loads joins a valid pair into one character, so any surrogate left is unpaired.
    return "\x00" in text or _SURROGATES.search(text) is not None


def unstorable_query(query_string: bytes) -> list[str]:
    """``query.<name>`` of each query parameter that holds such text."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return sorted({f"query.{name}" for name, value in pairs if unstorable(name + value)})


def not_utf8(body: bytes) -> bool:
    """JSON between systems is UTF-8 (RFC 8259); FastAPI answers other bytes with a bare 400."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def unstorable_json(body: bytes) -> list[str]:
    """The dotted path of each string (or key) of a JSON body that holds such text."""
    if not _SUSPECT_ESCAPE.search(body):
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []  # not JSON: the request's own validation says so
    return [".".join(path) for path in _paths(document, ())]


def _paths(value: Any, at: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(value, str):
        if unstorable(value):
            yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            if unstorable(key):
                yield (*at, key.encode("unicode_escape").decode())
            else:
                yield from _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*at, str(index)))
