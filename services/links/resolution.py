"""May this link join now, as whom, and if not, why not: a pure function of what is stored.

The order of the checks is the order a person would want to be told: a link that does not
exist, a clinic that is suspended, a link that was replaced or revoked, a plan that does not
include it, and only then the time window.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from contracts.links import REFUSAL_STATUS, Decision, LinkKind, Refusal, RevokedBecause, Role
from contracts.scheduling import PLAN_VIDEO_MODES, ClinicSettings, VideoMode
from contracts.signaling import CallRole
from services.links.domain import State

NEWEST_LINK_HINT = "This link was replaced; use the link in your latest invitation or reminder."
_REVOKED = {
    RevokedBecause.session_cancelled: (Refusal.revoked, "This session was cancelled."),
    RevokedBecause.room_deleted: (Refusal.revoked, "This room no longer exists."),
    RevokedBecause.attendee_removed: (
        Refusal.revoked,
        "Your invitation to this session was withdrawn.",
    ),
    RevokedBecause.sharing_disabled: (
        Refusal.sharing_disabled,
        "The host turned off guest links for this session.",
    ),
}
_WINDOWED = frozenset({LinkKind.session, LinkKind.guest, LinkKind.drop_in})


@dataclass(frozen=True)
class SessionWindow:
    session_id: UUID
    practitioner_id: UUID
    room_id: UUID | None
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    status: str
    live: bool
    guest_admission: str

    def opens_at(self, settings: ClinicSettings) -> datetime:
        return _shifted(self.starts_at, -timedelta(minutes=settings.early_join_minutes))

    def closes_at(self, settings: ClinicSettings) -> datetime:
        return _shifted(self.ends_at, timedelta(minutes=settings.buffer_minutes))


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def _shifted(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, held at the first or last moment a datetime can hold: a session
    stored near either end (year 9999) still gets a window, and an answer, not a crash."""
    try:
        return moment + delta
    except OverflowError:
        return _LAST if delta > timedelta(0) else _FIRST


@dataclass(frozen=True)
class Found:
    """A link as stored, with its clinic, its session (if any) and its holder's presence."""

    link_id: UUID
    kind: LinkKind
    role: Role
    state: State
    revoked_because: RevokedBecause | None
    sunset_at: datetime | None
    clinic_id: str
    settings: ClinicSettings
    suspended: bool
    room_id: UUID | None
    practitioner_id: UUID | None
    session: SessionWindow | None
    left_at: datetime | None
    """When someone who came in with this link last left (for the rejoin grace)."""
    session_not_theirs: bool = False
    """A host link naming a session that is not one of its practitioner's (or none at all)."""


def refused(reason: Refusal, message: str, found: Found | None = None, **extra: object) -> Decision:
    ids = {}
    if found is not None:
        ids = {"link_id": found.link_id, "kind": found.kind, "clinic_id": found.clinic_id}
    return Decision(
        allowed=False,
        status=REFUSAL_STATUS[reason],
        reason=reason,
        message=message,
        **ids,
        **extra,
    )


UNKNOWN = refused(
    Refusal.unknown,
    "This link is not valid. Check that you copied all of it, or ask for a new one.",
)
NOT_THEIR_SESSION = (
    "Your host link is valid, but that session is not one of yours or does not exist; "
    "join it from your own schedule."
)


def _local(moment: datetime, time_zone: str) -> str:
    try:
        local = moment.astimezone(ZoneInfo(time_zone))
    except OverflowError:  # the zone's date would fall outside what a datetime holds
        local, time_zone = moment.astimezone(UTC), "UTC"
    return f"{local:%H:%M} on {local:%A %-d %B %Y} ({time_zone})"


