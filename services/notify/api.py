"""Notify HTTP API: a clinic's templates, its delivery log, re-sending, the copy-link text."""

from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from contracts.links import LinkKind
from contracts.notify import MessageKind, RecipientKind
from runtime.clinic_keys import CLINIC_KEY_PROBLEMS, ClinicId
from runtime.context import ServiceContext
from runtime.http import Problem, problems
from runtime.service import context_of
from services.notify import templates as tmpl
from services.notify.contents import (
    UnknownRecipient,
    UnknownSession,
    session_context,
    templates_of,
)
from services.notify.details import DetailsUnavailable, Opened
from services.notify.handlers import Notify, plan

router = APIRouter(prefix="/v1", tags=["notify"], responses=CLINIC_KEY_PROBLEMS)
REFUSED_TEMPLATE = problems(
    described={422: "The template is refused; `problems` says where and why."}
)
Context = Annotated[ServiceContext, Depends(context_of)]
NO_SESSION = "There is no such session in this clinic."


async def notify_of(request: Request) -> Notify:
    notify: Notify = request.app.state.notify
    return notify


NotifyDep = Annotated[Notify, Depends(notify_of)]


# -- templates ---------------------------------------------------------------------------------


class TemplateView(BaseModel):
    kind: MessageKind
    subject: str
    text: str
    html: str
    customised: bool = Field(description="False: the default that ships with Antechamber.")
    variables: dict[str, str] = Field(description="What the template may use, and what each is.")


async def _template_view(ctx: ServiceContext, clinic_id: str, kind: MessageKind) -> TemplateView:
    async with ctx.pool.acquire() as conn:
        current = await templates_of(conn, clinic_id, kind)
    return TemplateView(
        kind=kind,
        subject=current.subject,
        text=current.text,
        html=current.html,
        customised=current != tmpl.DEFAULT_TEMPLATES[kind],
        variables=tmpl.VARIABLES[kind],
    )


def _invalid(exc: tmpl.TemplateInvalid) -> Problem:
    first = exc.problems[0]
    where = f"{first.part}, line {first.line}" if first.line else first.part
    return Problem(
        422,
        f"The template was not saved: {where}: {first.reason}",
        code="template_invalid",
        problems=[{"part": p.part, "line": p.line, "reason": p.reason} for p in exc.problems],
    )


@router.get("/templates", summary="The clinic's message templates, one per kind")
async def list_templates(ctx: Context, clinic_id: ClinicId) -> list[TemplateView]:
    return [await _template_view(ctx, clinic_id, kind) for kind in MessageKind]


@router.get("/templates/{kind}", summary="One template")
async def get_template(ctx: Context, clinic_id: ClinicId, kind: MessageKind) -> TemplateView:
    return await _template_view(ctx, clinic_id, kind)


@router.put(
    "/templates/{kind}",
    summary="Replace a template (checked: syntax, variables, a test render)",
    responses=REFUSED_TEMPLATE,
)
async def put_template(
    ctx: Context, notify: NotifyDep, clinic_id: ClinicId, kind: MessageKind, body: tmpl.TemplateSet
) -> TemplateView:
    try:
        tmpl.validate(kind, body)
    except tmpl.TemplateInvalid as exc:
        raise _invalid(exc) from exc
    await ctx.pool.execute(
        "INSERT INTO templates (clinic_id, kind, subject, text_body, html_body, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (clinic_id, kind) DO UPDATE SET "
        "subject = EXCLUDED.subject, text_body = EXCLUDED.text_body, "
        "html_body = EXCLUDED.html_body, updated_at = EXCLUDED.updated_at",
        clinic_id,
        kind.value,
        body.subject,
        body.text,
        body.html,
        notify.clock(),
    )
    return await _template_view(ctx, clinic_id, kind)


@router.delete("/templates/{kind}", status_code=204, summary="Back to the default template")
async def reset_template(ctx: Context, clinic_id: ClinicId, kind: MessageKind) -> Response:
    await ctx.pool.execute(
        "DELETE FROM templates WHERE clinic_id = $1 AND kind = $2", clinic_id, kind.value
    )
    return Response(status_code=204)


class Preview(BaseModel):
    subject: str
    text: str
    html: str


