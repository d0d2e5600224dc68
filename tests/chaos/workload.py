"""What people do while processes die: clinics and sessions scheduled, invitations mailed,
guests knocking through both signaling replicas, hosts admitting, media between aiortc peers,
links regenerated, a room filled past its cap.

Clients behave as real ones behind a load balancer would: an HTTP call that fails to connect
or answers 5xx goes to the other replica with the same ``Idempotency-Key``; a WebSocket that
drops comes back on the other replica with its resume token.
"""

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.chaos.platform import OPERATOR_KEY, PUBLIC_URL, ChaosPlatform, Replica
from tests.media.peers import PeerProcess, peer_process
from tests.notify.smtp import Received, SmtpSink

Frame = dict[str, Any]
CALL_DEADLINE_S = 90.0
"""How long one HTTP call may keep failing over before the flow counts as failed."""
FRAME_WAIT_S = 60.0
MAX_RETRIES_AFTER_503 = 10
ADMIT_WAIT_S = 10.0
RETRYABLE = frozenset({"media_unavailable", "links_unavailable", "unavailable"})
JOIN_TOKEN = re.compile(r"/j/([A-Za-z0-9_\-]+)")


class FlowFailed(AssertionError):
    pass


# -- HTTP with fail-over -----------------------------------------------------------------------


