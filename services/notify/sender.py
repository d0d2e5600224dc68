"""Sending what is due: claim, write, hand to the mail server, record.

Any number of notify processes may run. A process claims due messages (``FOR UPDATE SKIP
LOCKED``, a claim id and a deadline), writes each with the clinic's template, its recipient's
link and a calendar entry, and sends it through :class:`~services.notify.smtp.Mailer`, which
records ``accepting`` just before the mail server is told to accept. A claim whose process
died is taken over when its deadline passes: ``sending`` is sent again (the server never got
the final dot), ``accepting`` is recorded as unconfirmed and not sent again. A live process
keeps pushing the deadlines of the messages it holds (queued or being sent) forward, so a
claim lapses when its process stops, not because a batch took longer than ``claim_s``.

Recipients' names and addresses rest sealed; a claimed batch's are opened by scheduling in
one request (:mod:`services.notify.details`) before its messages are written. A recipient
scheduling says was erased fails at once with the reason ``erased`` and is not tried again.
"""

import asyncio
import re
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any, Literal
from uuid import UUID, uuid4

import structlog
from email_validator import EmailNotValidError, validate_email

from contracts.events import Event
from contracts.notify import (
    DeliveryFailed,
    FailedBecause,
    InvitationSent,
    MessageKind,
    RecipientKind,
    ReminderSent,
    ReminderSkipped,
    SkippedBecause,
)
from contracts.scheduling import Opening
from runtime.context import ServiceContext
from runtime.db import Executor
from services.notify import ical
from services.notify.contents import (
    UnknownSession,
    previous_link_until,
    session_context,
    starts_in,
    templates_of,
)
from services.notify.details import DetailsUnavailable, Opened
from services.notify.handlers import ERASED, Notify
from services.notify.smtp import Mailer, Outcome
from services.notify.templates import RenderError, render

log = structlog.get_logger(__name__)
MAX_BACKOFF_S = 3600.0
LINK_RETRY_S = 2.0


class NotYet(Exception):
    """The message cannot be written yet (its link has not arrived): try again soon."""


@dataclass(frozen=True)
class Refused(Exception):
    because: FailedBecause
    detail: str


@dataclass(frozen=True)
class Skipped(Exception):
    """Not sent, and not a failure: nothing to alert on."""

    detail: str
    because: SkippedBecause | None = None
    """Reminders skipped for a reason integrators are told of (``ReminderSkipped``)."""


NO_ADDRESS = "no address: the recipient has no email address, so nothing was sent"


@dataclass(frozen=True)
class Written:
    message: EmailMessage
    address: str
    content: bytes
    """The message as the mail server gets it (made while writing, so it fails there)."""


