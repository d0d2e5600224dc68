"""Which node hosts which room: two NATS KV buckets, written with compare-and-set.

``media-nodes`` holds one :class:`NodeCard` per node (key: its id), put again every heartbeat
and deleted when the node stops. ``media-rooms`` maps a room (key: its id in hex) to the id
of the node that owns it. A room is placed with ``create``, which succeeds only if the key is
absent: of two nodes racing, exactly one wins and the other reads the winner. A room whose
owner is dead is taken over with ``update(last=revision)``, which succeeds only if nobody
moved the room since it was read. So a room has one owner at a time.

A node is live while its card's ``seen_at`` is within ``node_ttl_s`` of this node's clock
(younger, or ahead by less than that): node clocks must agree to well within that (NTP does).
"""

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import structlog
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import AwareDatetime, BaseModel, ValidationError

from runtime.clock import Clock
from services.media.config import MediaSettings

log = structlog.get_logger(__name__)

NODES_BUCKET = "media-nodes"
ROOMS_BUCKET = "media-rooms"
CARD_MAX_AGE_S = 600.0
"""The bucket forgets the card of a node that died without leaving after this long."""
_WRONG_LAST_SEQUENCE = (10071, 10164)


class NodeCard(BaseModel):
    """What a node says about itself in ``media-nodes``."""

    node_id: str
    public_url: str
    rooms: int
    max_rooms: int
    seen_at: AwareDatetime

    def live(self, now: datetime, ttl: timedelta) -> bool:
        # Both ways: a card from further ahead than the ttl was written by a clock that does
        # not agree with ours, and would otherwise pass for live long after its node died.
        return abs(now - self.seen_at) < ttl

    @property
    def full(self) -> bool:
        return self.rooms >= self.max_rooms


def least_loaded(
    cards: Iterable[NodeCard], now: datetime, ttl: timedelta, *, besides: str | None = None
) -> NodeCard | None:
    """The live node with the lowest share of its rooms in use that can take one more."""
    fit = [c for c in cards if c.live(now, ttl) and not c.full and c.node_id != besides]
    return min(fit, key=lambda c: (c.rooms / c.max_rooms, c.node_id), default=None)


@dataclass(frozen=True)
class Owner:
    node_id: str
    revision: int
    """The room key's KV revision, for compare-and-set."""


@dataclass(frozen=True)
class Placed:
    owner: Owner
    won: bool
    """This node's write put the room there (else it read another node's)."""


