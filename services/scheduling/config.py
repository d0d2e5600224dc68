"""Settings of the scheduling service, read from the environment."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.sealing import secret_digest
from runtime.settings import secret_value


class SchedulingSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_OPERATOR_KEY`` (or ``..._FILE``) and ``ANTECHAMBER_BOOKING_*``."""

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

    def operator_key_hash(self) -> bytes | None:
        """SHA-256 of the operator key, or None when none is configured."""
        key = secret_value(self.operator_key, self.operator_key_file)
        return secret_digest(key) if key else None
