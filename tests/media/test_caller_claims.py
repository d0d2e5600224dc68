"""Media records, seats and releases for signaling alone: the secret-recording attack, replayed
with every other credential, gets no recording and no ``ok``.

The attackers are plain nats-py clients holding each credential the platform issues; only
signaling's, with its signed claim, is answered.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    RecordingAction,
    RecordingCommand,
    SeatAnswer,
    node_subject,
    record_subject,
)
from runtime.caller import MAX_SKEW_S, Identity, NotTheCaller
from runtime.embedded import NatsServer
from runtime.nats_auth import Issuer, creds_inbox, user_claims
from runtime.nats_jwt import new_seed, public_key, sign_jwt
from runtime.rpc import call
from tests.media.conftest import Node, clinic, running, seat_request
from tests.support import harness_auth

OTHER_SERVICES = ("scheduling", "links", "notify", "media", "admin")


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(postgres_dsn, nats_server.url, recordings_dir=tmp_path) as started:
        yield started


async def plain_client(url: str, creds: Path | None) -> tuple[NATS, list[str]]:
    """A nats-py client as an outsider would open one: the credential, its inbox, nothing of
    ours. The errors the server sends it are collected."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options: dict[str, Any] = {"error_cb": on_error, "allow_reconnect": False}
    if creds is not None:
        options |= {"user_credentials": str(creds), "inbox_prefix": creds_inbox(creds)}
    return await nats.connect(url, **options), errors


async def attempt(nc: NATS, subject: str, body: bytes) -> dict[str, Any] | None:
    """The reply, or None when the server refused to carry the request."""
    try:
        reply = await nc.request(subject, body, timeout=1.5)
    except (TimeoutError, nats.errors.NoRespondersError):
        return None
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def integrator_creds(folder: Path, clinic_id: str) -> Path:
    issued = Issuer.load(harness_auth().issuer_file).integrator(
        name=f"int_{uuid.uuid4().hex}", clinic_id=clinic_id, expires_at=int(time.time()) + 600
    )
    assert issued.creds is not None
    path = folder / "integrator.creds"
    path.write_text(issued.creds)
    return path


async def test_only_signaling_can_start_a_recording(
    node: Node, nc: NATS, nats_server: NatsServer, tmp_path: Path
) -> None:
    clinic_id, room = clinic(), uuid.uuid4()
    seat = await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room), SeatAnswer, 5)
    assert seat.granted  # the room is on the node: a recording could start
    command = RecordingCommand(
        clinic_id=clinic_id,
        room_id=room,
        recording_id=uuid.uuid4(),
        action=RecordingAction.start,
    )
    body = command.model_dump_json().encode()
    auth = harness_auth()
    credentials: dict[str, Path | None] = {name: auth.creds(name) for name in OTHER_SERVICES}
    credentials["integrator"] = integrator_creds(tmp_path, clinic_id)
    credentials["none"] = None

    outcomes: dict[str, str] = {}
    for name, creds in credentials.items():
        try:
            attacker, errors = await plain_client(nats_server.url, creds)
        except nats.errors.Error as exc:
            outcomes[name] = f"connection refused ({exc})"
            continue
        try:
            answers = [await attempt(attacker, record_subject(node.node_id), body)]
            await attacker.flush()
            await asyncio.sleep(0.1)
        finally:
            await attacker.close()
        granted = [a for a in answers if a is not None and a.get("ok") is True]
        outcomes[name] = (
            "RECORDED"
            if granted
            else "; ".join(str(a["error"]) for a in answers if a and "error" in a)
            or "; ".join(errors)
            or "no answer"
        )
    recorded = [name for name, outcome in outcomes.items() if outcome == "RECORDED"]
    assert not recorded, outcomes
    assert outcomes["none"].startswith("connection refused"), outcomes
    for name in ("scheduling", "links", "notify", "media", "integrator"):
        assert "permissions violation" in outcomes[name].lower(), outcomes
    # Admin (operators' tools) may publish anything: the node itself refuses it, for want of
    # signaling's claim.
    assert outcomes["admin"].startswith("refused"), outcomes
    assert not node.media.recordings.active, "a recording started"

    # Signaling, with its claim, is answered.
    signaling, _ = await plain_client(nats_server.url, auth.creds("signaling"))
    try:
        identity = Identity.load(auth.creds("signaling"))
        reply = await signaling.request(
            record_subject(node.node_id), body, timeout=5, headers=identity.headers("record", body)
        )
        assert json.loads(reply.data)["ok"] is True, reply.data
        stop = command.model_copy(update={"action": RecordingAction.stop})
        data = stop.model_dump_json().encode()
        await signaling.request(
            record_subject(node.node_id), data, timeout=10, headers=identity.headers("record", data)
        )
    finally:
        await signaling.close()


