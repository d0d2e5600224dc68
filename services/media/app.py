"""Composition root of the media service."""

from functools import partial

from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    MediaSignal,
    SeatRelease,
    SeatRequest,
    media_events,
    node_subject,
    signal_subject,
)
from runtime.rpc import Endpoint, answering
from runtime.service import ServiceDefinition
from services.media import handlers
from services.media.node import Media


def build(media: Media | None = None) -> ServiceDefinition:
    """The service around one media node (settings, clock); tests build several."""
    media = media or Media()
    node = media.node_id
    return ServiceDefinition(
        name="media",
        default_port=8104,
        events=media_events,
        endpoints=[
            Endpoint(
                SEAT_SUBJECT,
                answering(SeatRequest, media.seat),
                "A seat in a room, or why not (room full, no capacity).",
            ),
            Endpoint(
                RELEASE_SUBJECT,
                answering(SeatRelease, media.release),
                "Free a participant's seat, or every seat of a room.",
            ),
            Endpoint(
                node_subject(node, "seat"),
                answering(SeatRequest, partial(handlers.answer_seat_here, media)),
                "A seat request forwarded to the node that owns the room.",
            ),
            Endpoint(
                node_subject(node, "release"),
                answering(SeatRelease, partial(handlers.answer_release_here, media)),
                "A release forwarded to the node that owns the room.",
            ),
            Endpoint(
                signal_subject(node),
                answering(MediaSignal, media.signal),
                "WebRTC negotiation with a participant (relayed by signaling).",
            ),
        ],
        tasks=[media.keep_alive, media.journal.run, media.run_sfu],
        description="SFU nodes, room placement, the seat cap and recordings.",
    )


definition = build()
