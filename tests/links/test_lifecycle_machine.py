"""Every link's life through the running services, checked by a state machine.

Scheduling's API drives, as a clinic would: sessions are scheduled, moved and cancelled, guest
links switched off and on, attendees invited and removed, client rooms created and deleted,
and links are regenerated through the links API. The links service reacts to scheduling's
events on its own; its clock moves across the sessions' window edges. After every step, every
link ever issued (and every host link with each of its clinic's sessions) is resolved, and
each answer must be what a small model of the link slots says: allowed, or refused and why.

Hypothesis runs in a worker thread; its rules drive the services' coroutines on the test's
own event loop, which keeps running (consumers, relays) between the steps.
"""

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from nats.aio.client import Client as NATS

from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from runtime.embedded import NatsServer
from runtime.rpc import call
from services.links.app import SCHEDULING_EVENTS
from tests.links.conftest import PUBLIC_URL, Clock, links_service
from tests.machines import machine_settings, on_loop, run_machine
from tests.scheduling.conftest import ClinicHandle, register_clinic, scheduling_app
from tests.support import eventually, serving

pytestmark = pytest.mark.slow

T = TypeVar("T")
LENGTH = timedelta(minutes=50)
SLOT_GAP = timedelta(minutes=40)  # consecutive start slots overlap in time
SECOND = timedelta(seconds=1)
WINDOWED = frozenset({"session", "guest", "drop_in"})
REGENERABLE = frozenset({"guest", "client_room"})
ROLE = {
    "host": "host",
    "practitioner_room": "guest",
    "client_room": "guest",
    "session": "guest",
    "guest": "guest",
    "drop_in": "guest",
}
"""The role a resolved link joins the call as (signaling's): a client's links join as guests."""
ID_OF_SLOT = {
    "host": "practitioner_id",
    "practitioner_room": "room_id",
    "client_room": "room_id",
    "session": "session_id",
    "guest": "session_id",
    "drop_in": "attendee_id",
}
HANDLED_BY_LINKS = """
    SELECT count(*) FROM scheduling.events e
     WHERE e.clinic_id = $1 AND e.type = ANY($2::text[])
       AND NOT EXISTS (SELECT 1 FROM links.inbox i
                        WHERE i.consumer = 'links-scheduling' AND i.event_id = e.event_id)
"""
"""Scheduling's events about a clinic that links has not handled yet (each is handled in the
transaction that records it in the inbox, so 0 means links' tables are up to date)."""

Slot = tuple[str, UUID]
"""What a link is for: its kind and the id it belongs to (``("guest", session_id)``, ...)."""


@dataclass
class Services:
    """The running services, reached from the machine's thread through the test's loop."""

    loop: asyncio.AbstractEventLoop
    scheduling: httpx.AsyncClient
    links: httpx.AsyncClient
    nc: NATS
    db: "asyncpg.Pool[Any]"
    clock: Clock
    base: datetime
    """The first start slot: two days ahead, so every slot is in scheduling's future."""

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return on_loop(self.loop, work)


# -- the model ---------------------------------------------------------------------------------


@dataclass
class ModelLink:
    link_id: str
    kind: str
    clinic: int
    slot: Slot
    url: str
    session_id: UUID | None
    """The session whose window a session, guest or drop-in link keeps."""
    state: str = "active"  # active | replaced | revoked
    because: str | None = None


@dataclass
class Rules:
    """The clinic's settings that decide what links answer (a new clinic's to start with)."""

    plan: str = "professional"
    early_join_minutes: int = 10
    buffer_minutes: int = 15
    max_participants: int = 16


@dataclass
class ModelSession:
    session_id: UUID
    clinic: int
    rules: Rules
    """The clinic's, shared: a change of settings moves every window of the clinic."""
    room_id: UUID | None
    starts_at: datetime
    ends_at: datetime
    sharing: bool
    cancelled: bool = False
    attendees: list[UUID] = field(default_factory=list)

    @property
    def opens_at(self) -> datetime:
        return self.starts_at - timedelta(minutes=self.rules.early_join_minutes)

    @property
    def closes_at(self) -> datetime:
        return self.ends_at + timedelta(minutes=self.rules.buffer_minutes)


