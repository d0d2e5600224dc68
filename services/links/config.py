"""Settings of the links service, read from the environment."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LinksSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_PUBLIC_URL`` and ``ANTECHAMBER_RESOLVE_*``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_", extra="ignore")

    public_url: str = Field(
        default="http://127.0.0.1:8100",
        description="Where people open links: the front end serving /j/, /h/ and /r/.",
    )
    resolve_unknown_per_minute: float = Field(
        default=10.0, gt=0, description="Unknown tokens one address may try per minute."
    )
    resolve_unknown_burst: int = Field(default=20, ge=1)
    resolve_cache_entries: int = Field(
        default=50_000,
        ge=0,
        description="Links (and as many rooms' sessions) each replica keeps for resolution.",
    )
    resolve_new_session_wait_s: float = Field(
        default=1.0,
        ge=0,
        description="How long a host link naming a session this service has not heard of yet "
        "waits for scheduling's event before it is refused. Keep it below signaling's wait "
        "for one answer (ANTECHAMBER_SIGNALING_RPC_WAIT_S / 2: 1.5 s), so that signaling "
        "hears the refusal.",
    )
    resolve_room_title_wait_s: float = Field(
        default=0.3,
        ge=0,
        description="How long a resolution waits for scheduling to open a client room's title "
        "before it answers without it. With the new-session wait it must stay below "
        "signaling's wait for one answer (1.5 s).",
    )
    audit_flush_s: float = Field(default=1.0, gt=0, description="How often counts are saved.")
