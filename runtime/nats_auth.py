"""NATS decentralized (JWT) authentication: what the platform signs, who holds which key, and
the server config (the formats themselves are :mod:`runtime.nats_jwt`).

NATS checks every connection itself against claims we sign, so no process of ours sits on the
connection path (a down service never locks integrators or other services out):

- an **operator** (its identity key signs nothing after setup; a *signing key* re-signs the
  account when credentials are revoked) names a **system account** (server administration)
  and the **platform account**, where every service and integrator connects;
- the platform account has two signing keys. The *services* key signs each service's user
  at setup, with the allow-lists of :mod:`runtime.nats_permissions`; no running process holds
  it. The *integrators* key is **scoped**: the account claims fix the rights of any user it
  signs to the integrator template (one clinic's events, read live or through the consumers
  made for it, named after it), so the service that issues integrator credentials cannot
  mint anything stronger with it;
- revoking an integrator credential (or suspending its clinic) adds the user's key to the
  account's revocations; the account claims are re-signed and pushed to the servers through
  the system account, and the servers close that user's live connections at once.

Everything is generated once into a directory (:meth:`NatsAuth.ensure`): the operator and
account JWTs, ``creds/<user>.creds`` per service plus ``admin`` (full rights, for tools and
tests), ``issuer.json`` (what the credentials issuer needs, with the public keys of the
platform's own users, which it refuses for an integrator) and the claims a server
preloads (:meth:`NatsAuth.server_config` writes its configuration). ``antechamber
nats-auth init`` makes the same set for an operator's own cluster.
"""

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import structlog

from runtime.nats_jwt import (
    NatsAuthError,
    creds_file,
    decode_jwt,
    is_user_key,
    new_seed,
    public_key,
    read_creds,
    sign_jwt,
)
from runtime.nats_permissions import (
    CLINIC_TAG,
    INTEGRATOR_ROLE,
    Permissions,
    inbox_prefix,
    integrator_template,
)

PLATFORM_ACCOUNT = "ANTECHAMBER"
SYSTEM_ACCOUNT = "SYS"
ADMIN_USER = "admin"
CLAIMS_UPDATE_SUBJECT = "$SYS.REQ.CLAIMS.UPDATE"
CLAIMS_UPDATER = "claims-updater"
MAX_CONTROL_LINE = 16384
"""The longest protocol line the servers accept: a client's CONNECT carries its user JWT,
and a service's allow-lists make it longer than nats-server's default of 4 KiB."""

log = structlog.get_logger(__name__)


class ReservedKeyError(NatsAuthError):
    """A public key of one of the platform's own users (a service, admin, the claims updater)
    offered for an integrator: revoking that credential would revoke the platform's user."""


def _permission_claims(permissions: Permissions) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "pub": {"allow": list(permissions.publish)} if permissions.publish else {},
        "sub": {"allow": list(permissions.subscribe)} if permissions.subscribe else {},
    }
    if permissions.respond:
        claims["resp"] = {"max": 1, "ttl": 0}
    return claims


def user_claims(
    *,
    name: str,
    user_key: str,
    account_key: str,
    permissions: Permissions | None,
    tags: Sequence[str] = (),
    expires_at: int | None = None,
    scoped: bool = False,
) -> dict[str, Any]:
    """A user's claims. ``permissions`` None: none of its own; with ``scoped``, the template of
    the scoped signing key that signs it applies (the server refuses a scoped user that states
    any permission or limit of its own), else full rights."""
    nats: dict[str, Any] = {"issuer_account": account_key, "type": "user", "version": 2}
    if not scoped:
        nats |= {"subs": -1, "data": -1, "payload": -1}
    if permissions is not None:
        nats |= _permission_claims(permissions)
    if tags:
        nats["tags"] = list(tags)
    claims: dict[str, Any] = {"name": name, "sub": user_key, "nats": nats}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


def creds_inbox(path: Path) -> str:
    """The inbox prefix of the user in a ``.creds`` file: ``_INBOX_<its name>``."""
    try:
        token, _ = read_creds(path.read_text())
    except OSError as exc:
        raise NatsAuthError(f"cannot read NATS credentials {path}: {exc}") from exc
    name = decode_jwt(token).get("name")
    return inbox_prefix(str(name)) if name else "_INBOX"


