"""Sealing join links for the services that deliver them.

The links service keeps only a token's SHA-256 to recognise it. Notify must still mail the
link (and mail it again in a reminder a day later), and a client portal must show it, so the
link travels and rests *sealed*: AES-256-GCM under a key that only the delivering services
hold (``ANTECHAMBER_LINK_KEY`` or ``ANTECHAMBER_LINK_KEY_FILE``). No raw token is in any
database, event or log.
"""

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.settings import secret_value

_NONCE = 12


class SealingError(ValueError):
    """A sealed value that this key cannot open (another key, or tampered with)."""


class SealingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_", extra="ignore")

    link_key: SecretStr | None = Field(
        default=None, description="32 random bytes, base64url; seals join links in transit."
    )
    link_key_file: Path | None = Field(default=None, description="A file holding the key.")

    def sealer(self) -> "Sealer":
        raw = secret_value(self.link_key, self.link_key_file)
        if not raw:
            raise SystemExit(
                "no link key: set ANTECHAMBER_LINK_KEY (or _FILE) to the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return Sealer(raw)


def secret_digest(secret: str) -> bytes:
    """SHA-256 of a token or key: the only form in which one is stored or compared. At 128 bits
    of entropy or more, a plain hash is an adequate stored form (OWASP ASVS 6.5.2)."""
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


class Sealer:
    def __init__(self, key: str) -> None:
        raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        if len(raw) != 32:
            raise ValueError("the link key must be 32 bytes, base64url-encoded")
        self._aead = AESGCM(raw)
        # Names the key (not secret) so a value sealed under another key is reported as such.
        self.key_id = hashlib.sha256(raw).hexdigest()[:8]

    def seal(self, value: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), self.key_id.encode())
        return f"{self.key_id}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def unseal(self, sealed: str) -> str:
        key_id, _, body = sealed.partition(".")
        if key_id != self.key_id:
            raise SealingError(f"sealed under key {key_id}, this service has key {self.key_id}")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealingError("the sealed value was altered or is not one of ours") from exc
