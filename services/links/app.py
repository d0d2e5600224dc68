"""Composition root of the links service."""

from functools import partial

from fastapi import FastAPI

from contracts.links import RESOLVE_SUBJECT, links_events
from contracts.scheduling import AUTHENTICATE_SUBJECT, UNSEAL_SUBJECT, scheduling_events
from contracts.signaling import signaling_events
from runtime.consumer import Consumer
from runtime.nats_permissions import BusAccess
from runtime.rpc import Endpoint
from runtime.service import ServiceDefinition
from services.links import api, commands, handlers
from services.links.handlers import Links
from services.links.projections import LinksReadModel

SCHEDULING_EVENTS = (
    "ClinicRegistered",
    "ClinicSettingsChanged",
    "ClinicSuspended",
    "ClinicReinstated",
    "PractitionerAdded",
    "ClientErased",
    "RoomCreated",
    "RoomRenamed",
    "RoomDeleted",
    "SessionScheduled",
    "SessionRescheduled",
    "SessionCancelled",
    "SessionCompleted",
    "AttendeeInvited",
    "AttendeeRemoved",
    "LinkSharingEnabled",
    "LinkSharingDisabled",
)
SIGNALING_EVENTS = ("SessionStarted", "SessionEnded", "ParticipantLeft")


def routes(app: FastAPI, links: Links) -> None:
    links.sealer  # noqa: B018 - without a link key the service must not start
    app.state.links = links
    app.state.idempotency_guard = api.credential_still_works
    app.include_router(api.router)


def build(links: Links | None = None) -> ServiceDefinition:
    """The service around one ``Links`` (settings, sealing key, clock); tests pass their own."""
    links = links or Links()
    on_scheduling = partial(handlers.on_scheduling, links)
    on_signaling = partial(handlers.on_signaling, links)
    return ServiceDefinition(
        name="links",
        default_port=8102,
        events=links_events,
        migrations_package="services.links.sql",
        projections=lambda: [LinksReadModel()],
        consumers=[
            Consumer(
                name="scheduling",
                source="scheduling",
                registry=scheduling_events,
                handlers=dict.fromkeys(SCHEDULING_EVENTS, on_scheduling),
            ),
            Consumer(
                name="calls",
                source="signaling",
                registry=signaling_events,
                handlers=dict.fromkeys(SIGNALING_EVENTS, on_signaling),
            ),
        ],
        routes=partial(routes, links=links),
        endpoints=[
            Endpoint(
                RESOLVE_SUBJECT,
                partial(commands.answer_resolve, links),
                "May this link join now, as whom, and if not, why not.",
            )
        ],
        tasks=[links.flush_resolutions, links.watch_changes],
        # Scheduling opens client rooms' titles for it (services/links/titles.py).
        bus=BusAccess(calls=(AUTHENTICATE_SUBJECT, UNSEAL_SUBJECT)),
        description=(
            "Every join link: token hashes, kinds, windows and states; decides who may join now."
        ),
    )


definition = build()