async def test_a_node_refuses_seats_and_releases_without_signalings_claim(
    node: Node, nats_server: NatsServer
) -> None:
    media = Identity.load(harness_auth().creds("media"))
    admin = Identity.load(harness_auth().admin_creds)
    request = seat_request(clinic(), uuid.uuid4()).model_dump_json().encode()
    # As the media service's own user: it may publish to the nodes' seat subjects.
    client, _ = await plain_client(nats_server.url, harness_auth().creds("media"))
    try:
        for subject in (SEAT_SUBJECT, RELEASE_SUBJECT):
            unsigned = await attempt(client, subject, request)
            assert unsigned is None or unsigned["error"].startswith("refused"), unsigned
        for subject in (SEAT_SUBJECT, node_subject(node.node_id, "seat")):
            signed_by_admin = await attempt_signed(client, subject, request, admin)
            assert signed_by_admin is None or signed_by_admin["error"].startswith("refused")
        # A node forwarding to the owner signs as media: the owner serves it (here: it does
        # not hold that room, and says so, rather than refusing the caller).
        forwarded = await attempt_signed(client, node_subject(node.node_id, "seat"), request, media)
        assert forwarded is not None
        assert str(forwarded.get("error")).startswith("not_owner"), forwarded
    finally:
        await client.close()


async def attempt_signed(
    nc: NATS, subject: str, body: bytes, identity: Identity
) -> dict[str, Any] | None:
    try:
        reply = await nc.request(
            subject, body, timeout=1.5, headers=identity.headers(subject.rsplit(".", 1)[-1], body)
        )
    except (TimeoutError, nats.errors.NoRespondersError):
        return None
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def test_a_claim_does_not_hold_when_altered_replayed_late_or_self_signed() -> None:
    auth = harness_auth()
    signaling = Identity.load(auth.creds("signaling"))
    media = Identity.load(auth.creds("media"))
    body = b'{"room": 1}'
    headers = signaling.headers("record", body)
    assert media.caller(headers, "record", body) == "signaling"
    with pytest.raises(NotTheCaller):
        media.caller(headers, "record", b'{"room": 2}')  # another body
    with pytest.raises(NotTheCaller):
        media.caller(headers, "seat", body)  # another action
    with pytest.raises(NotTheCaller):
        media.caller(headers, "record", body, now=time.time() + MAX_SKEW_S + 5)  # replayed late
    with pytest.raises(NotTheCaller):
        media.caller({}, "record", body)
    # A JWT naming "signaling" signed by a key of one's own is not signaling.
    forger_seed, account_seed = new_seed("user"), new_seed("account")
    forged = sign_jwt(
        user_claims(
            name="signaling",
            user_key=public_key(forger_seed),
            account_key=public_key(account_seed),
            permissions=None,
        ),
        account_seed,
    )
    impostor = Identity("signaling", forged, forger_seed, public_key(account_seed))
    with pytest.raises(NotTheCaller):
        media.caller(impostor.headers("record", body), "record", body)
