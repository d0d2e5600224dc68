"""Composition root of the media service."""

from functools import partial

from fastapi import FastAPI

from contracts.media import (
    ALL_PARTICIPANT_SUBJECTS,
    ALL_QUALITY_SUBJECTS,
    LIVE_NODES_SUBJECT,
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    MediaSignal,
    MuteCommand,
    NodesQuery,
    RecordingCommand,
    ScreenShareCommand,
    SeatRelease,
    SeatRequest,
    media_events,
    mute_subject,
    node_subject,
    record_subject,
    share_subject,
    signal_subject,
)
from contracts.network_test import (
    NETWORK_TEST_HOST_SUBJECT,
    ProbeHostRequest,
    ProbeSignal,
    probe_subject,
)
from contracts.scheduling import AUTHENTICATE_SUBJECT
from runtime.nats_permissions import BusAccess
from runtime.rpc import Endpoint, answering
from runtime.service import ServiceDefinition
from services.media import api, handlers, network_test
from services.media.node import Media
from services.media.placement import NODES_BUCKET, ROOMS_BUCKET


def routes(app: FastAPI, media: Media) -> None:
    app.state.media = media
    app.include_router(api.router)


SIGNALING = frozenset({"signaling"})
"""Seats and recordings are signaling's to ask for: it has admitted the person, and it tells
everyone in the room that a recording started. Nobody else may, whatever they can publish."""
SIGNALING_OR_A_NODE = SIGNALING | {"media"}
"""A node forwards signaling's seat and release requests to the node that owns the room."""


def build(media: Media | None = None) -> ServiceDefinition:
    """The service around one media node (settings, clock); tests build several."""
    media = media or Media()
    node = media.node_id
    probes = network_test.Probes(media.settings, lambda: media.key, node)
    return ServiceDefinition(
        name="media",
        default_port=8104,
        events=media_events,
        endpoints=[
            Endpoint(
                SEAT_SUBJECT,
                answering(SeatRequest, media.seat),
                "A seat in a room, or why not (room full, no capacity).",
                callers=SIGNALING,
            ),
            Endpoint(
                RELEASE_SUBJECT,
                answering(SeatRelease, media.release),
                "Free a participant's seat, or every seat of a room.",
                callers=SIGNALING,
            ),
            Endpoint(
                LIVE_NODES_SUBJECT,
                answering(NodesQuery, media.live_nodes),
                "Which of some media nodes live (heartbeat younger than node_ttl_s).",
                callers=SIGNALING,
            ),
            Endpoint(
                node_subject(node, "seat"),
                answering(SeatRequest, partial(handlers.answer_seat_here, media)),
                "A seat request forwarded to the node that owns the room.",
                callers=SIGNALING_OR_A_NODE,
            ),
            Endpoint(
                node_subject(node, "release"),
                answering(SeatRelease, partial(handlers.answer_release_here, media)),
                "A release forwarded to the node that owns the room.",
                callers=SIGNALING_OR_A_NODE,
            ),
            Endpoint(
                signal_subject(node),
                answering(MediaSignal, media.signal),
                "WebRTC negotiation with a participant (relayed by signaling).",
            ),
            Endpoint(
                NETWORK_TEST_HOST_SUBJECT,
                answering(ProbeHostRequest, partial(network_test.answer_host, media.placement)),
                "Which node a room's pre-call network test runs against (nothing placed).",
                callers=SIGNALING,
            ),
            Endpoint(
                probe_subject(node),
                answering(ProbeSignal, probes.answer),
                "A pre-call network test on this node: offer, candidate, finish.",
                callers=SIGNALING,
            ),
            Endpoint(
                mute_subject(node),
                answering(MuteCommand, media.mute),
                "Forward none of a participant's audio (a host muted them), or again.",
                callers=SIGNALING,
            ),
            Endpoint(
                record_subject(node),
                answering(RecordingCommand, media.record),
                "Start or stop recording a room this node holds.",
                callers=SIGNALING,
            ),
            Endpoint(
                share_subject(node),
                answering(ScreenShareCommand, media.share),
                "Grant a room's screen share to one participant, or end it (a screen track "
                "is taken from the granted participant alone).",
                callers=SIGNALING,
            ),
        ],
        migrations_package="services.media.sql",
        routes=partial(routes, media=media),
        tasks=[
            media.keep_alive,
            media.journal.run,
            media.run_sfu,
            media.publish_quality,
            probes.run,
        ],
        bus=BusAccess(
            # A node forwards a seat or a release to the node that owns the room; recording
            # and negotiation come from signaling alone.
            calls=(
                AUTHENTICATE_SUBJECT,
                node_subject("*", "seat"),
                node_subject("*", "release"),
            ),
            publishes=(ALL_PARTICIPANT_SUBJECTS, ALL_QUALITY_SUBJECTS),
            kv_buckets=(NODES_BUCKET, ROOMS_BUCKET),
        ),
        description="SFU nodes, room placement, the seat cap and recordings.",
    )


definition = build()