@router.post(
    "/templates/{kind}/preview",
    summary="Render a template with sample values",
    responses=REFUSED_TEMPLATE,
)
async def preview_template(
    clinic_id: ClinicId, kind: MessageKind, body: tmpl.TemplateSet
) -> Preview:
    try:
        tmpl.validate(kind, body)
    except tmpl.TemplateInvalid as exc:
        raise _invalid(exc) from exc
    rendered = tmpl.render(kind, body, tmpl.SAMPLE_CONTEXT[kind])
    return Preview(subject=rendered.subject, text=rendered.text, html=rendered.html)


# -- the delivery log --------------------------------------------------------------------------


class DeliveryView(BaseModel):
    delivery_id: UUID
    session_id: UUID
    recipient_id: UUID
    recipient_kind: RecipientKind
    kind: MessageKind
    revision: int
    offset_minutes: int | None = Field(default=None, description="Reminders: minutes before.")
    status: Literal[
        "pending", "sending", "accepting", "sent", "failed", "skipped", "dropped", "unconfirmed"
    ]
    due_at: AwareDatetime
    updated_at: AwareDatetime
    attempts: int
    address: str | None = Field(default=None, description="Masked: g***@example.org.")
    message_id: str | None = None
    detail: str | None = Field(default=None, description="Why it failed or was skipped.")


def _delivery(row: Any) -> DeliveryView:
    data = dict(row)
    data["address"] = data.pop("address_masked")
    if data["kind"] != MessageKind.reminder.value:
        data["offset_minutes"] = None
    return DeliveryView.model_validate(data)


@router.get(
    "/deliveries",
    summary="The delivery log: per session and per recipient",
    responses=problems(400),
)
async def deliveries(
    ctx: Context,
    clinic_id: ClinicId,
    session_id: UUID | None = None,
    recipient_id: UUID | None = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 100,
) -> list[DeliveryView]:
    if session_id is None and recipient_id is None:
        raise Problem(
            400, "Say which session (session_id) or recipient (recipient_id).", code="no_filter"
        )
    rows = await ctx.pool.fetch(
        "SELECT delivery_id, session_id, recipient_id, recipient_kind, kind, revision, "
        "offset_minutes, status, due_at, updated_at, attempts, address_masked, message_id, "
        "detail FROM deliveries WHERE clinic_id = $1 AND ($2::uuid IS NULL OR session_id = $2) "
        "AND ($3::uuid IS NULL OR recipient_id = $3) ORDER BY due_at, created_at LIMIT $4",
        clinic_id,
        session_id,
        recipient_id,
        limit,
    )
    return [_delivery(r) for r in rows]


class Resend(BaseModel):
    recipient_id: UUID | None = Field(
        default=None, description="One recipient; none: every client and attendee."
    )


class Resent(BaseModel):
    delivery_ids: list[UUID]


@router.post(
    "/sessions/{session_id}/resend",
    status_code=202,
    summary="Send the invitation again",
    responses=problems(
        described={
            404: "There is no such session in this clinic, or no such recipient in it.",
            409: "The session is cancelled or completed.",
        }
    ),
)
async def resend(
    ctx: Context, notify: NotifyDep, clinic_id: ClinicId, session_id: UUID, body: Resend
) -> Resent:
    now = notify.clock()
    request = str(uuid4())  # each request is its own message (Idempotency-Key repeats it)
    async with ctx.pool.acquire() as conn, conn.transaction():
        session = await conn.fetchrow(
            "SELECT status, revision FROM sessions WHERE session_id = $1 AND clinic_id = $2",
            session_id,
            clinic_id,
        )
        if session is None:
            raise Problem(404, NO_SESSION, code="session_not_found")
        if session["status"] in ("cancelled", "completed"):
            raise Problem(
                409,
                f"This session is {session['status']}; there is nothing to join.",
                code=f"session_{session['status']}",
            )
        rows = await conn.fetch(
            "SELECT recipient_id, kind FROM recipients WHERE session_id = $1 AND NOT removed "
            "AND ($2::uuid IS NULL OR recipient_id = $2)",
            session_id,
            body.recipient_id,
        )
        if not rows:
            raise Problem(404, "There is no such recipient in this session.", code="no_recipient")
        ids = []
        for row in rows:
            delivery = await plan(
                conn,
                clinic_id,
                session_id,
                (row["recipient_id"], row["kind"]),
                MessageKind.invitation,
                session["revision"],
                now,
                now,
                ref=f"resend:{request}",
            )
            if delivery is not None:
                ids.append(delivery)
    return Resent(delivery_ids=ids)