def decide(found: Found | None, now: datetime) -> Decision:
    if found is None:
        return UNKNOWN
    f = found
    if f.suspended:
        return refused(
            Refusal.clinic_suspended,
            "This clinic's video sessions are unavailable right now; please contact the clinic.",
            f,
        )
    if f.state is State.replaced:
        return refused(
            Refusal.regenerated,
            "This link was replaced by a new one; use the link in your latest invitation.",
            f,
            replaced_by_hint=NEWEST_LINK_HINT,
        )
    if f.state is State.revoked:
        reason, message = _REVOKED.get(
            f.revoked_because or RevokedBecause.session_cancelled,
            (Refusal.revoked, "This link no longer works."),
        )
        return refused(reason, message, f)
    if f.session_not_theirs:
        return refused(Refusal.unknown, NOT_THEIR_SESSION, f)
    if f.session is not None and f.session.status == "cancelled":
        # A host link outlives any one session, but not into a cancelled one (the session's
        # own links were revoked with the cancellation).
        return refused(*_REVOKED[RevokedBecause.session_cancelled], f)
    # A retired link in its grace period carries its warning on every answer, refusals too:
    # one refused for now (not open yet) may no longer work by the time it would.
    warning = None
    if f.state is State.deprecated and f.sunset_at is not None:
        if now >= f.sunset_at:
            return refused(Refusal.retired, NEWEST_LINK_HINT, f, replaced_by_hint=NEWEST_LINK_HINT)
        warning = (
            f"This link stops working at {_local(f.sunset_at, f.settings.time_zone)}; "
            "use the link in your latest invitation or reminder from then on."
        )
    retiring = {"warning": warning, "replaced_by_hint": NEWEST_LINK_HINT} if warning else {}
    if (
        f.kind is LinkKind.session
        and VideoMode.session_link not in PLAN_VIDEO_MODES[f.settings.plan]
    ):
        return refused(
            Refusal.plan_not_included,
            "This clinic's plan does not include session links; ask the clinic for its room link.",
            f,
            **retiring,
        )
    session = f.session
    if session is not None and f.kind in _WINDOWED:
        refusal = _outside_window(f, session, now, retiring)
        if refusal is not None:
            return refusal
    return _allowed(f, warning)


def _outside_window(
    f: Found, s: SessionWindow, now: datetime, retiring: dict[str, str]
) -> Decision | None:
    opens, closes = s.opens_at(f.settings), s.closes_at(f.settings)
    window = {"opens_at": opens, "closes_at": closes, "session_id": s.session_id, **retiring}
    if s.live:
        return None  # a call in progress is never cut off by its window
    ended = refused(Refusal.ended, "This session has ended.", f, **window)
    if s.status == "completed":
        return ended
    if now < opens:
        return refused(
            Refusal.not_yet_open,
            f"This session opens at {_local(opens, s.time_zone)}.",
            f,
            **window,
        )
    if now >= closes:
        grace = timedelta(minutes=f.settings.rejoin_grace_minutes)
        if f.left_at is not None and now < f.left_at + grace:
            return None  # dropped out a moment ago: may come back
        return ended
    return None


def _allowed(f: Found, warning: str | None) -> Decision:
    s = f.session
    if f.kind is LinkKind.practitioner_room:
        admission = "waiting_room"  # anyone may knock; nobody enters without a host
    elif f.role is Role.host:
        admission = "direct"
    elif s is not None:
        admission = s.guest_admission
    else:
        admission = f.settings.guest_admission.value
    return Decision(
        allowed=True,
        status=200,
        message="You may join.",
        warning=warning,
        role=CallRole.host if f.role is Role.host else CallRole.guest,
        kind=f.kind,
        link_id=f.link_id,
        clinic_id=f.clinic_id,
        session_id=s.session_id if s else None,
        room_id=(s.room_id if s else f.room_id),  # a session-link call has no room
        practitioner_id=s.practitioner_id if s else f.practitioner_id,
        admission=admission,
        opens_at=s.opens_at(f.settings) if s and f.kind in _WINDOWED else None,
        closes_at=s.closes_at(f.settings) if s and f.kind in _WINDOWED else None,
        live=s.live if s else False,
        max_participants=f.settings.max_participants,
        loudest_speakers=f.settings.loudest_speakers,
        rejoin_grace_minutes=f.settings.rejoin_grace_minutes,
        call=f.settings.call,
    )