class Api:
    """One service's replicas, as a load balancer would spread calls over them."""

    def __init__(self, replicas: list[Replica], http: httpx.AsyncClient) -> None:
        self.replicas = replicas
        self.http = http
        self._next = 0
        self.failovers = 0

    async def call(
        self,
        method: str,
        path: str,
        key: str,
        *,
        expect: tuple[int, ...] = (200, 201),
        deadline_s: float = CALL_DEADLINE_S,
        **kwargs: Any,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        if method != "GET":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        deadline = time.monotonic() + deadline_s
        last = ""
        while time.monotonic() < deadline:
            replica = self.replicas[self._next % len(self.replicas)]
            self._next += 1
            try:
                answer = await self.http.request(
                    method, replica.url + path, headers=headers, timeout=10, **kwargs
                )
            except httpx.HTTPError as exc:
                last = f"{replica.name}: {type(exc).__name__}"
            else:
                if answer.status_code in expect:
                    return answer.json() if answer.content else None
                last = f"{replica.name}: {answer.status_code} {answer.text[:300]}"
                if answer.status_code < 500 and answer.status_code not in (404, 409, 429):
                    raise FlowFailed(f"{method} {path}: {last}")
            self.failovers += 1
            await asyncio.sleep(0.2)
        raise FlowFailed(f"{method} {path}: no answer within {deadline_s}s; last: {last}")


# -- a browser on the signaling WebSocket, with resume -----------------------------------------


class Person:
    """One person on the signaling protocol. If their replica dies, they reconnect to the other
    with their resume token, as the web client does."""

    def __init__(self, name: str, replicas: list[Replica], first: int, link: dict[str, Any]):
        self.name = name
        self.replicas = replicas
        self.index = first
        self.link = link
        self.frames: list[Frame] = []
        self.resumes = 0
        self.retries_after_503 = 0
        self.closed_by_server: int | None = None
        self._ws: ClientConnection | None = None
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._leaving = False

    @property
    def welcome(self) -> Frame | None:
        """The latest welcome (a new one after a rejoin)."""
        return next((f for f in reversed(self.frames) if f["type"] == "welcome"), None)

    async def join(self) -> None:
        await self._reconnect(resume=None)
        self._reader = asyncio.create_task(self._read())

    async def _reconnect(self, resume: str | None) -> None:
        """Connect to a replica, the next one while one refuses (a load balancer's retry)."""
        for _ in range(100):
            try:
                await self._connect(resume)
                return
            except (OSError, ConnectionClosed, TimeoutError):
                self.index += 1
                await asyncio.sleep(0.2)
        raise FlowFailed(f"{self.name}: no signaling replica accepts a connection")

    async def _connect(self, resume: str | None) -> None:
        replica = self.replicas[self.index % len(self.replicas)]
        self._ws = await connect(replica.ws_url, max_size=None, open_timeout=5)
        fields = self.link | {"name": self.name}
        if resume:
            fields["resume"] = resume
        await self._ws.send(json.dumps({"type": "join", **fields}))

    async def _read(self) -> None:
        while True:
            assert self._ws is not None
            try:
                async for raw in self._ws:
                    frame = json.loads(raw)
                    async with self._arrived:
                        self.frames.append(frame)
                        self._arrived.notify_all()
            except (ConnectionClosed, OSError):
                pass
            code = self._ws.close_code
            last = self.frames[-1] if self.frames else {}
            if (
                not self._leaving
                and last.get("type") == "refused"
                and last.get("status") == 503
                and self.retries_after_503 < MAX_RETRIES_AFTER_503
            ):
                # "Try again in a moment": a platform part is failing over. Join again.
                self.retries_after_503 += 1
                await asyncio.sleep(1.0)
                await self._reconnect(resume=None)
                continue
            if self._leaving or code in (1000, 1001, 4000, 4001, 4002, 4003, 4004):
                self.closed_by_server = code
                async with self._arrived:
                    self._arrived.notify_all()
                return
            # Dropped (the replica died): come back on the other one with the resume token.
            self.index += 1
            welcome = self.welcome
            resume = welcome["resume_token"] if welcome else None
            await self._reconnect(resume)
            self.resumes += 1

    async def send(self, kind: str, **fields: Any) -> None:
        for _ in range(100):
            try:
                assert self._ws is not None
                await self._ws.send(json.dumps({"type": kind, **fields}))
                return
            except (ConnectionClosed, OSError):
                await asyncio.sleep(0.1)  # the reader is reconnecting
        raise FlowFailed(f"{self.name}: could not send {kind}")

    async def next(
        self, *kinds: str, match: Callable[[Frame], bool] = lambda _f: True, after: int = 0
    ) -> Frame:
        """The first frame of one of ``kinds`` (from index ``after`` on) that matches."""

        def found() -> Frame | None:
            return next((f for f in self.frames[after:] if f["type"] in kinds and match(f)), None)

        try:
            async with asyncio.timeout(FRAME_WAIT_S), self._arrived:
                while (frame := found()) is None:
                    if self._reader is not None and self._reader.done():
                        break
                    await self._arrived.wait()
        except TimeoutError:
            frame = None
        if frame is None:
            recent = [f["type"] for f in self.frames[-10:]]
            told = [f for f in self.frames if f["type"] in ("refused", "error", "seat_refused")]
            raise FlowFailed(
                f"{self.name}: no {'/'.join(kinds)}; last frames {recent}; "
                f"refusals and errors: {json.dumps(told[-3:])[:600]}"
            )
        return frame

    async def leave(self) -> None:
        self._leaving = True
        with contextlib.suppress(Exception):
            await self.send("leave")
        await self.aclose()

    async def aclose(self) -> None:
        self._leaving = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def waiting(participant_id: str) -> Callable[[Frame], bool]:
    return lambda view: any(w["participant_id"] == participant_id for w in view["waiting"])


def present(participant_id: str) -> Callable[[Frame], bool]:
    return lambda view: any(p["participant_id"] == participant_id for p in view["participants"])


# -- the workload ------------------------------------------------------------------------------


@dataclass
class Clinic:
    clinic_id: str
    key: str
    max_participants: int


@dataclass
class Record:
    """What the flows did, for the checks at the end."""

    flows: dict[str, str] = field(default_factory=dict)
    """Flow name -> "ok" or why it failed."""
    sessions: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    crowds: list[tuple[int, int]] = field(default_factory=list)
    """(cap, seats held at most at once) per crowded room."""
    refused_old_links: int = 0
    resumes: int = 0
    joins_retried: int = 0
    """Joins refused with 503 ("try again in a moment") and made again."""
    admits_retried: int = 0
    commands_retried: int = 0
    """Host commands answered "not available right now" and sent again."""


class Workload:
    def __init__(self, platform: ChaosPlatform, sink: SmtpSink, http: httpx.AsyncClient) -> None:
        self.platform = platform
        self.sink = sink
        self.scheduling = Api(platform.of("scheduling"), http)
        self.links = Api(platform.of("links"), http)
        self.signaling = platform.of("signaling")
        self.record = Record()
        self._turn = 0

    async def clinic(self, max_participants: int = 16) -> Clinic:
        slug = f"c{uuid.uuid4().hex[:10]}"
        clinic = await self.scheduling.call(
            "POST",
            "/v1/clinics",
            OPERATOR_KEY,
            json={
                "name": "Chaos Clinic",
                "slug": slug,
                "settings": {"plan": "professional", "max_participants": max_participants},
            },
        )
        key = await self.scheduling.call(
            "POST", f"/v1/clinics/{clinic['clinic_id']}/api-keys", OPERATOR_KEY, json={"label": "c"}
        )
        return Clinic(clinic["clinic_id"], key["key"], max_participants)

    async def practitioner(self, clinic: Clinic) -> tuple[str, str, str]:
        """A new practitioner: (id, host token, room path) once links has issued them."""
        practitioner = await self.scheduling.call(
            "POST",
            "/v1/practitioners",
            clinic.key,
            json={"display_name": "Dr Chaos", "room_slug": f"p{uuid.uuid4().hex[:8]}"},
        )
        pid = practitioner["practitioner_id"]
        found = await self.links_of(clinic, {"practitioner_id": pid}, {"host", "practitioner_room"})
        host_token = found["host"]["url"].rsplit("/", 1)[1]
        return pid, host_token, found["practitioner_room"]["url"].removeprefix(PUBLIC_URL)

    async def links_of(
        self, clinic: Clinic, params: dict[str, str], kinds: set[str], within: float = 60.0
    ) -> dict[str, Frame]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            listed = await self.links.call(
                "GET", "/v1/links", clinic.key, params=params, expect=(200, 404)
            )
            by_kind = {link["kind"]: link for link in (listed or {}).get("items", [])}
            if kinds <= set(by_kind):
                return by_kind
            await asyncio.sleep(0.2)
        raise FlowFailed(f"links {sorted(kinds)} for {params} not issued within {within}s")

    def person(self, name: str, link: dict[str, Any]) -> Person:
        self._turn += 1
        return Person(name, self.signaling, self._turn, link)

    async def mail_to(self, address: str, within: float = 90.0) -> Received:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for received in self.sink.messages:
                if address in received.rcpt_tos:
                    return received
            await asyncio.sleep(0.1)
        raise FlowFailed(f"no mail to {address} within {within}s")

    async def admit(self, host: Person, guest: Person, participant_id: str) -> Frame:
        """The host admits the guest: the guest's ``admitted``, or the host's ``seat_refused``
        when the room is full. Sent again while the answer is "not available right now" (a
        host would click again)."""

        def refusal(frame: Frame) -> bool:
            if frame["type"] == "seat_refused":
                return str(frame["participant_id"]) == participant_id
            return frame.get("code") in RETRYABLE  # an error frame

        for _ in range(MAX_RETRIES_AFTER_503):
            mark = len(host.frames)
            await host.send("admit", participant_id=participant_id)
            waits = [
                asyncio.create_task(guest.next("admitted")),
                asyncio.create_task(host.next("error", "seat_refused", match=refusal, after=mark)),
            ]
            done, pending = await asyncio.wait(
                waits, timeout=ADMIT_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            frame = done.pop().result() if done else {"type": "timeout"}
            if frame["type"] == "admitted":
                return frame
            if frame["type"] == "seat_refused" and frame.get("reason") not in RETRYABLE:
                return frame
            self.record.admits_retried += 1
            await asyncio.sleep(1.0)
        raise FlowFailed(f"{guest.name} was never admitted")

    async def command(self, person: Person, kind: str, answer: str, **fields: Any) -> Frame:
        """Send ``kind`` and wait for ``answer``; sent again while the answer is an error
        saying "not available right now" (Postgres restarting: a person would click again)."""

        def outcome(frame: Frame) -> bool:
            return frame["type"] == answer or frame.get("code") in RETRYABLE

        for _ in range(MAX_RETRIES_AFTER_503):
            mark = len(person.frames)
            await person.send(kind, **fields)
            frame = await person.next(answer, "error", match=outcome, after=mark)
            if frame["type"] == answer:
                return frame
            self.record.commands_retried += 1
            await asyncio.sleep(1.0)
        raise FlowFailed(f"{person.name}: {kind} was never done")

    # -- flows ----------------------------------------------------------------------------------

    async def visit(
        self, clinic: Clinic, *, media: bool = False, regenerate: bool = False
    ) -> dict[str, float]:
        """A session from booking to the end of the call; seconds per step."""
        steps: dict[str, float] = {}
        start = time.monotonic()
        pid, host_token, _ = await self.practitioner(clinic)
        email = f"client-{uuid.uuid4().hex[:12]}@example.org"
        client = await self.scheduling.call(
            "POST", "/v1/clients", clinic.key, json={"display_name": "Chaos Client", "email": email}
        )
        begins = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        session = await self.scheduling.call(
            "POST",
            "/v1/sessions",
            clinic.key,
            json={
                "practitioner_id": pid,
                "client_ids": [client["client_id"]],
                "starts_at": begins.isoformat(),
                "ends_at": (begins + timedelta(minutes=50)).isoformat(),
                "link_sharing": True,
            },
        )
        session_id = session["session_id"]
        self.record.sessions.append(session_id)
        self.record.recipients.append(email)
        steps["scheduled"] = time.monotonic() - start
        mail = await self.mail_to(email)
        body = mail.message.get_body(("plain",))
        text = body.get_content() if body is not None else mail.raw.decode(errors="replace")
        tokens = JOIN_TOKEN.findall(text)
        if not tokens:
            raise FlowFailed(f"no join link in the invitation to {email}")
        steps["invited"] = time.monotonic() - start

        host = self.person("Dr Chaos", {"token": host_token, "session_id": session_id})
        guest_link = {"token": tokens[0]}
        if regenerate:
            guest_link = await self._regenerated_guest_link(clinic, session_id)
        guest = self.person("Chaos Guest", guest_link)
        people = [host, guest]
        peers: list[PeerProcess] = []
        try:
            await host.join()
            await host.next("admitted")
            await guest.join()
            welcome = await guest.next("welcome")
            await guest.next("waiting")
            me = str(welcome["participant_id"])
            await host.next("room", match=waiting(me))
            steps["knocked"] = time.monotonic() - start
            admitted = await self.admit(host, guest, me)
            await host.next("room", match=present(me))
            steps["admitted"] = time.monotonic() - start
            if media:
                async with contextlib.AsyncExitStack() as stack:
                    for person, seat in ((host, await host.next("admitted")), (guest, admitted)):
                        welcome_of = person.welcome
                        assert welcome_of is not None
                        peer = await stack.enter_async_context(
                            peer_process(self.peer_config(welcome_of, seat))
                        )
                        peers.append(peer)
                    for peer in peers:
                        await peer.wait_for(
                            lambda e: e["event"] == "first_frame" and e["kind"] == "video", 45
                        )
                    steps["media"] = time.monotonic() - start
                    for peer in peers:
                        await peer.stop()
            await guest.leave()
            await self.command(host, "end_for_all", "ended", message="Thank you")
            steps["ended"] = time.monotonic() - start
        finally:
            await self.done_with(people)
        return steps

    async def done_with(self, people: list[Person]) -> None:
        """Close their connections and count how often they came back or joined again."""
        for person in people:
            self.record.resumes += person.resumes
            self.record.joins_retried += person.retries_after_503
            await person.aclose()

    def peer_config(self, welcome: Frame, seat: Frame, **extra: Any) -> dict[str, Any]:
        return {
            "nats_url": self.platform.nats.url,
            "node_id": seat["media_node"],
            "room_id": welcome["room_id"],
            "participant_id": welcome["participant_id"],
            "participant_token": seat["participant_token"],
            "source": "loop",
            "decode": False,
            "width": 160,
            "height": 120,
            "fps": 15,
            **extra,
        }

    async def _regenerated_guest_link(self, clinic: Clinic, session_id: str) -> dict[str, Any]:
        """Regenerate the session's guest link: the old token is refused, the new one joins."""
        guest = (await self.links_of(clinic, {"session_id": session_id}, {"guest"}))["guest"]
        old = guest["url"].rsplit("/", 1)[1]
        new = await self.links.call("POST", f"/v1/links/{guest['link_id']}/regenerate", clinic.key)
        stale = self.person("Stale Guest", {"token": old})
        try:
            await stale.join()
            refused = await stale.next("refused", "welcome")
            if refused["type"] != "refused":
                raise FlowFailed(f"a regenerated guest link still joins: {refused}")
            self.record.refused_old_links += 1
        finally:
            await stale.aclose()
        return {"token": new["url"].rsplit("/", 1)[1]}

    async def crowd(self, clinic: Clinic, guests: int) -> None:
        """More guests than seats knock; the host admits them all. At most ``cap`` are in."""
        _, host_token, room_path = await self.practitioner(clinic)
        _, _, clinic_slug, room_slug = room_path.split("/")
        host = self.person("Dr Crowd", {"token": host_token})
        people = [host] + [
            self.person(f"Guest {i}", {"clinic": clinic_slug, "room": room_slug})
            for i in range(guests)
        ]
        try:
            await host.join()
            await host.next("admitted")
            for guest in people[1:]:
                await guest.join()
            ids = [str((await g.next("welcome"))["participant_id"]) for g in people[1:]]
            for me in ids:
                await host.next("room", match=waiting(me))
            answers = await asyncio.gather(
                *(self.admit(host, g, me) for g, me in zip(people[1:], ids, strict=True))
            )
            refused = sum(1 for frame in answers if frame["type"] == "seat_refused")
            await host.next("room", match=lambda v: len(v["participants"]) + refused >= len(people))
            admitted = sum(1 for g in people[1:] if any(f["type"] == "admitted" for f in g.frames))
            views = [f for f in host.frames if f["type"] == "room"]
            held = max([len(v["participants"]) for v in views] + [admitted + 1])
            self.record.crowds.append((clinic.max_participants, held))
            if admitted + refused != guests:
                raise FlowFailed(f"crowd: {admitted} admitted + {refused} refused != {guests}")
            for guest in people[1:]:
                await guest.leave()
            await self.command(host, "end_for_all", "ended")
        finally:
            await self.done_with(people)

    async def run(self, name: str, flow: Any) -> None:
        """Run one flow to the end; its outcome goes into the record (never raises)."""
        try:
            await flow
        except Exception as exc:  # every failure is a finding to report
            self.record.flows[name] = f"{type(exc).__name__}: {exc}"
        else:
            self.record.flows[name] = "ok"
