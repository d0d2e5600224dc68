"""Waiting out a dependency that is down: retry with exponential back-off, forever."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    errors: tuple[type[BaseException], ...],
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    on_failure: Callable[[BaseException], None] | None = None,
) -> T:
    """Await ``attempt()`` until it returns; ``errors`` are logged and retried, others raise."""
    delay = first_delay
    while True:
        try:
            return await attempt()
        except errors as exc:
            if on_failure is not None:
                on_failure(exc)
            log.warning("retrying", what=what, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
