"""Which clinic an API key opens: read once, then kept until the key or its clinic changes.

Entries are keyed by the key's SHA-256 (never the key) and tagged ``key:<key_id>`` and
``clinic:<clinic_id>``. The triggers of ``sql/0002_key_change_notices.sql`` notice every change
to ``api_keys``, ``api_key_secrets`` and ``clinics`` (a revocation, a suspension, new settings)
to every replica's listener (``runtime.invalidation``), which drops the tagged entries. The
replica that made the change forgets at once and answers only once the notice has gone out
(``forget_clinic``).
Only known keys are kept: a stream of made-up keys reads Postgres and fills nothing.
"""

from dataclasses import dataclass
from typing import Any

import asyncpg

from contracts.scheduling import ClinicSettings
from runtime.context import ServiceContext
from runtime.invalidation import Invalidations, TaggedCache


@dataclass(frozen=True)
class KeyHolder:
    """The clinic a key that is not revoked belongs to, as its requests need it."""

    clinic_id: str
    slug: str
    settings: ClinicSettings
    suspended: bool


class ClinicKeys:
    """The key -> clinic lookup of one replica, with its cache and the cache's listener."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.cache: TaggedCache[bytes, KeyHolder] = TaggedCache(
            "scheduling", "clinic_keys", max_entries
        )
        """Bypassed (every lookup reads Postgres) until ``listen`` is connected."""
        self._invalidations: Invalidations | None = None

    async def holder(self, pool: "asyncpg.Pool[Any]", digest: bytes) -> KeyHolder | None:
        """The clinic of the key whose SHA-256 is ``digest``; None if unknown or revoked."""

        async def read() -> tuple[KeyHolder, tuple[str, str]] | None:
            # By hash, so no stored key is compared byte by byte with the input.
            row = await pool.fetchrow(
                "SELECT k.key_id, c.clinic_id, c.slug, c.settings, c.suspended "
                "FROM api_key_secrets s JOIN api_keys k USING (key_id) "
                "JOIN clinics c USING (clinic_id) "
                "WHERE s.secret_hash = $1 AND k.revoked_at IS NULL",
                digest,
            )
            if row is None:
                return None
            holder = KeyHolder(
                row["clinic_id"],
                row["slug"],
                ClinicSettings.model_validate(row["settings"]),
                row["suspended"],
            )
            return holder, (f"key:{row['key_id']}", f"clinic:{row['clinic_id']}")

        return await self.cache.read_through(digest, read)

    async def forget_clinic(self, clinic_id: str) -> None:
        """After a change to the clinic or its keys committed: forget them here at once, and
        return once the change's notice has reached this replica's listener, so it has gone
        out to every other replica's too (Postgres sends notices in commit order)."""
        self.cache.drop(f"clinic:{clinic_id}")
        if self._invalidations is not None:
            await self._invalidations.synced()

    async def listen(self, ctx: ServiceContext) -> None:
        """The background task that keeps the cache honest (a ``ServiceDefinition`` task)."""
        dsn = ctx.settings.database_url.get_secret_value()
        self._invalidations = Invalidations(dsn, ctx.store.schema, [self.cache])
        await self._invalidations.run()
