"""Settings shared by every service, read from the environment."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.client_address import TrustedProxies


class RuntimeSettings(BaseSettings):
    """One service process. Env vars: ``DATABASE_URL``, ``NATS_URL``, ``ANTECHAMBER_*``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        validation_alias="DATABASE_URL",
        description="Postgres DSN; each service uses its own schema in it.",
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias="NATS_URL",
        description="A NATS server, or a cluster's servers separated by commas.",
    )
    nats_creds: Path | None = Field(
        default=None,
        description="This service's NATS credentials (a .creds file: user JWT and nkey seed).",
    )
    nats_creds_dir: Path | None = Field(
        default=None,
        description="A folder of credentials, <service>.creds each (the embedded platform's); "
        "ANTECHAMBER_NATS_CREDS wins when both are set.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="Where spans go; none: no spans are made at all."
    )
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies JetStream keeps of each stream: 3 on a production cluster (R3).",
    )
    db_pool_size: int = Field(default=10, ge=2)
    lock_timeout_ms: int = Field(
        default=10_000, description="How long an append waits for the store's commit-order lock."
    )
    relay_batch_size: int = Field(default=500, ge=1)
    relay_ack_timeout_s: float = Field(default=5.0, gt=0)
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_ack_wait_s: float = Field(default=30.0, gt=0)
    consumer_max_batch: int = Field(
        default=256,
        ge=1,
        description="Most messages a consumer handles in one transaction (and keeps requested).",
    )
    inbox_prune_interval_s: float = Field(
        default=60.0, gt=0, description="How often consumers' handled-event records are pruned."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies whose X-Forwarded-For / Forwarded headers are believed: addresses "
        "or networks separated by commas, e.g. 10.0.0.0/8. Empty: none; the socket's peer is "
        "the client.",
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        return str(TrustedProxies.parse(value))  # refuses a bad entry at start, normalised

    @property
    def trusted_proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.forwarded_allow_ips)


def nats_creds_for(settings: RuntimeSettings, service: str) -> Path | None:
    """The credentials ``service`` connects to NATS with: its own file, else its file in the
    credentials folder; None when neither is set (a NATS server without authentication)."""
    if settings.nats_creds is not None:
        return settings.nats_creds
    if settings.nats_creds_dir is not None:
        own = settings.nats_creds_dir / f"{service}.creds"
        # A service the folder has no user for (a test's ad-hoc one) connects as the tool
        # user that NATS_CREDS names, as a script would.
        return own if own.exists() else None
    return None


def secret_value(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given in the environment or in a file (a mounted Kubernetes Secret, which wins);
    None when neither holds one."""
    if file is not None:
        return file.read_text().strip() or None
    return value.get_secret_value() if value is not None else None


def nats_servers(url: str) -> list[str]:
    """``NATS_URL`` as a list: one URL, or a cluster's URLs separated by commas (as the
    ``nats`` CLI takes them), so a process that starts while one node is down still connects."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("NATS_URL is empty")
    return servers
