"""The media node's own NATS endpoints: requests another node forwarded to a room's owner."""

from contracts.media import SeatRelease, SeatRequest
from runtime.context import ServiceContext
from runtime.rpc import error_reply
from services.media.node import NOT_OWNER, Media


async def answer_seat_here(media: Media, ctx: ServiceContext, request: SeatRequest) -> bytes:
    """``rpc.media.node.<id>.seat``: a seat request forwarded to this room's owner."""
    answer = await media.seat_here(await media.placement(ctx), request)
    return _not_owner() if answer is None else answer.model_dump_json().encode()


async def answer_release_here(media: Media, ctx: ServiceContext, request: SeatRelease) -> bytes:
    """``rpc.media.node.<id>.release``: a release forwarded to this room's owner."""
    answer = await media.release_here(await media.placement(ctx), request)
    return _not_owner() if answer is None else answer.model_dump_json().encode()


def _not_owner() -> bytes:
    return error_reply(f"{NOT_OWNER}: this media node does not hold the room")
