"""Settings of the scheduling service, read from the environment."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.sealing import secret_digest
from runtime.settings import secret_value


class SchedulingSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_OPERATOR_KEY`` (or ``..._FILE``), ``ANTECHAMBER_BOOKING_*``,
    ``ANTECHAMBER_NATS_ISSUER_FILE`` and ``ANTECHAMBER_INTEGRATOR_SYNC_INTERVAL_S``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_", extra="ignore")

    operator_key: SecretStr | None = Field(
        default=None, description="The key that manages clinics (Authorization: Bearer ...)."
    )
    operator_key_file: Path | None = Field(
        default=None, description="A file holding the operator key, e.g. a mounted Secret."
    )
    booking_per_minute: float = Field(
        default=6.0, gt=0, description="Public bookings per minute from one address."
    )
    booking_burst: int = Field(default=3, ge=1)
    nats_issuer_file: Path | None = Field(
        default=None,
        description="The issuer.json of the platform's NATS authentication set: what issues "
        "integrators' NATS credentials and revokes them. None: the integrator credential API "
        "answers 503.",
    )
    integrator_sync_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the revoked integrator credentials are pushed to NATS again, so "
        "a server that lost them (restarted from an older copy) or a failed push converges, "
        "and the integrators' consumers brought in step (made on a stream that appeared since, "
        "deleted after expiry).",
    )

    def operator_key_hash(self) -> bytes | None:
        """SHA-256 of the operator key, or None when none is configured."""
        key = secret_value(self.operator_key, self.operator_key_file)
        return secret_digest(key) if key else None
