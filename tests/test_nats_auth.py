"""NATS authentication: the claims we sign, the rights each service gets, and a real
nats-server enforcing them (plain nats-py clients)."""

import asyncio
import base64
import json
import time
from pathlib import Path

import nats
import pytest
from structlog.testing import capture_logs

from antechamber.catalog import definitions
from antechamber.nats_setup import platform_auth, service_rights
from contracts.media import record_subject
from runtime.embedded import NatsServer
from runtime.nats_auth import ADMIN_USER, MAX_CONTROL_LINE, Issuer, ReservedKeyError, creds_inbox
from runtime.nats_jwt import (
    NatsAuthError,
    decode_jwt,
    is_user_key,
    new_seed,
    public_key,
    read_creds,
    sign_jwt,
    verify_jwt,
)
from runtime.streams import EVENT_STREAMS, stream_name
from tests.support import harness_auth


def test_a_signed_jwt_verifies_and_an_altered_one_does_not() -> None:
    signer = new_seed("account")
    token = sign_jwt({"sub": public_key(new_seed("user")), "name": "x", "nats": {}}, signer)
    assert verify_jwt(token, [public_key(signer)])["name"] == "x"
    head, _, signature = token.split(".")
    forged = decode_jwt(token) | {"name": "admin"}  # the same signature on other claims
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with pytest.raises(NatsAuthError):
        verify_jwt(f"{head}.{body}.{signature}", [public_key(signer)])
    with pytest.raises(NatsAuthError):
        verify_jwt(token, [public_key(new_seed("account"))])  # another issuer
    expired = sign_jwt({"sub": "U", "exp": int(time.time()) - 1, "nats": {}}, signer)
    with pytest.raises(NatsAuthError):
        verify_jwt(expired, [public_key(signer)])


def test_user_keys_are_recognised_by_kind_and_checksum() -> None:
    user = public_key(new_seed("user"))
    assert is_user_key(user)
    assert not is_user_key(public_key(new_seed("account")))
    assert not is_user_key(user[:-1] + ("A" if user[-1] != "A" else "B"))
    assert not is_user_key("not a key")


def test_each_service_gets_only_its_own_subjects() -> None:
    rights = service_rights()
    names = {d.name for d in definitions()}
    consumed = {d.name: {c.source for c in d.consumers} for d in definitions()}
    assert set(rights) == names
    for name, own in rights.items():
        assert own.inbox == f"_INBOX_{name}"
        assert f"{own.inbox}.>" in own.subscribe
        for other in names - {name}:
            assert f"rpc.{other}.>" not in own.subscribe  # serves no one else's RPC
            assert f"_INBOX_{other}.>" not in own.subscribe  # reads no one else's replies
            assert f"antechamber.*.{other}.>" not in own.publish  # publishes no one's events
            if other not in consumed[name]:  # declares only the streams it reads
                assert f"$JS.API.STREAM.CREATE.{stream_name(other)}" not in own.publish
        assert "antechamber.>" not in own.subscribe
        assert ">" not in own.publish
    callers_of_nodes = {n for n, r in rights.items() if "rpc.media.node.*.>" in r.publish}
    assert callers_of_nodes == {"signaling"}
    callers_of_links = {n for n, r in rights.items() if "rpc.links.resolve" in r.publish}
    assert callers_of_links == {"signaling"}
    # Integrators' consumers are made by scheduling alone, filtered to a clinic's events, on
    # the event streams only; the consumers a service creates otherwise are its own durables.
    makers = {n for n, r in rights.items() if any(".*.antechamber.*.>" in s for s in r.publish)}
    assert makers == {"scheduling"}
    durables = {d.name: {c.durable(d.name) for c in d.consumers} for d in definitions()}
    for name, own in rights.items():
        for subject in own.publish:
            if not subject.startswith(("$JS.API.CONSUMER.CREATE.", "$JS.API.CONSUMER.DELETE.")):
                continue
            stream, *rest = subject.split(".")[4:]
            if stream.startswith("KV_"):
                continue  # a bucket's watchers
            consumer = rest[0]
            assert consumer in durables[name] or (
                name == "scheduling"
                and stream in EVENT_STREAMS
                and consumer == "*"
                and subject.endswith((".*.antechamber.*.>", f"DELETE.{stream}.*"))
            ), (name, subject)


