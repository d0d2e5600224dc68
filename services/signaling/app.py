"""Composition root of the signaling service."""

from functools import partial

from fastapi import FastAPI

from contracts.links import RESOLVE_SUBJECT
from contracts.media import (
    ALL_NODE_SUBJECTS,
    ALL_PARTICIPANT_SUBJECTS,
    ALL_QUALITY_SUBJECTS,
    LIVE_NODES_SUBJECT,
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
)
from contracts.network_test import NETWORK_TEST_HOST_SUBJECT
from contracts.scheduling import AUTHENTICATE_SUBJECT
from contracts.signaling import signaling_events
from runtime.nats_permissions import BusAccess
from runtime.service import ServiceDefinition
from services.signaling import chat_api, ws
from services.signaling.calls import Signaling
from services.signaling.rooms import ALL_ROOM_SUBJECTS


def routes(app: FastAPI, signaling: Signaling) -> None:
    signaling.key  # noqa: B018 - without a participant key the service must not start
    app.state.signaling = signaling
    app.include_router(ws.router)
    app.include_router(chat_api.router)


def build(signaling: Signaling | None = None) -> ServiceDefinition:
    """The service around one ``Signaling`` (settings, key, clock); tests pass their own."""
    signaling = signaling or Signaling()
    return ServiceDefinition(
        name="signaling",
        default_port=8103,
        events=signaling_events,
        migrations_package="services.signaling.sql",
        routes=partial(routes, signaling=signaling),
        tasks=[signaling.run],
        bus=BusAccess(
            # The only service that may call the media nodes, and links' resolution. Which
            # nodes live is media's to say (its own node TTL), not read from its buckets.
            calls=(
                RESOLVE_SUBJECT,
                SEAT_SUBJECT,
                RELEASE_SUBJECT,
                LIVE_NODES_SUBJECT,
                NETWORK_TEST_HOST_SUBJECT,
                ALL_NODE_SUBJECTS,
                AUTHENTICATE_SUBJECT,  # the clinic API (kept chat) accepts clinic keys
            ),
            publishes=(ALL_ROOM_SUBJECTS,),
            subscribes=(ALL_ROOM_SUBJECTS, ALL_PARTICIPANT_SUBJECTS, ALL_QUALITY_SUBJECTS),
        ),
        description=(
            "WebSocket endpoint for browsers: waiting rooms, admissions, presence, host controls."
        ),
    )


definition = build()
