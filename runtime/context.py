"""What a running service's handlers and routes get, built once at start."""

from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS

from runtime.caller import Identity
from runtime.eventstore import EventStore
from runtime.settings import RuntimeSettings


@dataclass
class ServiceContext:
    settings: RuntimeSettings
    pool: "asyncpg.Pool[Any]"
    store: EventStore
    nats: NATS
    identity: Identity | None = None
    """Its NATS user, to sign claims with and check others' (None: NATS without auth)."""
