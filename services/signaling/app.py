"""Composition root of the signaling service."""

from functools import partial

from fastapi import FastAPI

from contracts.signaling import signaling_events
from runtime.service import ServiceDefinition
from services.signaling import ws
from services.signaling.calls import Signaling


def routes(app: FastAPI, signaling: Signaling) -> None:
    signaling.key  # noqa: B018 - without a participant key the service must not start
    app.state.signaling = signaling
    app.include_router(ws.router)


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
        description=(
            "WebSocket endpoint for browsers: waiting rooms, admissions, presence, host controls."
        ),
    )


definition = build()