@dataclass
class ModelClinic:
    handle: ClinicHandle
    practitioner_id: UUID
    practitioner_room: UUID
    room_slug: str
    client_id: UUID
    rules: Rules = field(default_factory=Rules)
    client_rooms: dict[UUID, bool] = field(default_factory=dict)
    """Each client room and whether it was deleted."""


@dataclass(frozen=True)
class Expected:
    status: int
    code: str | None = None
    session: ModelSession | None = None
    room_id: UUID | None = None


def slot_of(view: dict[str, Any]) -> Slot:
    kind = view["kind"]
    return kind, UUID(view[ID_OF_SLOT[kind]])


def query_of(url: str) -> dict[str, str]:
    path = url.removeprefix(PUBLIC_URL)
    if path.startswith("/r/"):
        _, _, clinic, room = path.split("/")
        return {"clinic": clinic, "room": room}
    return {"token": path.rsplit("/", 1)[1]}


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class LinkLifecycle(RuleBasedStateMachine):
    """Two clinics, each with a practitioner and a client; what their links answer."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.s = services
        self.clinics: list[ModelClinic] = []
        self.sessions: dict[UUID, ModelSession] = {}
        self.links: dict[str, ModelLink] = {}
        self.pending: dict[Slot, tuple[int, UUID | None]] = {}
        """Slots where a link is about to be issued: the clinic and the session."""
        self.invited = 0
        self.now = services.base - timedelta(days=1)
        self.s.clock.set(self.now)

    # -- driving the services ------------------------------------------------------------------

    def call(self, clinic: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.s.run(self.clinics[clinic].handle.call(method, path, **kwargs))

    def call_links(self, clinic: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self.clinics[clinic].handle.headers
        return self.s.run(self.s.links.request(method, path, headers=headers, **kwargs))

    def settle(self) -> None:
        """Wait until links has handled what scheduling said, then learn the new links."""
        self.s.run(self._settle())

    async def _settle(self) -> None:
        for c in self.clinics:

            async def handled(c: ModelClinic = c) -> bool:
                left = await self.s.db.fetchval(
                    HANDLED_BY_LINKS, c.handle.clinic_id, list(SCHEDULING_EVENTS)
                )
                return bool(left == 0)

            await eventually(handled, what="links caught up with scheduling")
        views = await asyncio.gather(*(self._listing(i) for i in range(len(self.clinics))))
        for i, listed in enumerate(views):
            self._learn(i, listed)
        assert not self.pending, f"links not issued: {self.pending}"

    async def _listing(self, clinic: int) -> list[dict[str, Any]]:
        c = self.clinics[clinic]
        filters: list[dict[str, Any]] = [{"practitioner_id": c.practitioner_id}]
        filters += [
            {"session_id": s.session_id} for s in self.sessions.values() if s.clinic == clinic
        ]
        found: dict[str, dict[str, Any]] = {}
        for f in filters:
            response = await self.s.links.get(
                "/v1/links", params=f | {"include_inactive": True}, headers=c.handle.headers
            )
            assert response.status_code == 200, response.text
            page = response.json()
            assert page["next_cursor"] is None  # a slot holds a few links; 50 to a page
            found.update((v["link_id"], v) for v in page["items"])
        return list(found.values())

    def _learn(self, clinic: int, listed: list[dict[str, Any]]) -> None:
        """Match the clinic's listing with the model, slot by slot; adopt the new links."""
        by_slot: dict[Slot, list[dict[str, Any]]] = defaultdict(list)
        for view in listed:
            by_slot[slot_of(view)].append(view)
        expected = {x.slot for x in self.links.values() if x.clinic == clinic}
        expected |= {slot for slot, (c, _) in self.pending.items() if c == clinic}
        assert set(by_slot) == expected, (sorted(map(str, by_slot)), sorted(map(str, expected)))
        for slot, views in by_slot.items():
            known = {x.link_id for x in self.links.values() if x.slot == slot}
            fresh = [v for v in views if v["link_id"] not in known]
            assert known <= {v["link_id"] for v in views}, slot
            assert len(fresh) == (slot in self.pending), (slot, fresh)
            for view in fresh:
                _, session_id = self.pending.pop(slot)
                link = ModelLink(
                    view["link_id"], view["kind"], clinic, slot, view["url"], session_id
                )
                self.links[link.link_id] = link
            for view in views:
                link = self.links[view["link_id"]]
                assert (view["state"], view["revoked_because"]) == (link.state, link.because), (
                    view,
                    link,
                )
            # At most one working link per slot.
            assert sum(v["state"] in ("active", "deprecated") for v in views) <= 1, views

    def expect_issue(self, clinic: int, slot: Slot, session_id: UUID | None = None) -> None:
        """A link is issued for the slot, unless one works there already (as links does)."""
        if not any(x.slot == slot and x.state == "active" for x in self.links.values()):
            self.pending[slot] = (clinic, session_id)

    def expect_revoke(self, slot: Slot, because: str) -> None:
        for link in self.links.values():
            if link.slot == slot and link.state == "active":
                link.state, link.because = "revoked", because

    def times(self, start_slot: int) -> tuple[datetime, datetime]:
        starts = self.s.base + start_slot * SLOT_GAP
        return starts, starts + LENGTH

    # -- setting up --------------------------------------------------------------------------

    @initialize(
        start_slots=st.tuples(st.integers(0, 3), st.integers(0, 3)),
        sharing=st.tuples(st.booleans(), st.booleans()),
    )
    def two_clinics_with_a_session_each(
        self, start_slots: tuple[int, int], sharing: tuple[bool, bool]
    ) -> None:
        for _ in range(2):
            self.clinics.append(self.s.run(self._clinic()))
        self.settle()
        kinds = sorted(x.kind for x in self.links.values())
        assert kinds == ["host", "host", "practitioner_room", "practitioner_room"], kinds
        self._schedule(0, "session_link", start_slots[0], sharing[0], None, attendees=1)
        self._schedule(1, "practitioner_room", start_slots[1], sharing[1], None, attendees=1)

    async def _clinic(self) -> ModelClinic:
        handle = await register_clinic(self.s.scheduling)
        practitioner = await handle.practitioner()
        client = await handle.client()
        c = ModelClinic(
            handle,
            UUID(practitioner["practitioner_id"]),
            UUID(practitioner["room_id"]),
            practitioner["room_slug"],
            UUID(client["client_id"]),
        )
        index = len(self.clinics)
        self.expect_issue(index, ("host", c.practitioner_id))
        self.expect_issue(index, ("practitioner_room", c.practitioner_room))
        return c

    # -- what the clinic does (scheduling) ---------------------------------------------------

    def pick_session(self, data: st.DataObject, *, with_attendees: bool = False) -> ModelSession:
        sessions = [s for s in self.sessions.values() if s.attendees or not with_attendees]
        return data.draw(st.sampled_from(sessions), label="session")

    @rule(
        clinic=st.integers(0, 1),
        mode=st.sampled_from(["session_link", "practitioner_room", "client_room"]),
        start_slot=st.integers(0, 3),
        sharing=st.booleans(),
        attendees=st.integers(0, 2),
        data=st.data(),
    )
    def schedule(
        self,
        clinic: int,
        mode: str,
        start_slot: int,
        sharing: bool,
        attendees: int,
        data: st.DataObject,
    ) -> None:
        rooms = list(self.clinics[clinic].client_rooms)
        room_id = None
        if mode == "client_room" and not rooms:
            mode = "session_link"
        if mode == "client_room":
            room_id = data.draw(st.sampled_from(rooms), label="client room")
        self._schedule(clinic, mode, start_slot, sharing, room_id, attendees)

    def _schedule(
        self,
        clinic: int,
        mode: str,
        start_slot: int,
        sharing: bool,
        client_room: UUID | None,
        attendees: int,
    ) -> None:
        c = self.clinics[clinic]
        starts, ends = self.times(start_slot)
        body: dict[str, Any] = {
            "practitioner_id": str(c.practitioner_id),
            "client_ids": [str(c.client_id)],
            "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat(),
            "link_sharing": sharing,
            "video_mode": mode,
        }
        if client_room is not None:
            body["room_id"] = str(client_room)
        response = self.call(clinic, "POST", "/v1/sessions", json=body)
        if mode == "session_link" and c.rules.plan == "basic":
            assert (response.status_code, response.json()["code"]) == (
                403,
                "plan_excludes_video_mode",
            )
            return
        if client_room is not None and c.client_rooms[client_room]:
            assert response.status_code == 404, response.text  # a deleted client room
            return
        assert response.status_code == 201, response.text
        sid = UUID(response.json()["session_id"])
        room_id = c.practitioner_room if mode == "practitioner_room" else client_room
        session = ModelSession(sid, clinic, c.rules, room_id, starts, ends, sharing)
        self.sessions[sid] = session
        if mode == "session_link":
            self.expect_issue(clinic, ("session", sid), sid)
        if sharing:
            self.expect_issue(clinic, ("guest", sid), sid)
        self.settle()
        for _ in range(attendees):
            self._invite(session)

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), start_slot=st.integers(0, 3))
    def reschedule(self, data: st.DataObject, start_slot: int) -> None:
        session = self.pick_session(data)
        starts, ends = self.times(start_slot)
        response = self.call(
            session.clinic,
            "POST",
            f"/v1/sessions/{session.session_id}/reschedule",
            json={"starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
        )
        if session.cancelled:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        session.starts_at, session.ends_at = starts, ends
        self.settle()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), reason=st.sampled_from([None, "The practitioner is ill."]))
    def cancel(self, data: st.DataObject, reason: str | None) -> None:
        session = self.pick_session(data)
        sid = session.session_id
        response = self.call(
            session.clinic, "POST", f"/v1/sessions/{sid}/cancel", json={"reason": reason}
        )
        if session.cancelled:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        session.cancelled = True
        slots: list[Slot] = [("session", sid), ("guest", sid)]
        for slot in slots + [("drop_in", a) for a in session.attendees]:
            self.expect_revoke(slot, "session_cancelled")
        self.settle()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), enabled=st.booleans())
    def switch_guest_links(self, data: st.DataObject, enabled: bool) -> None:
        session = self.pick_session(data)
        sid = session.session_id
        response = self.call(
            session.clinic, "PUT", f"/v1/sessions/{sid}/link-sharing", json={"enabled": enabled}
        )
        if session.cancelled:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        slots: list[Slot] = [("guest", sid)] + [("drop_in", a) for a in session.attendees]
        if enabled and not session.sharing:
            for slot in slots:
                self.expect_issue(session.clinic, slot, sid)
        elif session.sharing and not enabled:
            for slot in slots:
                self.expect_revoke(slot, "sharing_disabled")
        session.sharing = enabled
        self.settle()

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def invite(self, data: st.DataObject) -> None:
        self._invite(self.pick_session(data))

    def _invite(self, session: ModelSession) -> None:
        self.invited += 1
        response = self.call(
            session.clinic,
            "POST",
            f"/v1/sessions/{session.session_id}/attendees",
            json={"email": f"attendee{self.invited}@example.org"},
        )
        if session.cancelled:
            assert response.status_code == 409, response.text
            return
        if (
            2 + len(session.attendees) >= session.rules.max_participants
        ):  # with practitioner and client
            assert (response.status_code, response.json()["code"]) == (
                422,
                "too_many_participants",
            )
            return
        assert response.status_code == 201, response.text
        attendee = UUID(response.json()["attendee_id"])
        assert attendee not in session.attendees
        session.attendees.append(attendee)
        if session.sharing:
            self.expect_issue(session.clinic, ("drop_in", attendee), session.session_id)
        self.settle()

    @precondition(lambda self: any(s.attendees for s in self.sessions.values()))
    @rule(data=st.data())
    def remove_attendee(self, data: st.DataObject) -> None:
        session = self.pick_session(data, with_attendees=True)
        attendee = data.draw(st.sampled_from(session.attendees), label="attendee")
        response = self.call(
            session.clinic,
            "DELETE",
            f"/v1/sessions/{session.session_id}/attendees/{attendee}",
        )
        if session.cancelled:
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 204, response.text
        session.attendees.remove(attendee)
        self.expect_revoke(("drop_in", attendee), "attendee_removed")
        self.settle()

    @rule(clinic=st.integers(0, 1), title=st.sampled_from(["Weekly", "Family"]))
    def create_client_room(self, clinic: int, title: str) -> None:
        c = self.clinics[clinic]
        response = self.call(
            clinic,
            "POST",
            f"/v1/clients/{c.client_id}/rooms",
            json={"practitioner_id": str(c.practitioner_id), "title": title},
        )
        assert response.status_code == 201, response.text
        room_id = UUID(response.json()["room_id"])
        c.client_rooms[room_id] = False
        self.expect_issue(clinic, ("client_room", room_id))
        self.settle()

    @precondition(lambda self: any(c.client_rooms for c in self.clinics))
    @rule(data=st.data())
    def delete_client_room(self, data: st.DataObject) -> None:
        rooms = [(i, r) for i, c in enumerate(self.clinics) for r in c.client_rooms]
        clinic, room_id = data.draw(st.sampled_from(rooms), label="client room")
        response = self.call(clinic, "DELETE", f"/v1/rooms/{room_id}")
        if self.clinics[clinic].client_rooms[room_id]:
            assert response.status_code == 404, response.text
            return
        assert response.status_code == 204, response.text
        self.clinics[clinic].client_rooms[room_id] = True
        self.expect_revoke(("client_room", room_id), "room_deleted")
        self.settle()

    @rule(
        clinic=st.integers(0, 1),
        plan=st.sampled_from(["professional", "basic"]),
        early_join_minutes=st.sampled_from([0, 10, 30]),
        buffer_minutes=st.sampled_from([0, 15, 60]),
        max_participants=st.sampled_from([4, 16]),
    )
    def change_clinic_settings(
        self,
        clinic: int,
        plan: str,
        early_join_minutes: int,
        buffer_minutes: int,
        max_participants: int,
    ) -> None:
        rules = Rules(plan, early_join_minutes, buffer_minutes, max_participants)
        response = self.call(clinic, "PATCH", "/v1/clinic/settings", json=vars(rules))
        assert response.status_code == 200, response.text
        vars(self.clinics[clinic].rules).update(vars(rules))
        self.settle()

    # -- what the clinic does (links) --------------------------------------------------------

    @rule(data=st.data())
    def regenerate(self, data: st.DataObject) -> None:
        link = data.draw(st.sampled_from(list(self.links.values())), label="link")
        response = self.call_links(link.clinic, "POST", f"/v1/links/{link.link_id}/regenerate")
        if link.state != "active":
            assert (response.status_code, response.json()["code"]) == (404, "link_not_active")
        elif link.kind not in REGENERABLE:
            assert (response.status_code, response.json()["code"]) == (409, "not_regenerable")
        else:
            assert response.status_code == 201, response.text
            new = response.json()
            link.state = "replaced"
            self.links[new["link_id"]] = ModelLink(
                new["link_id"], link.kind, link.clinic, link.slot, new["url"], link.session_id
            )
        self.settle()

    @rule(data=st.data())
    def regenerate_with_the_other_clinics_key(self, data: st.DataObject) -> None:
        link = data.draw(st.sampled_from(list(self.links.values())), label="link")
        response = self.call_links(1 - link.clinic, "POST", f"/v1/links/{link.link_id}/regenerate")
        assert (response.status_code, response.json()["code"]) == (404, "link_not_found")

    # -- time --------------------------------------------------------------------------------

    def move_clock(self, to: datetime) -> None:
        self.now = to
        self.s.clock.set(to)

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), early=st.booleans())
    def move_clock_to_an_opening(self, data: st.DataObject, early: bool) -> None:
        """To the instant a session's window opens, or the second before."""
        self.move_clock(self.pick_session(data).opens_at - (SECOND if early else timedelta(0)))

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), early=st.booleans())
    def move_clock_to_a_closing(self, data: st.DataObject, early: bool) -> None:
        """To the instant a session's window closes, or the second before."""
        self.move_clock(self.pick_session(data).closes_at - (SECOND if early else timedelta(0)))

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def move_clock_to_a_start(self, data: st.DataObject) -> None:
        self.move_clock(self.pick_session(data).starts_at)

    @rule(after=st.booleans())
    def move_clock_far(self, after: bool) -> None:
        self.move_clock(self.s.base + (timedelta(days=1) if after else -timedelta(days=1)))

    # -- what people holding links see -------------------------------------------------------

    def expected(self, link: ModelLink) -> Expected:
        if link.state == "replaced":
            return Expected(410, "regenerated")
        if link.state == "revoked":
            code = "sharing_disabled" if link.because == "sharing_disabled" else "revoked"
            return Expected(410, code)
        if link.kind == "session" and self.clinics[link.clinic].rules.plan == "basic":
            return Expected(403, "plan_not_included")
        if link.kind in WINDOWED:
            assert link.session_id is not None
            session = self.sessions[link.session_id]
            if self.now < session.opens_at:
                return Expected(423, "not_yet_open", session)
            if self.now >= session.closes_at:
                return Expected(410, "ended", session)
            return Expected(200, None, session, session.room_id)
        if link.kind in ("practitioner_room", "client_room"):
            room_id = link.slot[1]
            return Expected(200, None, self.held_in(room_id), room_id)
        return Expected(200, None, None, self.clinics[link.clinic].practitioner_room)  # host

    def held_in(self, room_id: UUID) -> ModelSession | None:
        """The appointment whose window is open in the room now: the earliest to start."""
        open_now = [
            s
            for s in self.sessions.values()
            if s.room_id == room_id and not s.cancelled and s.opens_at <= self.now < s.closes_at
        ]
        return min(open_now, key=lambda s: s.starts_at, default=None)

    def host_with(self, session: ModelSession) -> Expected:
        if session.cancelled:
            return Expected(410, "revoked")
        return Expected(200, None, session, session.room_id)

    def check(
        self, link: ModelLink, expected: Expected, response: httpx.Response, what: str = ""
    ) -> None:
        body = response.json()
        context = (what, link.kind, link.state, self.now, body)
        assert response.status_code == expected.status, context
        assert body["link_id"] == link.link_id, context
        assert body["clinic_id"] == self.clinics[link.clinic].handle.clinic_id, context
        assert body["kind"] == link.kind, context
        if expected.status != 200:
            assert body["code"] == expected.code, context
            return
        assert body["allowed"] is True, context
        assert body["role"] == ROLE[link.kind], context
        session_ids = {None if expected.session is None else str(expected.session.session_id)}
        if link.kind in ("practitioner_room", "client_room") and expected.session is not None:
            # Two appointments in one room starting together: either may be the one.
            starts = expected.session.starts_at
            session_ids = {
                str(s.session_id)
                for s in self.sessions.values()
                if s.room_id == expected.session.room_id
                and not s.cancelled
                and s.starts_at == starts
            }
        assert body["session_id"] in session_ids, context
        room = None if expected.room_id is None else str(expected.room_id)
        assert body["room_id"] == room, context
        direct = link.kind == "host"
        assert body["admission"] == ("direct" if direct else "waiting_room"), context
        if link.kind in WINDOWED:
            assert expected.session is not None
            assert when(body["opens_at"]) == expected.session.opens_at, context
            assert when(body["closes_at"]) == expected.session.closes_at, context

    async def _resolve(self, url: str, **params: Any) -> httpx.Response:
        return await self.s.links.get("/v1/links/resolve", params=query_of(url) | params)

    @invariant()
    def every_link_answers_as_the_model_says(self) -> None:
        links = list(self.links.values())
        hosts = [x for x in links if x.kind == "host"]
        as_host = [
            (host, session)
            for host in hosts
            for session in self.sessions.values()
            if session.clinic == host.clinic
        ]
        answers = self.s.run(self._resolve_many(*((x.url, {}) for x in links)))
        host_answers = self.s.run(
            self._resolve_many(*((h.url, {"session_id": str(s.session_id)}) for h, s in as_host))
        )
        for link, response in zip(links, answers, strict=True):
            self.check(link, self.expected(link), response)
        for (host, session), response in zip(as_host, host_answers, strict=True):
            self.check(host, self.host_with(session), response, f"host for {session.session_id}")

        # At most one link per slot lets anyone in; a regenerated token never works again.
        allowed: dict[Slot, int] = defaultdict(int)
        for link, response in zip(links, answers, strict=True):
            allowed[link.slot] += response.status_code == 200
            if link.state == "replaced":
                assert response.json()["code"] == "regenerated", link
        assert all(n <= 1 for n in allowed.values()), allowed

    async def _resolve_many(self, *asked: tuple[str, dict[str, str]]) -> list[httpx.Response]:
        return await asyncio.gather(*(self._resolve(url, **params) for url, params in asked))

    @rule(data=st.data())
    def resolve_over_nats(self, data: st.DataObject) -> None:
        link = data.draw(st.sampled_from(list(self.links.values())), label="link")
        query = query_of(link.url)
        request = ResolveRequest(
            token=query.get("token"), clinic_slug=query.get("clinic"), room_slug=query.get("room")
        )
        decision = self.s.run(call(self.s.nc, RESOLVE_SUBJECT, request, Decision, 5))
        expected = self.expected(link)
        assert decision.status == expected.status, (decision, link)
        assert decision.allowed == (expected.status == 200)
        assert (decision.reason and decision.reason.value) == expected.code
        assert str(decision.link_id) == link.link_id

    @rule(data=st.data())
    def resolve_across_clinics(self, data: st.DataObject) -> None:
        """A host token with the other clinic's session, a room path with the other clinic's
        slug: nothing of one clinic opens the other's."""
        mine, other = data.draw(st.sampled_from([(0, 1), (1, 0)]), label="clinics")
        c, o = self.clinics[mine], self.clinics[other]
        host = next(x for x in self.links.values() if x.slot == ("host", c.practitioner_id))
        theirs = [s for s in self.sessions.values() if s.clinic == other]
        mixed_path = f"{PUBLIC_URL}/r/{c.handle.slug}/{o.room_slug}"
        responses = self.s.run(
            self._resolve_many(
                (mixed_path, {}), *((host.url, {"session_id": str(s.session_id)}) for s in theirs)
            )
        )
        for response in responses:
            assert (response.status_code, response.json()["code"]) == (404, "unknown")
        for session in theirs:
            listed = self.call_links(
                mine, "GET", "/v1/links", params={"session_id": str(session.session_id)}
            )
            assert listed.json()["items"] == [], listed.text


@pytest.fixture
async def services(postgres_dsn: str, nats_server: NatsServer, nc: NATS) -> AsyncIterator[Services]:
    clock = Clock()
    # Probing across clinics resolves tokens as unknown; keep those from being rate limited.
    links = links_service(postgres_dsn, nats_server.url, clock, resolve_unknown_burst=100_000)
    scheduling = scheduling_app(postgres_dsn, nats_server.url)
    db = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=4)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    try:
        async with serving(scheduling) as scheduling_client, serving(links) as links_client:
            loop = asyncio.get_running_loop()
            yield Services(loop, scheduling_client, links_client, nc, db, clock, base)
    finally:
        await db.close()


async def test_links_answer_as_the_model_of_their_slots_says(services: Services) -> None:
    await run_machine(
        lambda: LinkLifecycle(services), machine_settings(HealthCheck.filter_too_much)
    )
