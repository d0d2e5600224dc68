"""Who is calling: a signed claim that travels with a request/reply call.

NATS tells a responder nothing about who published a request. Where that matters (a media
node records, seats and releases for signaling alone), the caller proves who it is: it sends
its NATS user JWT (signed at setup by the platform's services key) and its nkey's signature
over the action, the time and the body's SHA-256. The responder accepts the claim when the JWT
is signed by the key that signed its own, the signature is the JWT's key's, and the time is
within :data:`MAX_SKEW_S`; the caller is then the JWT's name (the service).

The publish rights of :mod:`runtime.nats_permissions` already keep every other service and
integrator off the media nodes' subjects; the claim is the responder's own check, which holds
even for a credential that may publish there (a media node forwarding to another).
"""

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from runtime.nats_jwt import (
    NatsAuthError,
    decode_jwt,
    keypair,
    read_creds,
    verify_jwt,
    verify_signature,
)

CALLER_JWT = "Antechamber-Caller"
CALLER_SIGNATURE = "Antechamber-Caller-Signature"
MAX_SKEW_S = 60.0
"""How old (or how far ahead) a claim may be: a captured request replays for no longer."""


class NotTheCaller(PermissionError):
    """A request without a valid claim, or from a caller the endpoint does not serve."""


def _statement(action: str, at_ms: int, body: bytes) -> bytes:
    return f"{action}\n{at_ms}\n{hashlib.sha256(body).hexdigest()}".encode()


@dataclass(frozen=True)
class Identity:
    """A service's NATS user, able to sign claims as it (from its ``.creds`` file)."""

    name: str
    jwt: str
    seed: str
    issuer: str
    """The key that signed its JWT: the services key, trusted to name the other services."""

    @classmethod
    def load(cls, creds: Path) -> "Identity":
        try:
            token, seed = read_creds(creds.read_text())
        except OSError as exc:
            raise NatsAuthError(f"cannot read NATS credentials {creds}: {exc}") from exc
        claims = decode_jwt(token)
        return cls(str(claims.get("name", "")), token, seed, str(claims.get("iss", "")))

    def headers(self, action: str, body: bytes, now: float | None = None) -> dict[str, str]:
        """The claim, as headers for a request of ``action`` carrying ``body``."""
        at_ms = int((time.time() if now is None else now) * 1000)
        signature = keypair(self.seed).sign(_statement(action, at_ms, body))
        encoded = base64.urlsafe_b64encode(bytes(signature)).decode().rstrip("=")
        return {CALLER_JWT: self.jwt, CALLER_SIGNATURE: f"{at_ms}.{encoded}"}

    def caller(
        self, headers: Mapping[str, str] | None, action: str, body: bytes, now: float | None = None
    ) -> str:
        """The name of the service that sent this request, proved by its claim; raises
        :class:`NotTheCaller` when there is no claim or it does not hold."""
        headers = headers or {}
        token, signed = headers.get(CALLER_JWT), headers.get(CALLER_SIGNATURE)
        if not token or not signed:
            raise NotTheCaller("the request carries no caller claim")
        at, _, encoded = signed.partition(".")
        try:
            at_ms = int(at)
            signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            claims = verify_jwt(token, [self.issuer])
            verify_signature(str(claims["sub"]), _statement(action, at_ms, body), signature)
        except (ValueError, KeyError, NatsAuthError) as exc:
            raise NotTheCaller(f"the caller claim does not hold: {exc}") from exc
        now_ms = (time.time() if now is None else now) * 1000
        if abs(now_ms - at_ms) > MAX_SKEW_S * 1000:
            raise NotTheCaller("the caller claim is too old (or from the future)")
        return str(claims.get("name", ""))


def signing_as(nc: NATS, identity: Identity) -> NATS:
    """``nc`` with every request signed as ``identity``: for tools and tests that stand in
    for a service (a benchmark asking media for seats as signaling would)."""
    unsigned = nc.request

    async def request(
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,  # noqa: ASYNC109 - nats-py's own signature
        old_style: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        if headers is None:
            headers = identity.headers(subject.rsplit(".", 1)[-1], payload)
        return await unsigned(
            subject, payload, timeout=timeout, old_style=old_style, headers=headers
        )

    nc.request = request  # type: ignore[method-assign]
    return nc