def mask(address: str) -> str:
    """``g***@example.org``: enough to recognise, not enough to read."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """``value`` on one line: a header cannot hold control characters, and a line break in a
    name (the clinic's, in From; any in Subject) would otherwise start a header of its own."""
    return " ".join(_CONTROL.sub(" ", value).split())


class Sender:
    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.settings = notify.settings
        self.domain = self.settings.sender_address.partition("@")[2] or "antechamber.invalid"
        self.held: dict[UUID, UUID] = {}
        """Claim of each message this process has claimed and not yet finished with."""

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, ctx: ServiceContext) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._worker(ctx, queue), name=f"notify-sender-{n}")
            for n in range(self.settings.smtp_connections)
        ]
        # A task of its own: a slow claim or details request must not let the claims lapse.
        tasks.append(asyncio.create_task(self._keep_claims(ctx), name="notify-claims"))
        # Claims lapse after claim_s: looking for lapsed ones a few times as often is enough,
        # not on every poll.
        take_over_every = self.settings.claim_s / 4
        next_take_over = 0.0
        try:
            while True:
                try:
                    if time.monotonic() >= next_take_over:
                        await self._take_over(ctx)
                        next_take_over = time.monotonic() + take_over_every
                    claimed = []
                    if queue.qsize() < self.settings.smtp_connections:
                        claimed = await self._claim(ctx)
                        await self._open_details(ctx, claimed)
                except Exception as exc:  # Postgres away for a moment: the loop goes on
                    log.warning("cannot look for due messages", error=type(exc).__name__)
                for row in claimed:
                    self.held[row["delivery_id"]] = row["claim"]
                    queue.put_nowait(row)
                if len(claimed) < self.settings.batch:
                    await asyncio.sleep(self.settings.poll_s)
                else:
                    await asyncio.sleep(0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim(self, ctx: ServiceContext) -> list[Any]:
        now = self.notify.clock()
        return list(
            await ctx.pool.fetch(
                "UPDATE deliveries SET status = 'sending', claim = $3, claimed_until = $4, "
                "updated_at = $1 WHERE delivery_id IN (SELECT delivery_id FROM deliveries "
                "WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at "
                "LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *",
                now,
                self.settings.batch,
                uuid4(),
                now + timedelta(seconds=self.settings.claim_s),
            )
        )

    async def _open_details(self, ctx: ServiceContext, claimed: list[Any]) -> None:
        """The claimed messages' recipients' names and addresses (and their rooms' titles),
        opened ahead in one request per clinic (usually one), so that writing each message asks
        nothing more. Without an answer, each message asks again as it is written, and waits if
        it must."""
        if not claimed:
            return
        rows = await ctx.pool.fetch(
            "SELECT r.clinic_id, coalesce(r.email, c.email) AS email, "
            "coalesce(r.display_name, c.display_name) AS name, room.title FROM recipients r "
            "JOIN unnest($1::uuid[], $2::uuid[]) AS t(session_id, recipient_id) "
            "ON r.session_id = t.session_id AND r.recipient_id = t.recipient_id "
            "LEFT JOIN clients c ON c.client_id = r.recipient_id "
            "JOIN sessions s ON s.session_id = r.session_id "
            "LEFT JOIN rooms room ON room.room_id = s.room_id AND s.video_mode <> 'session_link'",
            [row["session_id"] for row in claimed],
            [row["recipient_id"] for row in claimed],
        )
        by_clinic: dict[str, list[str | None]] = {}
        for row in rows:
            wanted = (row["email"], row["name"], row["title"])
            by_clinic.setdefault(row["clinic_id"], []).extend(wanted)
        for clinic, values in by_clinic.items():
            try:
                await self.notify.details.open(ctx, clinic, values)
            except DetailsUnavailable as exc:
                log.warning("cannot open recipients' details ahead", error=str(exc))

    async def _keep_claims(self, ctx: ServiceContext) -> None:
        """Every quarter of ``claim_s``, the deadline of each message held moves ``claim_s``
        ahead: others take a claim over only once its process has stopped renewing it."""
        while True:
            await asyncio.sleep(self.settings.claim_s / 4)
            if not self.held:
                continue
            ids, claims = list(self.held), list(self.held.values())
            try:
                await ctx.pool.execute(
                    "UPDATE deliveries d SET claimed_until = $3 "
                    "FROM unnest($1::uuid[], $2::uuid[]) AS h(delivery_id, claim) "
                    "WHERE d.delivery_id = h.delivery_id AND d.claim = h.claim "
                    "AND d.status IN ('sending', 'accepting')",
                    ids,
                    claims,
                    self.notify.clock() + timedelta(seconds=self.settings.claim_s),
                )
            except Exception as exc:  # Postgres away for a moment: renewed next time
                log.warning("cannot renew claims", error=type(exc).__name__)

    async def _take_over(self, ctx: ServiceContext) -> None:
        """Claims of processes that stopped: sent again, or recorded as unconfirmed. Never
        this process's own (a renewal that came late must not make it mark its own)."""
        now = self.notify.clock()
        own = list(self.held)
        async with ctx.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE deliveries SET status = 'pending', claim = NULL, updated_at = $1 "
                "WHERE status = 'sending' AND claimed_until < $1 "
                "AND delivery_id <> ALL($2::uuid[])",
                now,
                own,
            )
            lost = await conn.fetch(
                "UPDATE deliveries SET status = 'unconfirmed', claim = NULL, updated_at = $1, "
                "detail = 'notify stopped while the mail server was accepting this message; "
                "it may have arrived, so it is not sent again' "
                "WHERE status = 'accepting' AND claimed_until < $1 "
                "AND delivery_id <> ALL($2::uuid[]) RETURNING *",
                now,
                own,
            )
            for row in lost:
                await self._event(
                    ctx, conn, row, self._failed(row, FailedBecause.unconfirmed, row["detail"])
                )

    async def _worker(self, ctx: ServiceContext, queue: "asyncio.Queue[Any]") -> None:
        mailer = Mailer(self.settings)
        try:
            while True:
                row = await queue.get()
                try:
                    await self.deliver(ctx, mailer, row)
                except Exception:
                    # Not while writing (deliver counts those) but while recording or sending,
                    # Postgres away: left claimed, no longer renewed, taken over when the claim
                    # lapses (sent again from `sending`, unconfirmed from `accepting`).
                    log.exception(
                        "delivery failed unexpectedly", delivery_id=str(row["delivery_id"])
                    )
                finally:
                    if self.held.get(row["delivery_id"]) == row["claim"]:
                        del self.held[row["delivery_id"]]
        finally:
            mailer.close()

    # -- one message ---------------------------------------------------------------------------

    async def deliver(self, ctx: ServiceContext, mailer: Mailer, row: Any) -> None:
        try:
            async with ctx.pool.acquire() as conn:
                written = await self.write(ctx, conn, row)
        except NotYet:
            await self._again(ctx, row, LINK_RETRY_S, attempt=False)
            return
        except DetailsUnavailable as exc:
            await self._temporary(ctx, row, f"the recipient's details could not be read: {exc}")
            return
        except Refused as refused:
            await self._finish(
                ctx,
                row,
                "failed",
                refused.detail,
                self._failed(row, refused.because, refused.detail),
            )
            return
        except Skipped as skipped:
            event = None
            if skipped.because is not None:
                event = ReminderSkipped(
                    delivery_id=row["delivery_id"],
                    session_id=row["session_id"],
                    recipient_id=row["recipient_id"],
                    recipient_kind=RecipientKind(row["recipient_kind"]),
                    offset_minutes=row["offset_minutes"],
                    because=skipped.because,
                )
            await self._finish(ctx, row, "skipped", skipped.detail, event)
            return
        except Exception as exc:
            # A value or a case nobody foresaw: counted as an attempt, so that it ends as
            # failed (gave_up) after MAX_ATTEMPTS rather than coming back every claim period.
            # Its message is left out: it may quote a recipient's name or address.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "cannot write a message",
                delivery_id=str(row["delivery_id"]),
                error=type(exc).__name__,
                at=f"{where.filename}:{where.lineno}",
            )
            await self._temporary(
                ctx, row, f"an unexpected error while writing the message ({type(exc).__name__})"
            )
            return

        async def point_of_no_return() -> bool:
            # A whole claim period from here, however late the next renewal: the dot and the
            # server's answer are on their way, and no one may call this message unconfirmed.
            now = self.notify.clock()
            status = await ctx.pool.execute(
                "UPDATE deliveries SET status = 'accepting', updated_at = $3, "
                "address_masked = $4, claimed_until = $5 "
                "WHERE delivery_id = $1 AND claim = $2 AND status = 'sending'",
                row["delivery_id"],
                row["claim"],
                now,
                mask(written.address),
                now + timedelta(seconds=self.settings.claim_s),
            )
            return bool(status == "UPDATE 1")

        outcome = await mailer.send(
            self.settings.sender_address,
            written.address,
            written.content,
            point_of_no_return,
        )
        await self._outcome(ctx, row, written, outcome)

    async def write(self, ctx: ServiceContext, conn: Executor, row: Any) -> Written:
        kind = MessageKind(row["kind"])
        now = self.notify.clock()
        try:
            contents = await session_context(
                conn, self.notify, row["clinic_id"], row["session_id"], row["recipient_id"]
            )
        except UnknownSession as exc:
            raise Refused(FailedBecause.no_link, "the session is unknown to notify") from exc
        session, context, recipient = contents.session, contents.context, contents.recipient
        if recipient.erased:
            raise Refused(FailedBecause.erased, ERASED)
        values = (recipient.email, recipient.name)
        opened = await self.notify.details.open(
            ctx, row["clinic_id"], (*values, contents.room_title)
        )
        if any(opened.get(v or "", Opened(None)).outcome is Opening.erased for v in values):
            raise Refused(FailedBecause.erased, ERASED)
        # .get, not [...]: a KeyError would put the value in the log line of the failure.
        address = opened.get(recipient.email or "", Opened(None)).value
        context["recipient_name"] = opened.get(recipient.name or "", Opened(None)).value or ""
        # A room's title erased with its client (a contact's message) is simply not shown.
        context["room_title"] = opened.get(contents.room_title or "", Opened(None)).value or ""
        client_unknown = recipient.client_unknown
        if kind is MessageKind.reminder:
            if session["status"] != "scheduled" or session["starts_at"] <= now:
                raise Skipped("the session had started", SkippedBecause.session_started)
            context["starts_in"] = starts_in(row["offset_minutes"])
        if not address:
            # A client's details come in an event of their own, which a redelivery (after a
            # consumer crashed) can bring after the session's: wait for them as for a link.
            waited = (now - row["created_at"]).total_seconds()
            if client_unknown and waited < self.settings.link_wait_s:
                raise NotYet
            if recipient.email:  # sealed, and scheduling would not open it for this clinic
                raise Refused(
                    FailedBecause.invalid_address, "the recipient's address could not be opened"
                )
            if client_unknown:
                raise Refused(
                    FailedBecause.invalid_address,
                    f"the client's details did not arrive within {waited:.0f} s",
                )
            # The clinic keeps no address for them: theirs to know, not a failure to alert on.
            raise Skipped(NO_ADDRESS)
        try:
            address = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise Refused(
                FailedBecause.invalid_address, f"the recipient's address is not valid: {exc}"
            ) from exc
        if kind is MessageKind.new_link:
            context["previous_link_until"] = await previous_link_until(
                conn, row["ref"], now, context["time_zone"]
            )
        if kind is MessageKind.cancellation:
            context.pop("join_url", None)
        elif "join_url" not in context:
            waited = (now - row["created_at"]).total_seconds()
            if waited < self.settings.link_wait_s:
                raise NotYet
            raise Refused(
                FailedBecause.no_link,
                f"no working link for this recipient arrived within {waited:.0f} s",
            )
        try:
            rendered = render(kind, await templates_of(conn, row["clinic_id"], kind), context)
        except RenderError as exc:
            raise Refused(FailedBecause.template, str(exc)) from exc
        message = EmailMessage()
        sender = (header_text(session["clinic_name"]), self.settings.sender_address)
        message["From"] = formataddr(sender)
        message["To"] = address
        message["Subject"] = header_text(rendered.subject)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = f"<{row['delivery_id']}@{self.domain}>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        if kind is not MessageKind.reminder:
            method: Literal["REQUEST", "CANCEL"] = (
                "CANCEL" if kind is MessageKind.cancellation else "REQUEST"
            )
            calendar = ical.calendar(
                uid=ical.session_uid(session["session_id"]),
                sequence=session["revision"],
                method=method,
                starts_at=session["starts_at"],
                ends_at=session["ends_at"],
                time_zone=session["time_zone"],
                summary=f"Video session with {context['practitioner_name']}".strip(),
                description=rendered.text,
                url=context.get("join_url"),
                organizer=sender,
                attendee=None,
                stamp=now,
            )
            message.add_attachment(
                calendar,
                maintype="text",
                subtype="calendar",
                filename="invite.ics",
                params={"method": method},
            )
        return Written(message, address, message.as_bytes())

    # -- recording -----------------------------------------------------------------------------

    async def _outcome(
        self, ctx: ServiceContext, row: Any, written: Written, outcome: Outcome
    ) -> None:
        message_id = written.message["Message-ID"]
        if outcome.status == "sent":
            await self._finish(
                ctx, row, "sent", outcome.detail, self._sent(row, message_id), message_id
            )
        elif outcome.status == "unconfirmed":
            event = self._failed(row, FailedBecause.unconfirmed, outcome.detail)
            await self._finish(ctx, row, "unconfirmed", outcome.detail, event, message_id)
        elif outcome.status == "abandoned":
            log.info("message taken over by another process", delivery_id=str(row["delivery_id"]))
        elif outcome.status == "permanent":
            event = self._failed(row, FailedBecause.refused, outcome.detail)
            await self._finish(ctx, row, "failed", outcome.detail, event)
        else:
            await self._temporary(ctx, row, outcome.detail)

    async def _temporary(self, ctx: ServiceContext, row: Any, detail: str) -> None:
        """Tried again after a back-off, or given up after ``max_attempts``."""
        if row["attempts"] + 1 >= self.settings.max_attempts:
            detail = f"gave up after {row['attempts'] + 1} tries; the last: {detail}"
            await self._finish(
                ctx, row, "failed", detail, self._failed(row, FailedBecause.gave_up, detail)
            )
        else:
            backoff = min(self.settings.retry_base_s * 2 ** row["attempts"], MAX_BACKOFF_S)
            await self._again(ctx, row, backoff, attempt=True, detail=detail)

    async def _again(
        self,
        ctx: ServiceContext,
        row: Any,
        after_s: float,
        *,
        attempt: bool,
        detail: str | None = None,
    ) -> None:
        now = self.notify.clock()
        await ctx.pool.execute(
            "UPDATE deliveries SET status = 'pending', claim = NULL, next_attempt_at = $3, "
            "attempts = attempts + $4, detail = coalesce($5, detail), updated_at = $6 "
            "WHERE delivery_id = $1 AND claim = $2 AND status IN ('sending', 'accepting')",
            row["delivery_id"],
            row["claim"],
            now + timedelta(seconds=after_s),
            1 if attempt else 0,
            detail,
            now,
        )

    async def _finish(
        self,
        ctx: ServiceContext,
        row: Any,
        status: str,
        detail: str,
        event: Event | None,
        message_id: str | None = None,
    ) -> None:
        async with ctx.pool.acquire() as conn, conn.transaction():
            updated = await conn.execute(
                "UPDATE deliveries SET status = $3, detail = $4, message_id = $5, "
                "attempts = attempts + $6, updated_at = $7, claim = NULL "
                "WHERE delivery_id = $1 AND claim = $2 AND status IN ('sending', 'accepting')",
                row["delivery_id"],
                row["claim"],
                status,
                detail[:500],
                message_id,
                0 if status == "skipped" else 1,
                self.notify.clock(),
            )
            if updated == "UPDATE 1" and event is not None:
                await self._event(ctx, conn, row, event)

    async def _event(self, ctx: ServiceContext, conn: Executor, row: Any, event: Event) -> None:
        # One outcome per message (the status update above guards it): a stream of one event.
        await ctx.store.append(
            f"delivery-{row['delivery_id']}", 0, [event], clinic_id=row["clinic_id"], conn=conn
        )

    def _sent(self, row: Any, message_id: str) -> Event:
        common = {
            "delivery_id": row["delivery_id"],
            "session_id": row["session_id"],
            "recipient_id": row["recipient_id"],
            "recipient_kind": RecipientKind(row["recipient_kind"]),
            "message_id": message_id,
        }
        if row["kind"] == MessageKind.reminder.value:
            late = row["due_at"] < self.notify.clock() - timedelta(minutes=1)
            return ReminderSent(offset_minutes=row["offset_minutes"], late=late, **common)
        return InvitationSent(kind=MessageKind(row["kind"]), revision=row["revision"], **common)

    def _failed(self, row: Any, because: FailedBecause, detail: str) -> Event:
        return DeliveryFailed(
            delivery_id=row["delivery_id"],
            session_id=row["session_id"],
            recipient_id=row["recipient_id"],
            recipient_kind=RecipientKind(row["recipient_kind"]),
            kind=MessageKind(row["kind"]),
            because=because,
            detail=detail[:500],
        )