def test_every_services_jwt_fits_in_the_servers_control_line(tmp_path: Path) -> None:
    """A CONNECT carries the user JWT; past the server's longest protocol line the service
    cannot connect at all ("maximum control line exceeded")."""
    auth = platform_auth(tmp_path / "auth")
    assert f"max_control_line: {MAX_CONTROL_LINE}\n" in auth.server_config(tmp_path / "jwt")
    for definition in definitions():
        token = read_creds(auth.creds(definition.name).read_text())[0]
        assert len(token) < MAX_CONTROL_LINE // 2, (definition.name, len(token))  # room to grow


def test_the_set_keeps_its_keys_and_each_users_key(tmp_path: Path) -> None:
    first = platform_auth(tmp_path / "auth")
    keys = (tmp_path / "auth" / "keys.json").read_text()
    user = read_creds(first.creds("links").read_text())[1]
    again = platform_auth(tmp_path / "auth")
    assert (tmp_path / "auth" / "keys.json").read_text() == keys
    assert read_creds(again.creds("links").read_text())[1] == user
    assert creds_inbox(again.creds("links")) == "_INBOX_links"
    for secret in ("keys.json", "issuer.json", "creds/admin.creds"):
        assert (tmp_path / "auth" / secret).stat().st_mode & 0o077 == 0, secret


def test_the_issuer_refuses_the_keys_of_the_platforms_own_users(tmp_path: Path) -> None:
    """Revoking an integrator credential revokes its key: one with a service's key would take
    the service down with it."""
    auth = platform_auth(tmp_path / "auth")
    issuer = Issuer.load(auth.issuer_file)
    users = [d.name for d in definitions()] + [ADMIN_USER]
    own = {public_key(read_creds(auth.creds(user).read_text())[1]) for user in users}
    own.add(public_key(read_creds(issuer.system_creds)[1]))  # the claims updater
    assert set(issuer.reserved_keys) == own
    expires = int(time.time()) + 60
    for key in own:
        with pytest.raises(ReservedKeyError):
            issuer.integrator(name="int_x", clinic_id="c1", expires_at=expires, user_key=key)
    integrators = public_key(new_seed("user"))
    assert issuer.integrator(name="int_x", clinic_id="c1", expires_at=expires, user_key=integrators)
    # Re-signing keeps every user's key, so the list stays the same.
    assert Issuer.load(platform_auth(tmp_path / "auth").issuer_file) == issuer


def test_an_older_issuer_file_without_reserved_keys_still_loads_and_says_so(
    tmp_path: Path,
) -> None:
    auth = platform_auth(tmp_path / "auth")
    older = json.loads(auth.issuer_file.read_text())
    del older["reserved_keys"]
    auth.issuer_file.write_text(json.dumps(older))
    with capture_logs() as logs:
        first, again = Issuer.load(auth.issuer_file), Issuer.load(auth.issuer_file)
    assert first.reserved_keys == again.reserved_keys == ()
    warnings = [e for e in logs if "lists no reserved keys" in e["event"]]
    assert [w["log_level"] for w in warnings] == ["warning"]  # once, not at every load
    # Re-signing the set records them, reading the older file without another warning.
    with capture_logs() as logs:
        assert Issuer.load(platform_auth(tmp_path / "auth").issuer_file).reserved_keys
    assert logs == []


async def test_the_server_refuses_a_connection_without_credentials(
    nats_server: NatsServer,
) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, connect_timeout=2)


async def test_a_service_user_is_held_to_its_rights(nats_server: NatsServer) -> None:
    creds = harness_auth().creds("notify")
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        nats_server.url,
        user_credentials=str(creds),
        inbox_prefix=creds_inbox(creds),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        await nc.subscribe("rpc.links.>")
        await nc.subscribe("antechamber.>")
        await nc.publish(record_subject("any"), b"{}")
        await nc.publish("antechamber.c1.scheduling.SessionScheduled", b"{}")
        await nc.flush()
        for _ in range(50):
            if len(errors) >= 4:
                break
            await asyncio.sleep(0.02)
    finally:
        await nc.close()
    assert len([e for e in errors if "permissions violation" in e.lower()]) == 4, errors
