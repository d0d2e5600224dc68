"""Settings of the notify service, read from the environment (``ANTECHAMBER_NOTIFY_*``)."""

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_NOTIFY_", extra="ignore")

    smtp_host: str = Field(default="localhost", description="The mail relay that sends for us.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (port 587), tls (implicit, port 465), none (a local sink only).",
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=30.0, gt=0, description="Per SMTP command.")
    smtp_connections: int = Field(
        default=4, ge=1, le=64, description="Messages sent at the same time."
    )
    sender_address: str = Field(
        default="no-reply@antechamber.invalid",
        description="The From address; the display name is the clinic's name.",
    )
    max_attempts: int = Field(
        default=8, ge=1, description="Tries on temporary failures before giving up."
    )
    retry_base_s: float = Field(
        default=30.0, gt=0, description="First retry after this; doubles each time (max 1 h)."
    )
    claim_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a claimed message stays with its process after the process "
        "stops renewing the claim (it renews every quarter of this while it runs); after that "
        "the process is assumed dead and the message is taken over.",
    )
    link_wait_s: float = Field(
        default=600.0, gt=0, description="How long a message waits for its link from links."
    )
    poll_s: float = Field(default=0.5, gt=0, description="How often due messages are looked for.")
    batch: int = Field(default=64, ge=1, le=1000, description="Messages claimed at a time.")