async def open_bucket(
    js: JetStreamContext, bucket: str, ttl: float | None = None, replicas: int = 1
) -> KeyValue:
    """The bucket, created if missing (safe when several nodes start at once), with
    ``replicas`` copies: a bucket found with fewer is raised to that many, so placement
    survives the loss of a NATS node on a cluster as the services' streams do."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        try:
            return await js.create_key_value(bucket=bucket, history=1, ttl=ttl, replicas=replicas)
        except APIError:  # another node created it first, perhaps with other limits
            kv = await js.key_value(bucket)
    stream = f"KV_{bucket}"
    config = (await js.stream_info(stream)).config
    if (config.num_replicas or 1) < replicas:
        config.num_replicas = replicas
        await js.update_stream(config)
        log.info("placement bucket replicated", bucket=bucket, replicas=replicas)
    return kv


def room_key(room_id: UUID) -> str:
    return room_id.hex


@dataclass
class Placement:
    """One node's view of the cluster, and its compare-and-set writes to it."""

    nodes: KeyValue
    rooms: KeyValue
    settings: MediaSettings
    clock: Clock
    cards: dict[str, NodeCard] = field(default_factory=dict)
    """Every node's latest card, kept by :meth:`watch_nodes`."""

    @classmethod
    async def open(
        cls, js: JetStreamContext, settings: MediaSettings, clock: Clock, replicas: int = 1
    ) -> "Placement":
        nodes = await open_bucket(js, NODES_BUCKET, ttl=CARD_MAX_AGE_S, replicas=replicas)
        rooms = await open_bucket(js, ROOMS_BUCKET, replicas=replicas)
        return cls(nodes, rooms, settings, clock)

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.node_ttl_s)

    async def owner(self, room_id: UUID) -> Owner | None:
        try:
            entry = await self.rooms.get(room_key(room_id))
        except KeyNotFoundError:
            return None
        return Owner((entry.value or b"").decode(), entry.revision or 0)

    async def place(self, room_id: UUID, over: Owner | None = None) -> Placed | None:
        """Put the room on the least-loaded live node; ``over`` a dead owner's placement.

        None when no live node can take another room. Losing the race returns the winner.
        """
        key = room_key(room_id)
        reloaded = False
        while True:
            besides = over.node_id if over else None
            card = least_loaded(self.cards.values(), self.clock(), self.ttl, besides=besides)
            if card is None and not reloaded:
                # The watch can lag behind the bucket (a NATS server failing over restarts
                # it): read the cards afresh before saying no node can take the room.
                await self.reload()
                reloaded = True
                continue
            if card is None:
                return None
            value = card.node_id.encode()
            try:
                if over is None:
                    revision = await self.rooms.create(key, value)
                else:
                    revision = await self.rooms.update(key, value, last=over.revision)
            except KeyWrongLastSequenceError:
                winner = await self.owner(room_id)
                if winner is None:  # placed and emptied again meanwhile: place it afresh
                    over = None
                    continue
                return Placed(winner, won=False)
            # Count it at once, so a burst of new rooms does not all go to one node.
            self.cards[card.node_id] = card.model_copy(update={"rooms": card.rooms + 1})
            log.info("room placed", room_id=str(room_id), node_id=card.node_id, over=besides)
            return Placed(Owner(card.node_id, revision), won=True)

    async def unplace(self, room_id: UUID, revision: int) -> bool:
        """Remove the room's placement if it is still at ``revision``."""
        try:
            await self.rooms.delete(room_key(room_id), last=revision)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def is_live(self, node_id: str) -> bool:
        """Whether the node's heartbeat is fresh, read from the bucket now (not the view)."""
        try:
            entry = await self.nodes.get(node_id)
            card = NodeCard.model_validate_json(entry.value or b"")
        except (KeyNotFoundError, ValidationError):
            return False
        return card.live(self.clock(), self.ttl)

    async def reload(self) -> None:
        """Bring the view of the nodes up to their cards in the bucket; a card the view holds
        from the same heartbeat or a later one stays (it counts rooms placed since)."""
        try:
            keys = await self.nodes.keys()
        except NoKeysError:
            keys = []
        cards: dict[str, NodeCard] = {}
        for key in keys:
            try:
                entry = await self.nodes.get(key)
                card = NodeCard.model_validate_json(entry.value or b"")
            except (KeyNotFoundError, ValidationError):
                continue
            held = self.cards.get(key)
            cards[key] = held if held is not None and held.seen_at >= card.seen_at else card
        mine = self.cards.get(self.node_id)
        if mine is not None and self.node_id not in cards:
            cards[self.node_id] = mine  # this node's own last put, even if the read lags it
        self.cards = cards

    async def announce(self, rooms: int) -> None:
        """Put this node's card: it lives, holds ``rooms`` and takes at most ``max_rooms``."""
        s = self.settings
        card = NodeCard(
            node_id=s.node_id,
            public_url=s.public_url,
            rooms=rooms,
            max_rooms=s.max_rooms,
            seen_at=self.clock(),
        )
        await self.nodes.put(s.node_id, card.model_dump_json().encode())
        self.cards[s.node_id] = card

    async def leave(self) -> None:
        """Delete this node's card, so the others take its rooms over at once."""
        self.cards.pop(self.node_id, None)
        await self.nodes.delete(self.node_id)

    async def watch_nodes(self) -> None:
        """Keep :attr:`cards` up to date with the bucket, until cancelled."""
        while True:
            try:
                watcher = await self.nodes.watchall()
            except Exception:
                log.warning("cannot watch the media nodes yet", exc_info=True)
                await asyncio.sleep(self.settings.heartbeat_s)
                continue
            try:
                async for entry in watcher:
                    if entry is None:  # the end of the initial values
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE):
                        self.cards.pop(entry.key, None)
                        continue
                    try:
                        self.cards[entry.key] = NodeCard.model_validate_json(entry.value or b"")
                    except ValidationError:
                        log.warning("unreadable media node card", node_id=entry.key)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
