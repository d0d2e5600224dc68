"""The ``links`` read model: every link and its state, kept in the append's transaction."""

from collections.abc import Sequence

from contracts.links import LinkDeprecated, LinkIssued, LinkRegenerated, LinkRevoked, links_events
from runtime.db import Executor
from runtime.eventstore import RecordedEvent


class LinksReadModel:
    name = "links"
    tables: Sequence[str] = ("links",)

    async def apply(self, conn: Executor, r: RecordedEvent) -> None:
        event = links_events.decode(r.type, r.schema_version, r.data)
        match event:
            case LinkIssued() | LinkRegenerated():
                if isinstance(event, LinkRegenerated):
                    await conn.execute(
                        "UPDATE links SET state = 'replaced', replaced_by = $2, changed_at = $3 "
                        "WHERE link_id = $1",
                        event.replaces_link_id,
                        event.link_id,
                        r.occurred_at,
                    )
                await conn.execute(
                    "INSERT INTO links (link_id, clinic_id, slot, kind, role, url_sealed, path, "
                    "session_id, room_id, client_id, attendee_id, practitioner_id, state, "
                    "issued_at, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                    "$11, $12, 'active', $13, $13)",
                    event.link_id,
                    r.clinic_id,
                    r.stream_id,
                    event.kind.value,
                    event.role.value,
                    event.url_sealed,
                    event.path,
                    event.session_id,
                    event.room_id,
                    event.client_id,
                    event.attendee_id,
                    event.practitioner_id,
                    r.occurred_at,
                )
            case LinkRevoked():
                await conn.execute(
                    "UPDATE links SET state = 'revoked', revoked_because = $2, changed_at = $3 "
                    "WHERE link_id = $1",
                    event.link_id,
                    event.because.value,
                    r.occurred_at,
                )
            case LinkDeprecated():
                await conn.execute(
                    "UPDATE links SET state = 'deprecated', sunset_at = $2, replaced_by = $3, "
                    "changed_at = $4 WHERE link_id = $1",
                    event.link_id,
                    event.sunset_at,
                    event.replaced_by,
                    r.occurred_at,
                )
