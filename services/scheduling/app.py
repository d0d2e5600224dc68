"""Composition root of the scheduling service."""

from functools import partial

from fastapi import FastAPI

from contracts.links import links_events
from contracts.scheduling import (
    AUTHENTICATE_SUBJECT,
    UNSEAL_SUBJECT,
    SealedValues,
    scheduling_events,
)
from contracts.signaling import signaling_events
from runtime.consumer import Consumer
from runtime.nats_permissions import BusAccess
from runtime.ratelimit import RateLimiter
from runtime.rpc import Endpoint, answering
from runtime.sealing import Sealer, SealingSettings
from runtime.service import ServiceDefinition
from services.scheduling import (
    api,
    booking_api,
    handlers,
    integrators_api,
    operator_api,
    sessions_api,
)
from services.scheduling.auth import Access, credential_still_works
from services.scheduling.config import SchedulingSettings
from services.scheduling.credential_views import IntegratorCredentialsReadModel
from services.scheduling.integrators import Integrators
from services.scheduling.keys import ClinicKeys
from services.scheduling.projections import SchedulingReadModel


def routes(
    app: FastAPI,
    settings: SchedulingSettings | None = None,
    sealer: Sealer | None = None,
    keys: ClinicKeys | None = None,
    integrators: Integrators | None = None,
) -> None:
    """The HTTP API. Without ``keys`` (whose listener is a task of the same definition),
    every API key is looked up in Postgres; without ``integrators``, revocations reach NATS
    only from the requests that make them."""
    settings = settings or SchedulingSettings()
    app.state.scheduling_access = Access(
        operator_key_hash=settings.operator_key_hash(),
        booking_limiter=RateLimiter(settings.booking_per_minute, settings.booking_burst),
        sealer=sealer or SealingSettings().sealer(),
        keys=keys or ClinicKeys(),
        integrators=integrators or Integrators(settings.nats_issuer_file),
    )
    app.state.idempotency_guard = credential_still_works
    for router in (
        operator_api.router,
        api.router,
        sessions_api.router,
        booking_api.router,
        integrators_api.router,
    ):
        app.include_router(router)


calls = Consumer(
    name="calls",
    source="signaling",
    registry=signaling_events,
    handlers={
        "SessionStarted": handlers.on_call_started,
        "SessionEnded": handlers.on_call_ended,
        **{
            kind: handlers.on_recording
            for kind in (
                "RecordingRequested",
                "RecordingConsentAsked",
                "RecordingConsentGiven",
                "RecordingConsentDeclined",
                "RecordingRequestLapsed",
                "RecordingRequestCancelled",
                "RecordingStarted",
                "RecordingStopped",
            )
        },
    },
)
"""Sessions go live, end early or complete as signaling reports their calls; requests to
record them, the answers and the recordings go into their audit trail (their history)."""

join_links = Consumer(
    name="join-links",
    source="links",
    registry=links_events,
    handlers={
        "LinkIssued": handlers.on_link_issued,
        "LinkRegenerated": handlers.on_link_regenerated,
        "LinkRevoked": handlers.on_link_revoked,
    },
)
"""The links that belong to appointments, for the client portal query."""


def build(
    settings: SchedulingSettings | None = None, sealer: Sealer | None = None
) -> ServiceDefinition:
    """The service, with one replica's API key cache shared by its routes, its key-check
    endpoint and the task that keeps it honest, and its integrators' credentials shared by
    its routes and the task that keeps NATS's revocations in step."""
    settings = settings or SchedulingSettings()
    keys = ClinicKeys()
    integrators = Integrators(settings.nats_issuer_file, settings.integrator_sync_interval_s)
    return ServiceDefinition(
        name="scheduling",
        default_port=8101,
        events=scheduling_events,
        migrations_package="services.scheduling.sql",
        projections=lambda: [SchedulingReadModel(), IntegratorCredentialsReadModel()],
        consumers=[calls, join_links],
        routes=partial(
            routes, settings=settings, sealer=sealer, keys=keys, integrators=integrators
        ),
        endpoints=[
            Endpoint(
                AUTHENTICATE_SUBJECT,
                partial(handlers.authenticate, keys),
                "Which clinic a clinic API key belongs to (by the key's SHA-256).",
            ),
            Endpoint(
                UNSEAL_SUBJECT,
                answering(SealedValues, handlers.unseal),
                "Personal values sealed for one clinic's people, opened (or: erased).",
                # Plain personal data: for the mails, and for rooms' titles on join pages.
                callers=frozenset({"notify", "links"}),
            ),
        ],
        tasks=[keys.listen, integrators.keep_nats_in_step],
        bus=BusAccess(integrator_consumers=True),  # integrators may not make their own
        description="Clinics, practitioners, clients, rooms, sessions and invitees: who and when.",
    )


definition = build()
