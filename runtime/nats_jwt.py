"""NATS's own credential formats: nkeys, JWTs signed with them, and ``.creds`` files.

An nkey is an ed25519 key pair whose public half reads as text with a role prefix (``O``
operator, ``A`` account, ``U`` user) and a CRC-16; a NATS JWT is claims signed with one
(``alg: ed25519-nkey``), its ``iss`` the signer's public key. Nothing here knows what the
platform signs (:mod:`runtime.nats_auth` does).
"""

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}

_PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}


class NatsAuthError(RuntimeError):
    """Credentials that cannot be made or read (a damaged or incomplete auth directory)."""


def new_seed(kind: str) -> str:
    """A fresh nkey seed (256 bits from ``secrets``) for an operator, account or user."""
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), _PREFIXES[kind])).decode()


def keypair(seed: str) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(seed.encode()))


def public_key(seed: str) -> str:
    return bytes(keypair(seed).public_key).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: Mapping[str, Any], signer_seed: str) -> str:
    """A NATS JWT: ``claims`` with ``iss`` (the signer's public key), ``iat`` and ``jti``
    (the base32 SHA-256 of the claims, as the Go library makes it) added, signed with ed25519."""
    body = dict(claims)
    body["iss"] = public_key(signer_seed)
    body.setdefault("iat", int(time.time()))
    body.pop("jti", None)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps(JWT_HEADER, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = keypair(signer_seed).sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(bytes(signature))}"


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of a JWT, not verified (see :func:`verify_jwt`)."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise NatsAuthError("not a NATS JWT") from exc
    if not isinstance(claims, dict):
        raise NatsAuthError("not a NATS JWT")
    return claims


def verify_jwt(token: str, issuers: Iterable[str]) -> dict[str, Any]:
    """The claims, if the JWT is signed by one of ``issuers`` (public keys) and not expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise NatsAuthError("not a NATS JWT")
    claims = decode_jwt(token)
    issuer = claims.get("iss")
    if issuer not in set(issuers):
        raise NatsAuthError("the JWT is not signed by a trusted key")
    try:
        signature = _unb64(parts[2])
    except ValueError as exc:
        raise NatsAuthError("not a NATS JWT") from exc
    verify_signature(str(issuer), f"{parts[0]}.{parts[1]}".encode(), signature)
    expires = claims.get("exp")
    if expires is not None and int(expires) <= time.time():
        raise NatsAuthError("the JWT has expired")
    return claims


def _raw_public_key(key: str, prefix: int | None = None) -> bytes:
    """The 32 bytes of a public nkey, its prefix and CRC-16 checked."""
    try:
        data = base64.b32decode(key + "=" * (-len(key) % 8))
    except (ValueError, TypeError) as exc:
        raise NatsAuthError("not a public nkey") from exc
    if len(data) != 35 or not nkeys.valid_public_prefix_byte(data[0]):
        raise NatsAuthError("not a public nkey")
    if prefix is not None and data[0] != prefix:
        raise NatsAuthError("a public nkey of another kind")
    if int.from_bytes(data[33:], "little") != nkeys.crc16(bytearray(data[:33])):
        raise NatsAuthError("a public nkey with a bad checksum")
    return data[1:33]


def verify_signature(key: str, message: bytes, signature: bytes) -> None:
    """Raises :class:`NatsAuthError` unless ``signature`` is ``key``'s over ``message``."""
    try:
        VerifyKey(_raw_public_key(key)).verify(message, signature)
    except BadSignatureError as exc:
        raise NatsAuthError("the signature does not hold") from exc


def creds_file(user_jwt: str, user_seed: str) -> str:
    """The ``.creds`` text nats-py (``user_credentials=``) and the ``nats`` CLI read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def read_creds(text: str) -> tuple[str, str]:
    """(user JWT, user seed) from a ``.creds`` file's text."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        jwt_at = lines.index("-----BEGIN NATS USER JWT-----") + 1
        seed_at = lines.index("-----BEGIN USER NKEY SEED-----") + 1
        return lines[jwt_at], lines[seed_at]
    except (ValueError, IndexError) as exc:
        raise NatsAuthError("not a NATS credentials file") from exc


def is_user_key(key: str) -> bool:
    """A valid public nkey of a user (``U...``, with a good checksum)."""
    try:
        _raw_public_key(key, nkeys.PREFIX_BYTE_USER)
    except NatsAuthError:
        return False
    return True
