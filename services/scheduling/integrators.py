"""Integrators' NATS credentials: signed here, and refused by NATS once revoked.

A credential is a NATS user JWT signed with the platform account's scoped integrators key
(:class:`runtime.nats_auth.Issuer`), so the servers give it one clinic's events and nothing
else. Revoking it, or suspending its clinic, puts its public key in the account's revocations;
the servers close its connections as soon as they have the new account claims.

Postgres holds what is revoked; NATS is told:

- by the replica that made a change, once it has committed (a revocation, a suspension or
  reinstatement, and a new credential, which may belong to a clinic being suspended);
- by every replica at start and every ``integrator_sync_interval_s``, and after a failed
  push again within seconds (backing off up to that interval), so a server restarted from an
  older copy of the claims, or a push that failed, converges.

Pushes from several replicas are harmless: each takes the next issued-at from Postgres in the
transaction that reads what it pushes, and the servers keep the claims with the newest
issued-at, so they end with the revocations read last whatever the order of arrival.

Each credential's JetStream consumers (:mod:`services.scheduling.integrator_consumers`) follow
the same way: made at issuance, deleted at revocation, and brought in step with Postgres at
every push of the loop (an expired credential's deleted then).
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from uuid import UUID, uuid4

import asyncpg
import structlog
from nats.js.errors import APIError

from contracts.scheduling import ConsumerStart, integrator_name, scheduling_events
from runtime import commands
from runtime.context import ServiceContext
from runtime.nats_auth import IntegratorCredential, Issuer, ReservedKeyError, publish_account
from runtime.nats_jwt import NatsAuthError
from runtime.refusals import Conflict, Refused, not_found
from runtime.service import DEPENDENCY_ERRORS
from runtime.settings import nats_servers
from services.scheduling import credentials, integrator_consumers
from services.scheduling.credential_views import consumer_owners, refused_keys
from services.scheduling.integrator_consumers import ConsumerOwner

log = structlog.get_logger(__name__)

RETRY_FIRST_S = 1.0
"""After a failed push, the first retry; each next one waits twice as long, up to the interval."""


class Unavailable(Refused):
    status: ClassVar[int] = 503


@dataclass
class Integrators:
    """Issues integrators' credentials and keeps NATS's revocations in step with Postgres."""

    issuer_file: Path | None
    """None: NATS authentication is not configured, and there is nothing to issue or revoke."""
    sync_interval_s: float = 60.0
    _issuer: Issuer | None = field(default=None, init=False, repr=False)
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    """Set to push sooner; made by the running task, in its own event loop."""

    def issuer(self) -> Issuer:
        if self.issuer_file is None:
            raise Unavailable(
                "nats_auth_not_configured",
                "Integrator credentials need NATS authentication, which this installation "
                "does not have configured (the scheduling service has no "
                "ANTECHAMBER_NATS_ISSUER_FILE); ask your operator.",
            )
        if self._issuer is None:
            try:
                self._issuer = Issuer.load(self.issuer_file)
            except NatsAuthError as exc:
                log.error("cannot read the NATS issuer file", error=str(exc))
                raise Unavailable(
                    "nats_issuer_unreadable",
                    "Integrator credentials cannot be issued or revoked now: this service "
                    "cannot read its NATS issuer file. Ask your operator.",
                ) from exc
        return self._issuer

    async def issue(
        self,
        ctx: ServiceContext,
        clinic_id: str,
        label: str,
        issued_at: datetime,
        expires_at: datetime,
        public_key: str | None,
        start: ConsumerStart = ConsumerStart.ALL,
    ) -> tuple[UUID, IntegratorCredential]:
        """A new credential's id, and the credential (its ``creds`` is the only copy of its
        seed, if we made the key pair), with its consumers made (or left to the next sync if
        NATS did not answer)."""
        credential_id = uuid4()
        try:
            credential = self.issuer().integrator(
                name=integrator_name(credential_id),
                clinic_id=clinic_id,
                expires_at=int(expires_at.timestamp()),
                user_key=public_key,
            )
        except ReservedKeyError as exc:
            raise Conflict(
                "public_key_reserved",
                "That public key belongs to the platform itself; make a key pair of your own.",
            ) from exc
        events = credentials.issue_credential(
            None, credential_id, credential.user_key, label, issued_at, expires_at, start
        )
        try:
            [recorded] = await ctx.store.append(
                credentials.stream(credential_id), 0, events, clinic_id=clinic_id
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(
                "public_key_in_use",
                "That public key belongs to another credential; make a key pair for each one.",
            ) from exc
        self._nudge()  # its clinic may have been suspended meanwhile
        # Issued as the read model has it, so that a consumer made by a sync is the same.
        owner = ConsumerOwner(credential.name, clinic_id, start, recorded.occurred_at)
        try:
            await integrator_consumers.make(ctx.nats.jetstream(), owner)
        except (APIError, *DEPENDENCY_ERRORS) as exc:
            log.error(
                "an integrator credential's consumers were not made; the next sync makes them",
                nats_user=credential.name,
                error=str(exc) or type(exc).__name__,
            )
            self._nudge()
        return credential_id, credential

    async def revoke(self, ctx: ServiceContext, clinic_id: str, credential_id: UUID) -> None:
        """Revoke it (again: nothing changes), tell NATS, which closes its connections, and
        delete its consumers."""
        self.issuer()
        await commands.execute(
            ctx.store,
            credentials.stream(credential_id),
            clinic_id,
            scheduling_events,
            credentials.evolve_credential,
            credentials.revoke_credential,
            absent=not_found("integrator_credential"),
        )
        await self.push(ctx)
        try:
            await integrator_consumers.remove(ctx.nats.jetstream(), integrator_name(credential_id))
        except (APIError, *DEPENDENCY_ERRORS) as exc:
            log.error(
                "a revoked integrator credential's consumers were not deleted; the next sync "
                "deletes them",
                credential_id=str(credential_id),
                error=str(exc) or type(exc).__name__,
            )
            self._nudge()

    async def clinic_changed(self, ctx: ServiceContext) -> None:
        """After a clinic's suspension or reinstatement committed: its credentials follow."""
        if self.issuer_file is not None:
            await self.push(ctx)

    async def push(self, ctx: ServiceContext) -> bool:
        """Push the revocations Postgres holds now; whether NATS took them. After a failure
        (logged) :meth:`keep_nats_in_step` tries again at once, then with back-off."""
        if await self._push(ctx):
            return True
        self._nudge()
        return False

    def _nudge(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def keep_nats_in_step(self, ctx: ServiceContext) -> None:
        """The background task (a ``ServiceDefinition`` task): push and bring the consumers in
        step at start, every ``sync_interval_s``, when woken, and after a failure again with
        back-off."""
        if self.issuer_file is None:
            log.info("integrator credentials are off: no NATS issuer file is configured")
            return
        self._wake = wake = asyncio.Event()
        retry_in = RETRY_FIRST_S
        while True:
            wake.clear()  # before reading: a change committed from now on wakes it again
            pushed = await self._push(ctx)
            if await self._keep_consumers(ctx) and pushed:
                retry_in, wait = RETRY_FIRST_S, self.sync_interval_s
            else:
                wait, retry_in = retry_in, min(retry_in * 2, self.sync_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)

    async def _keep_consumers(self, ctx: ServiceContext) -> bool:
        async def owners_now() -> list[ConsumerOwner]:
            async with ctx.pool.acquire() as conn:
                return await consumer_owners(conn)

        try:
            await integrator_consumers.converge(ctx.nats.jetstream(), owners_now)
        except (APIError, *DEPENDENCY_ERRORS) as exc:
            log.error(
                "integrators' consumers were not brought in step with Postgres; will retry",
                error=str(exc) or type(exc).__name__,
            )
            return False
        return True

    async def _push(self, ctx: ServiceContext) -> bool:
        try:
            async with ctx.pool.acquire() as conn, conn.transaction():
                issued_at: int = await conn.fetchval(
                    "UPDATE nats_account_claims SET issued_at = greatest("
                    "floor(extract(epoch FROM clock_timestamp()))::bigint, issued_at + 1) "
                    "RETURNING issued_at"
                )
                refused = await refused_keys(conn)
            issuer = self.issuer()
            refused = _without_platform_users(refused, issuer)
            await publish_account(nats_servers(ctx.settings.nats_url), issuer, refused, issued_at)
        except (NatsAuthError, Unavailable, ValueError, *DEPENDENCY_ERRORS) as exc:
            log.error(
                "NATS was not told which integrator credentials to refuse; will retry",
                error=str(exc) or type(exc).__name__,
            )
            return False
        log.debug("integrator revocations pushed to NATS", refused=len(refused))
        return True


def _without_platform_users(refused: dict[str, int], issuer: Issuer) -> dict[str, int]:
    """``refused`` without the platform's own users' keys: a credential issued with one of them
    before they were refused must not take a service down when it is revoked."""
    kept = {key: at for key, at in refused.items() if key not in issuer.reserved_keys}
    if len(kept) < len(refused):
        log.error(
            "an integrator credential has the public key of one of the platform's own NATS "
            "users; that key is left out of the revocations",
            keys=sorted(set(refused) - set(kept)),
        )
    return kept