def identity_options(creds: Path | None = None) -> dict[str, Any]:
    """``nats.connect`` options that connect as the user in ``creds`` (else the file that
    ``NATS_CREDS`` names, as the ``nats`` CLI reads it; else nobody), with replies on that
    user's own inbox prefix, the only one its rights let it read."""
    if creds is None and os.environ.get("NATS_CREDS"):
        creds = Path(os.environ["NATS_CREDS"])
    if creds is None:
        return {}
    return {"user_credentials": str(creds), "inbox_prefix": creds_inbox(creds)}


# -- the account -------------------------------------------------------------------------------


def account_claims(
    *,
    account_key: str,
    service_signer: str,
    integrator_signer: str,
    revocations: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The platform account: JetStream on, the two signing keys (the integrators' one scoped
    to the integrator template) and the revoked user keys (key: revoked at, in seconds)."""
    template = integrator_template()
    return {
        "name": PLATFORM_ACCOUNT,
        "sub": account_key,
        "nats": {
            "limits": _UNLIMITED | _JETSTREAM,
            "signing_keys": [
                service_signer,
                {
                    "kind": "user_scope",
                    "key": integrator_signer,
                    "role": INTEGRATOR_ROLE,
                    "template": {
                        **_permission_claims(template),
                        "subs": -1,
                        "data": -1,
                        "payload": -1,
                    },
                },
            ],
            "revocations": dict(revocations or {}),
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    }


_UNLIMITED: dict[str, Any] = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
"""An account's limits: none (an account whose limit is left out may hold nothing)."""
_JETSTREAM = {
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
    "max_ack_pending": -1,
}
"""JetStream on, with no limits of its own."""


def system_account_claims(account_key: str) -> dict[str, Any]:
    return {
        "name": SYSTEM_ACCOUNT,
        "sub": account_key,
        "nats": {
            "limits": dict(_UNLIMITED),
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    }


def operator_claims(operator_key: str, signing_key: str, system_account: str) -> dict[str, Any]:
    return {
        "name": "antechamber",
        "sub": operator_key,
        "nats": {
            "signing_keys": [signing_key],
            "system_account": system_account,
            "type": "operator",
            "version": 2,
        },
    }


# -- the issuer of integrator credentials ------------------------------------------------------


@dataclass(frozen=True)
class IntegratorCredential:
    name: str
    """Its NATS user name: also its inbox (``_INBOX_<name>``) and the name of the consumers
    made for it (one per event stream)."""
    user_key: str
    creds: str | None
    """The ``.creds`` text when we made its key pair (shown once, never stored); None when the
    integrator gave its public key."""
    expires_at: int
    jwt: str
    """The user JWT (also inside ``creds``): with a key of its own, the integrator pairs it with
    its seed. Not a secret without the seed."""


@dataclass(frozen=True)
class Issuer:
    """What the service that issues integrator credentials holds (``issuer.json``)."""

    account_key: str
    service_signer: str
    integrator_signer_seed: str
    operator_signer_seed: str
    system_creds: str
    reserved_keys: tuple[str, ...] = ()
    """The public keys of the platform's own users, which no integrator credential may have."""

    @classmethod
    def load(cls, path: Path) -> "Issuer":
        try:
            data = json.loads(path.read_text())
            keys = {k: str(data[k]) for k in cls.__dataclass_fields__ if k != "reserved_keys"}
            reserved = data.get("reserved_keys")
            if reserved is None:
                _warn_without_reserved_keys(path)
                reserved = []
            if not isinstance(reserved, list):
                raise TypeError("reserved_keys is not a list")
            return cls(**keys, reserved_keys=tuple(str(key) for key in reserved))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NatsAuthError(f"cannot read the NATS issuer file {path}: {exc}") from exc

    def integrator(
        self, *, name: str, clinic_id: str, expires_at: int, user_key: str | None = None
    ) -> IntegratorCredential:
        """A user JWT for one clinic's integrator, signed by the scoped integrators key."""
        seed = None
        if user_key is None:
            seed = new_seed("user")
            user_key = public_key(seed)
        elif not is_user_key(user_key):
            raise NatsAuthError("not a user's public nkey (U..., 56 characters)")
        elif user_key in self.reserved_keys:
            raise ReservedKeyError("the public key of one of the platform's own NATS users")
        claims = user_claims(
            name=name,
            user_key=user_key,
            account_key=self.account_key,
            permissions=None,
            tags=(f"{CLINIC_TAG}:{clinic_id}", f"role:{INTEGRATOR_ROLE}"),
            expires_at=expires_at,
            scoped=True,
        )
        token = sign_jwt(claims, self.integrator_signer_seed)
        creds = creds_file(token, seed) if seed is not None else None
        return IntegratorCredential(name, user_key, creds, expires_at, token)

    def account_jwt(self, revocations: Mapping[str, int], issued_at: int | None = None) -> str:
        """The platform account's claims with these revocations, signed now (or at
        ``issued_at``: the servers keep the newest claims they were given)."""
        claims = account_claims(
            account_key=self.account_key,
            service_signer=self.service_signer,
            integrator_signer=public_key(self.integrator_signer_seed),
            revocations=revocations,
        )
        if issued_at is not None:
            claims["iat"] = issued_at
        return sign_jwt(claims, self.operator_signer_seed)


@cache
def _warn_without_reserved_keys(path: Path) -> None:
    """Once per file and process: an issuer file made before the platform's own user keys were
    recorded in it cannot refuse them; re-signing the set (``antechamber nats-auth init``, or
    any start of ``make run``) records them."""
    log.warning(
        "the NATS issuer file lists no reserved keys: a service's public key offered for an "
        "integrator credential is not refused until the auth set is re-signed",
        issuer_file=str(path),
    )


# -- the whole set, on disk --------------------------------------------------------------------


@dataclass(frozen=True)
class NatsAuth:
    """An auth directory made by :meth:`ensure`."""

    folder: Path

    @property
    def creds_dir(self) -> Path:
        return self.folder / "creds"

    def creds(self, user: str) -> Path:
        path = self.creds_dir / f"{user}.creds"
        if not path.exists():
            raise NatsAuthError(f"no NATS credentials for {user!r} in {self.creds_dir}")
        return path

    @property
    def admin_creds(self) -> Path:
        return self.creds(ADMIN_USER)

    @property
    def issuer_file(self) -> Path:
        return self.folder / "issuer.json"

    def environment(self) -> dict[str, str]:
        """What a process started against this set needs: each service finds its own creds in
        the folder, tools (``NATS_CREDS``, as the ``nats`` CLI reads it) act as admin."""
        return {
            "ANTECHAMBER_NATS_CREDS_DIR": str(self.creds_dir),
            "ANTECHAMBER_NATS_ISSUER_FILE": str(self.issuer_file),
            "NATS_CREDS": str(self.admin_creds),
        }

    @classmethod
    def ensure(cls, folder: Path, services: Mapping[str, Permissions]) -> "NatsAuth":
        """The set in ``folder``: made on first use; on later uses, the keys are kept and
        every service's credentials re-signed (its rights follow the code)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys_file = folder / "keys.json"
        if keys_file.exists():
            keys = json.loads(keys_file.read_text())
        else:
            keys = {
                "operator": new_seed("operator"),
                "operator_signer": new_seed("operator"),
                "system_account": new_seed("account"),
                "account": new_seed("account"),
                "service_signer": new_seed("account"),
                "integrator_signer": new_seed("account"),
                "created_at": str(int(time.time())),
            }
            _write_private(keys_file, json.dumps(keys, indent=2))
        auth = cls(folder)
        auth._write(keys, services)
        return auth

    def _write(self, keys: Mapping[str, str], services: Mapping[str, Permissions]) -> None:
        account = public_key(keys["account"])
        system = public_key(keys["system_account"])
        service_signer = public_key(keys["service_signer"])
        operator_jwt = sign_jwt(
            operator_claims(
                public_key(keys["operator"]), public_key(keys["operator_signer"]), system
            ),
            keys["operator"],
        )
        system_jwt = sign_jwt(system_account_claims(system), keys["operator_signer"])
        self.creds_dir.mkdir(exist_ok=True, mode=0o700)
        users: dict[str, tuple[Permissions | None, str, str]] = {
            name: (permissions, account, keys["service_signer"])
            for name, permissions in services.items()
        }
        users[ADMIN_USER] = (None, account, keys["service_signer"])
        reserved = []
        for name, (permissions, issuer_account, signer) in users.items():
            seed = _kept_seed(self.creds_dir / f"{name}.creds")
            reserved.append(public_key(seed))
            token = sign_jwt(
                user_claims(
                    name=name,
                    user_key=public_key(seed),
                    account_key=issuer_account,
                    permissions=permissions,
                ),
                signer,
            )
            _write_private(self.creds_dir / f"{name}.creds", creds_file(token, seed))
        system_seed = _kept_system_seed(self.issuer_file)
        reserved.append(public_key(system_seed))
        system_creds = creds_file(
            sign_jwt(
                user_claims(
                    name=CLAIMS_UPDATER,
                    user_key=public_key(system_seed),
                    account_key=system,
                    permissions=Permissions(
                        publish=(CLAIMS_UPDATE_SUBJECT,),
                        subscribe=(f"{inbox_prefix(CLAIMS_UPDATER)}.>",),
                    ),
                ),
                keys["system_account"],
            ),
            system_seed,
        )
        issuer = Issuer(
            account_key=account,
            service_signer=service_signer,
            integrator_signer_seed=keys["integrator_signer"],
            operator_signer_seed=keys["operator_signer"],
            system_creds=system_creds,
            reserved_keys=tuple(sorted(reserved)),
        )
        _write_private(self.issuer_file, json.dumps(issuer.__dict__, indent=2))
        # Dated when the set was made: claims pushed later (with revocations) are newer, so a
        # server restarted on this set keeps them.
        account_jwt = issuer.account_jwt({}, issued_at=int(keys["created_at"]))
        (self.folder / "operator.jwt").write_text(operator_jwt)
        _write_private(
            self.folder / "preload.json",
            json.dumps({"system": [system, system_jwt], "account": [account, account_jwt]}),
        )

    def server_config(self, jwt_dir: Path) -> str:
        """nats-server's configuration for this set, its account claims kept in ``jwt_dir``
        (one per server: the servers of a cluster share claim updates among themselves)."""
        operator_jwt = (self.folder / "operator.jwt").read_text()
        preload = json.loads((self.folder / "preload.json").read_text())
        system, system_jwt = preload["system"]
        account, account_jwt = preload["account"]
        return (
            "# NATS decentralized auth for Antechamber (made by `antechamber nats-auth`).\n"
            "# A CONNECT carries the user's JWT, which the services' allow-lists make longer\n"
            "# than the default limit of a protocol line (4 KiB).\n"
            f"max_control_line: {MAX_CONTROL_LINE}\n"
            f"operator: {json.dumps(operator_jwt)}\n"
            f"system_account: {system}\n"
            "resolver: {\n"
            "  type: full\n"
            f"  dir: {json.dumps(str(jwt_dir))}\n"
            "  allow_delete: false\n"
            '  interval: "2m"\n'
            "}\n"
            "resolver_preload: {\n"
            f"  {system}: {json.dumps(system_jwt)}\n"
            f"  {account}: {json.dumps(account_jwt)}\n"
            "}\n"
        )


def _kept_seed(creds: Path) -> str:
    """The user seed in an earlier ``.creds`` file, so that re-signing keeps each user's key
    (no second valid credential for the same user); a new seed when there is none."""
    try:
        _, seed = read_creds(creds.read_text())
    except (OSError, NatsAuthError):
        return new_seed("user")
    return seed


def _kept_system_seed(issuer_file: Path) -> str:
    """The claims updater's seed in an earlier ``issuer.json`` (read as is: one made before the
    reserved keys were recorded is being replaced, with no warning); a new seed when none."""
    try:
        return read_creds(json.loads(issuer_file.read_text())["system_creds"])[1]
    except (OSError, ValueError, KeyError, TypeError, NatsAuthError):
        return new_seed("user")


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read, written whole (never half a key)."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temporary.replace(path)


async def publish_account(
    servers: list[str],
    issuer: Issuer,
    revocations: Mapping[str, int],
    issued_at: int | None = None,
) -> None:
    """Push the platform account's claims, with these revocations, to the servers (through
    the system account); they close the live connections of every revoked user at once.

    The servers keep the claims with the newest ``issued_at`` (default: now) and drop, without
    an error, any older ones they are given: several pushers must agree on its order."""
    import nats
    from nats.aio.client import RawCredentials

    nc = await nats.connect(
        servers,
        name="antechamber-claims",
        user_credentials=RawCredentials(issuer.system_creds),
        inbox_prefix=inbox_prefix(CLAIMS_UPDATER),
        connect_timeout=2,
        max_reconnect_attempts=2,
    )
    try:
        reply = await nc.request(
            CLAIMS_UPDATE_SUBJECT, issuer.account_jwt(revocations, issued_at).encode(), timeout=5
        )
    finally:
        await nc.close()
    answer = json.loads(reply.data)
    if "error" in answer:
        raise NatsAuthError(f"NATS refused the account claims: {answer['error']}")
