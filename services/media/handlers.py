"""The media node's NATS endpoints: parse the request, hand it to the node."""

from contracts.media import SeatRelease, SeatRequest
from runtime.context import ServiceContext
from runtime.rpc import error_reply, parse
from services.media.node import NOT_OWNER, Media


async def answer_seat(media: Media, ctx: ServiceContext, data: bytes) -> bytes:
    """``rpc.media.seat``: a seat in the room, from whichever node owns it."""
    request = parse(SeatRequest, data)
    if isinstance(request, bytes):
        return request
    return await media.seat(ctx, request)


async def answer_release(media: Media, ctx: ServiceContext, data: bytes) -> bytes:
    """``rpc.media.release``: free one seat, or all the room's seats."""
    request = parse(SeatRelease, data)
    if isinstance(request, bytes):
        return request
    return await media.release(ctx, request)


async def answer_seat_here(media: Media, ctx: ServiceContext, data: bytes) -> bytes:
    """``rpc.media.node.<id>.seat``: a request another node forwarded to this room's owner."""
    request = parse(SeatRequest, data)
    if isinstance(request, bytes):
        return request
    answer = await media.seat_here(await media.placement(ctx), request)
    return _not_owner() if answer is None else answer.model_dump_json().encode()


async def answer_release_here(media: Media, ctx: ServiceContext, data: bytes) -> bytes:
    """``rpc.media.node.<id>.release``: a release another node forwarded to this room's owner."""
    request = parse(SeatRelease, data)
    if isinstance(request, bytes):
        return request
    answer = await media.release_here(await media.placement(ctx), request)
    return _not_owner() if answer is None else answer.model_dump_json().encode()


def _not_owner() -> bytes:
    return error_reply(f"{NOT_OWNER}: this media node does not hold the room")
