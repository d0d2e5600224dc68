"""Composition root of the notify service."""

from functools import partial

from fastapi import FastAPI

from contracts.links import links_events
from contracts.notify import notify_events
from contracts.scheduling import AUTHENTICATE_SUBJECT, UNSEAL_SUBJECT, scheduling_events
from runtime.consumer import Consumer
from runtime.nats_permissions import BusAccess
from runtime.service import ServiceDefinition
from services.notify import api, handlers
from services.notify.handlers import Notify
from services.notify.sender import Sender

SCHEDULING_EVENTS = (
    "ClinicRegistered",
    "ClinicSettingsChanged",
    "PractitionerAdded",
    "ClientAdded",
    "ClientUpdated",
    "ClientErased",
    "RoomCreated",
    "RoomRenamed",
    "RoomDeleted",
    "SessionScheduled",
    "SessionRescheduled",
    "SessionCancelled",
    "AttendeeInvited",
    "AttendeeRemoved",
    "LinkSharingEnabled",
    "LinkSharingDisabled",
    "SessionWentLive",
    "SessionCompleted",
)
LINKS_EVENTS = ("LinkIssued", "LinkRegenerated", "LinkRevoked")


def routes(app: FastAPI, notify: Notify) -> None:
    notify.sealer  # noqa: B018 - without a link key the service must not start
    app.state.notify = notify
    app.include_router(api.router)


def build(notify: Notify | None = None) -> ServiceDefinition:
    """The service around one ``Notify`` (settings, link key, clock); tests pass their own."""
    notify = notify or Notify()
    sender = Sender(notify)
    return ServiceDefinition(
        name="notify",
        default_port=8105,
        events=notify_events,
        migrations_package="services.notify.sql",
        consumers=[
            Consumer(
                name="scheduling",
                source="scheduling",
                registry=scheduling_events,
                handlers=dict.fromkeys(SCHEDULING_EVENTS, partial(handlers.on_scheduling, notify)),
            ),
            Consumer(
                name="links",
                source="links",
                registry=links_events,
                handlers=dict.fromkeys(LINKS_EVENTS, partial(handlers.on_links, notify)),
            ),
        ],
        routes=partial(routes, notify=notify),
        tasks=[sender.run],
        description="Invitations, reminders, clinic templates and the delivery log.",
        # Scheduling opens recipients' names and addresses for it (services/notify/details.py).
        bus=BusAccess(calls=(AUTHENTICATE_SUBJECT, UNSEAL_SUBJECT)),
    )


definition = build()