# -- copy link ---------------------------------------------------------------------------------


class CopyText(BaseModel):
    text: str = Field(description="The link and the session's details, ready to paste.")
    join_url: str = Field(description="Do not log it: it lets its holder in.")
    kind: LinkKind = Field(
        description="session, client_room, practitioner_room, drop_in (an attendee's own), or "
        "guest (the session's shareable link)."
    )
    personal: bool = Field(
        description="False for a link meant to be passed on: a practitioner's room (public) "
        "or a session's guest link."
    )


COPY_PROBLEMS = problems(
    400,
    described={
        404: "There is no such session in this clinic, or no such recipient in it.",
        409: "The link has not arrived yet, or (link=guest) the session does not share links.",
    },
)


@router.get(
    "/sessions/{session_id}/copy-link",
    summary="The link with the session's details, ready to paste",
    responses=COPY_PROBLEMS,
)
async def copy_link(
    ctx: Context,
    notify: NotifyDep,
    clinic_id: ClinicId,
    session_id: UUID,
    response: Response,
    recipient_id: Annotated[
        UUID | None,
        Query(description="A client or attendee: the link they join with. None: the clients'."),
    ] = None,
    link: Annotated[
        Literal["recipient", "guest"],
        Query(
            description="recipient (default): the recipient's own link; guest: the session's "
            "shareable guest link (link sharing on)."
        ),
    ] = "recipient",
) -> CopyText:
    # The answer lets its holder in: no cache, shared or private, may keep it.
    response.headers["Cache-Control"] = "no-store"
    guest = link == "guest"
    if guest and recipient_id is not None:
        raise Problem(
            400,
            "The guest link is the session's, not a recipient's: leave out recipient_id.",
            code="guest_link_has_no_recipient",
        )
    async with ctx.pool.acquire() as conn:
        try:
            contents = await session_context(
                conn, notify, clinic_id, session_id, recipient_id, guest=guest
            )
        except UnknownSession as exc:
            raise Problem(404, NO_SESSION, code="session_not_found") from exc
        except UnknownRecipient as exc:
            raise Problem(
                404, "There is no such recipient in this session.", code="recipient_not_found"
            ) from exc
    if guest and not contents.session["link_sharing"]:
        raise Problem(
            409,
            "This session has no guest link: link sharing is off. Turn it on to get one.",
            code="link_sharing_off",
        )
    context = contents.context
    if "join_url" not in context:
        raise Problem(
            409, "This session has no working link yet; try again in a moment.", code="no_link"
        )
    title = await _room_title(ctx, notify, clinic_id, contents.room_title)
    return CopyText(
        text=copy_text(context, contents.link, title),
        join_url=context["join_url"],
        kind=contents.link,
        personal=context["link_personal"],
    )


async def _room_title(
    ctx: ServiceContext, notify: Notify, clinic_id: str, stored: str | None
) -> str:
    """The room's title opened (a client room's is sealed); without scheduling's answer, the
    text goes without it rather than failing."""
    if stored is None:
        return ""
    try:
        opened = await notify.details.open(ctx, clinic_id, [stored])
    except DetailsUnavailable:
        return ""
    return opened.get(stored, Opened(None)).value or ""


def copy_text(context: dict[str, Any], kind: LinkKind, room_title: str) -> str:
    practitioner = context["practitioner_name"]
    who = f" with {practitioner}" if practitioner else ""
    where = f" in the room \u201c{room_title}\u201d" if room_title else ""
    opens = f"The link opens at {context['opens_at']}. " if context["opens_at"] else ""
    match kind:
        case LinkKind.guest:
            note = (
                f"{opens}Anyone with this link can join: share it only with the people you "
                "want in the session."
            )
        case LinkKind.practitioner_room:
            host = practitioner or "the practitioner"
            note = f"This is {host}'s room: you wait there until {host} lets you in."
        case _:
            note = f"{opens}It is personal: please do not share it."
    return (
        f"Video session{who}{where} ({context['clinic_name']})\n"
        f"{context['date']}, {context['start_time']} to {context['end_time']} "
        f"({context['time_zone']})\n"
        f"Join: {context['join_url']}\n"
        f"{note}"
    )
