"""Participant tokens: short-lived JWTs that signaling mints and a media node checks.

A token lets one person's browser connect to the media node that holds their seat, in one
room, with one role. It is signed with HS256 under a key that signaling and the media nodes
share (``ANTECHAMBER_PARTICIPANT_KEY`` or ``_FILE``); verification pins the algorithm and
checks signature, ``aud``, ``iss``, ``nbf``, ``exp`` and the room.
"""

import time
from pathlib import Path

import jwt
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.media import (
    PARTICIPANT_TOKEN_ALGORITHM,
    PARTICIPANT_TOKEN_AUDIENCE,
    PARTICIPANT_TOKEN_ISSUER,
    ParticipantClaims,
)
from contracts.signaling import CallRole
from runtime.settings import secret_value

MIN_KEY_LENGTH = 32
LEEWAY_S = 2.0


class ParticipantTokenError(ValueError):
    """A token that does not let its holder in, with the reason."""


class ParticipantKeySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_", extra="ignore")

    participant_key: SecretStr | None = Field(
        default=None, description="Signs participant tokens; shared by signaling and media."
    )
    participant_key_file: Path | None = Field(default=None, description="A file holding it.")

    def key(self) -> str:
        raw = secret_value(self.participant_key, self.participant_key_file)
        if not raw or len(raw) < MIN_KEY_LENGTH:
            raise SystemExit(
                "no participant key (or shorter than 32 characters): set "
                "ANTECHAMBER_PARTICIPANT_KEY (or _FILE) to the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, "
                "the same on signaling and media"
            )
        return raw


def mint(
    key: str,
    *,
    participant_id: str,
    room_id: str,
    clinic_id: str,
    role: CallRole,
    node_id: str,
    ttl_s: float,
    now: float | None = None,
    audience: str = PARTICIPANT_TOKEN_AUDIENCE,
) -> tuple[str, int]:
    """A signed token and its expiry (epoch seconds); ``audience`` says what it opens (a
    seat's media connection, or a pre-call network test: ``NETWORK_TEST_AUDIENCE``)."""
    issued = int(now if now is not None else time.time())
    expires = issued + max(1, int(ttl_s))
    claims = ParticipantClaims(
        sub=participant_id,
        room=room_id,
        clinic=clinic_id,
        role=role,
        node=node_id,
        nbf=issued,
        exp=expires,
        aud=audience,
    )
    return jwt.encode(claims.model_dump(mode="json"), key, PARTICIPANT_TOKEN_ALGORITHM), expires


def verify(
    key: str,
    token: str,
    *,
    room_id: str,
    node_id: str | None = None,
    audience: str = PARTICIPANT_TOKEN_AUDIENCE,
) -> ParticipantClaims:
    """The claims of a token for ``room_id`` and ``audience``; raises
    :class:`ParticipantTokenError` otherwise."""
    try:
        raw = jwt.decode(
            token,
            key,
            algorithms=[PARTICIPANT_TOKEN_ALGORITHM],
            audience=audience,
            issuer=PARTICIPANT_TOKEN_ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "nbf", "aud", "iss", "sub"]},
        )
        claims = ParticipantClaims.model_validate(raw)
    except jwt.ExpiredSignatureError as exc:
        raise ParticipantTokenError("the participant token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise ParticipantTokenError("the participant token is not valid yet") from exc
    except (jwt.InvalidTokenError, ValidationError) as exc:
        raise ParticipantTokenError(f"the participant token is not valid ({exc})") from exc
    if claims.room != room_id:
        raise ParticipantTokenError("the participant token is for another room")
    if node_id is not None and claims.node != node_id:
        raise ParticipantTokenError("the participant token is for another media node")
    return claims
