"""An integrator's NATS credential: issued by a clinic for its events, revoked by the clinic.

No I/O. Each credential is a stream of its own (``integrator_credential-<id>``); the key pair
and the signed JWT are made by ``integrators``, which also tells NATS about revocations.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from contracts.events import Event
from contracts.scheduling import (
    ConsumerStart,
    IntegratorCredentialIssued,
    IntegratorCredentialRevoked,
    integrator_name,
)
from runtime.refusals import Conflict, Invalid, not_found

DEFAULT_LIFETIME_DAYS = 90
MAX_LIFETIME_DAYS = 365


@dataclass(frozen=True)
class Credential:
    credential_id: UUID
    public_key: str
    expires_at: datetime
    revoked: bool = False


def stream(credential_id: UUID) -> str:
    return f"integrator_credential-{credential_id}"


def evolve_credential(state: Credential | None, event: Event) -> Credential | None:
    match event:
        case IntegratorCredentialIssued():
            return Credential(event.credential_id, event.public_key, event.expires_at)
        case IntegratorCredentialRevoked() if state:
            return replace(state, revoked=True)
    return state


def issue_credential(
    state: Credential | None,
    credential_id: UUID,
    public_key: str,
    label: str,
    issued_at: datetime,
    expires_at: datetime,
    start: ConsumerStart = ConsumerStart.ALL,
) -> list[Event]:
    if state is not None:
        raise Conflict("credential_exists", "That integrator credential already exists.")
    if not issued_at < expires_at <= issued_at + timedelta(days=MAX_LIFETIME_DAYS):
        raise Invalid(
            "invalid_lifetime",
            f"A credential expires after it is issued, within {MAX_LIFETIME_DAYS} days.",
        )
    return [
        IntegratorCredentialIssued(
            credential_id=credential_id,
            nats_user=integrator_name(credential_id),
            public_key=public_key,
            label=label,
            expires_at=expires_at,
            start=start,
        )
    ]


def revoke_credential(state: Credential | None) -> list[Event]:
    """Revoking twice changes nothing; an expired credential may be revoked too."""
    if state is None:
        raise not_found("integrator_credential")
    return [] if state.revoked else [IntegratorCredentialRevoked(credential_id=state.credential_id)]
