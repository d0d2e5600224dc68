"""Settings of one media node, read from the environment."""

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.ids import SUBJECT_PART


def new_node_id() -> str:
    """A short id for this process: ``m`` and 8 hex digits, one NATS subject token."""
    return f"m{secrets.token_hex(4)}"


class MediaSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_MEDIA_*``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_MEDIA_", extra="ignore")

    node_id: str = Field(
        default_factory=new_node_id,
        pattern=SUBJECT_PART,
        description="This node's name in the cluster and in its subjects; random per process.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8104", description="Where browsers reach this node's media."
    )
    max_rooms: int = Field(default=50, ge=1, description="Rooms this node hosts at most.")
    reservation_s: float = Field(
        default=30.0, gt=0, description="A granted seat lapses unless a media connection claims it."
    )
    heartbeat_s: float = Field(default=2.0, gt=0, description="How often the node says it lives.")
    node_ttl_s: float = Field(
        default=6.0, gt=0, description="A node not heard from for this long is dead."
    )
    forward_wait_s: float = Field(
        default=1.0, gt=0, description="How long to wait for the node that owns a room."
    )
