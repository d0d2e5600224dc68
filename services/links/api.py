"""Links HTTP API: resolution for front ends, and a clinic's links, regeneration, retirement."""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Scope

from contracts.links import Decision, LinkKind, ResolveRequest
from runtime.client_address import client_address_of
from runtime.clinic_keys import CLINIC_KEY_PROBLEMS, ClinicId, clinic_of
from runtime.context import ServiceContext
from runtime.http import CLINIC_KEY, Problem, problem_response, problems
from runtime.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_cursor,
    encode_cursor,
    time_and_id,
)
from runtime.service import context_of
from services.links import commands
from services.links.handlers import Links
from services.links.resolver import resolve

router = APIRouter(prefix="/v1/links", tags=["links"])
Context = Annotated[ServiceContext, Depends(context_of)]
LINK_PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "Cache-Control": "no-store",
}


async def links_of(request: Request) -> Links:
    links: Links = request.app.state.links
    return links


LinksDep = Annotated[Links, Depends(links_of)]


async def credential_still_works(scope: Scope) -> bool:
    """The idempotency replay guard: a stored answer (a regeneration's holds the new link) is
    replayed only to a key that still works; otherwise the request runs and is refused."""
    request = Request(scope)
    try:
        await clinic_of(await context_of(request), await CLINIC_KEY(request))
    except Problem:
        return False
    return True


def answer(request: Request, decision: Decision) -> Response:
    if decision.allowed:
        body = decision.model_dump_json()  # pydantic's own encoder: no dict, no json.dumps
        return Response(body, media_type="application/json", headers=LINK_PAGE_HEADERS)
    headers = dict(LINK_PAGE_HEADERS)
    if decision.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(decision.retry_after_s)))
    extra = decision.model_dump(mode="json", exclude={"message", "status", "allowed"})
    extra["code"] = extra.pop("reason")
    return problem_response(request, decision.status, decision.message, headers=headers, **extra)


class ResolveQuery(BaseModel):
    """The query of ``GET /v1/links/resolve``."""

    token: str | None = Field(
        default=None, max_length=200, description="From `/j/{token}` or `/h/{token}`."
    )
    clinic: str | None = Field(
        default=None, max_length=64, description="The clinic of `/r/{clinic}/{room}`."
    )
    room: str | None = Field(default=None, max_length=64, description="The room of `/r/...`.")
    session_id: UUID | None = Field(
        default=None, description="Host tokens: the session to join as host."
    )


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()["properties"]
    return [
        {"name": name, "in": "query", "required": False, "schema": field}
        for name, field in schema.items()
    ]


@router.get(
    "/resolve",
    response_model=Decision,
    responses=problems(
        400,
        422,
        503,
        described={
            403: "Refused: the clinic is suspended, or its plan does not include this link.",
            404: "Refused: there is no such link (`code` is the reason, as for every refusal).",
            410: "Refused: the link ended, was replaced, revoked, retired or unshared.",
            423: "Refused: the link does not open yet (`opens_at` says when).",
            429: "Refused: too many unknown links from this address; `Retry-After` says when.",
        },
    ),
    openapi_extra={"parameters": _query_parameters(ResolveQuery)},
)
async def resolve_link(request: Request) -> Response:
    """May this link join now, as whom; refusals are problem bodies with the reason as `code`.

    Give `token` (from `/j/{token}` or `/h/{token}`), or `clinic` and `room` (from
    `/r/{clinic}/{room}`); a host token may name the `session_id` to join.
    """
    # The query is read here rather than declared to FastAPI: its per-parameter dependency
    # solving cost more than the whole resolution served from the cache.
    try:
        query = ResolveQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in errors]) from None
    if query.token is None and not (query.clinic and query.room):
        raise Problem(400, "Give a token, or a clinic and a room.", code="nothing_to_resolve")
    ctx = await context_of(request)
    resolved = ResolveRequest(
        token=query.token,
        clinic_slug=query.clinic,
        room_slug=query.room,
        session_id=query.session_id,
        client_address=client_address_of(request),
    )
    return answer(request, await resolve(await links_of(request), ctx, ctx.pool, resolved))


class LinkView(BaseModel):
    link_id: UUID
    kind: LinkKind
    role: str
    url: str = Field(description="The link itself; treat it like a password.")
    state: str = Field(description="active | deprecated | replaced | revoked")
    revoked_because: str | None
    replaced_by: UUID | None
    sunset_at: datetime | None
    session_id: UUID | None
    room_id: UUID | None
    client_id: UUID | None
    attendee_id: UUID | None
    practitioner_id: UUID | None
    issued_at: datetime


def view(links: Links, row: Any) -> LinkView:
    fields = {k: v for k, v in dict(row).items() if k not in ("url_sealed", "slot", "clinic_id")}
    return LinkView(**fields, url=links.sealer.unseal(row["url_sealed"]))


@router.get("", responses=CLINIC_KEY_PROBLEMS | problems(400))
async def list_links(
    clinic_id: ClinicId,
    ctx: Context,
    links: LinksDep,
    response: Response,
    session_id: UUID | None = None,
    room_id: UUID | None = None,
    practitioner_id: UUID | None = None,
    kind: LinkKind | None = None,
    include_inactive: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[LinkView]:
    """The clinic's links for a session, a room or a practitioner (e.g. to copy one), in the
    order they were issued."""
    response.headers["Cache-Control"] = "no-store"
    if session_id is None and room_id is None and practitioner_id is None:
        raise Problem(
            400, "Filter by session_id, room_id or practitioner_id.", code="filter_required"
        )
    issued_after, link_after = time_and_id(decode_cursor(cursor, 2))
    rows = await ctx.pool.fetch(
        "SELECT * FROM links WHERE clinic_id = $1 "
        "AND ($2::uuid IS NULL OR session_id = $2) AND ($3::uuid IS NULL OR room_id = $3) "
        "AND ($4::uuid IS NULL OR practitioner_id = $4) AND ($5::text IS NULL OR kind = $5) "
        "AND ($6 OR state IN ('active', 'deprecated')) "
        "AND ($7::timestamptz IS NULL OR (issued_at, link_id) > ($7, $8)) "
        "ORDER BY issued_at, link_id LIMIT $9",
        clinic_id,
        session_id,
        room_id,
        practitioner_id,
        kind.value if kind else None,
        include_inactive,
        issued_after,
        link_after,
        limit + 1,  # one more, to learn whether another page follows
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if more else None
    return Page(
        items=[view(links, r) for r in page],
        next_cursor=encode_cursor(last["issued_at"].isoformat(), last["link_id"]) if last else None,
    )


@router.post(
    "/{link_id}/regenerate", status_code=201, responses=CLINIC_KEY_PROBLEMS | problems(404, 409)
)
async def regenerate(
    link_id: UUID, clinic_id: ClinicId, ctx: Context, links: LinksDep, response: Response
) -> LinkView:
    """Replace a guest link or a client room link: the old one is refused from now on."""
    new_id = await commands.regenerate(ctx, links, clinic_id, link_id)
    await links.cache.synced()  # the old link is refused from the client's next resolve here
    row = await ctx.pool.fetchrow("SELECT * FROM links WHERE link_id = $1", new_id)
    response.headers["Location"] = f"/v1/links/{new_id}/audit"
    response.headers["Cache-Control"] = "no-store"  # the new link; never kept for a replay
    return view(links, row)


class Retirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sunset_at: AwareDatetime = Field(
        description="Until then the old links work, with a warning; must be in the future."
    )
    kind: LinkKind | None = Field(
        default=None,
        description="Only links of this kind. Without it, every kind but `host` (a "
        "practitioner's own link is retired only when named) and `practitioner_room` (an "
        "address, never retired).",
    )
    issued_before: AwareDatetime | None = Field(default=None, description="Only older links.")


class Retired(BaseModel):
    retired: int = Field(description="How many links were retired (each got a successor).")


@router.post("/retire", responses=CLINIC_KEY_PROBLEMS | problems(409, 422))
async def retire(body: Retirement, clinic_id: ClinicId, ctx: Context, links: LinksDep) -> Retired:
    """Retire the clinic's links in bulk: each gets a successor at once and keeps working with
    a warning until the sunset, after which it is refused with a hint to use the newest link."""
    if body.sunset_at <= links.clock():
        # A sunset already past would refuse every old link at once, with no time for anyone
        # to receive its successor.
        raise Problem(
            422,
            "The sunset must be in the future: until then the old links keep working, so "
            "that the people who hold them can receive the new ones.",
            code="sunset_not_ahead",
        )
    count = await commands.retire(
        ctx, links, clinic_id, body.sunset_at, body.kind, body.issued_before
    )
    await links.cache.synced()  # resolves here from now on see the warnings
    return Retired(retired=count)


class AuditEntry(BaseModel):
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class Audit(BaseModel):
    link: LinkView
    lifecycle: list[AuditEntry]
    resolutions: dict[str, int] = Field(description="Resolutions by outcome: allowed, or why not.")


@router.get("/{link_id}/audit", responses=CLINIC_KEY_PROBLEMS | problems(404))
async def audit(link_id: UUID, clinic_id: ClinicId, ctx: Context, links: LinksDep) -> Audit:
    """A link's lifecycle (its events) and how often it was resolved, by outcome."""
    row = await ctx.pool.fetchrow(
        "SELECT * FROM links WHERE link_id = $1 AND clinic_id = $2", link_id, clinic_id
    )
    if row is None:
        raise Problem(404, "There is no link with that id.", code="link_not_found")
    await links.save_resolutions(ctx)  # include what was counted in the last second
    events = await ctx.store.read_stream(row["slot"])
    mine = [
        AuditEntry(type=e.type, occurred_at=e.occurred_at, data=_without_url(e.data))
        for e in events
        if str(link_id) in (str(e.data.get("link_id")), str(e.data.get("replaces_link_id")))
    ]
    counts = await ctx.pool.fetch(
        "SELECT outcome, count FROM link_resolutions WHERE link_id = $1", link_id
    )
    return Audit(
        link=view(links, row),
        lifecycle=mine,
        resolutions={r["outcome"]: r["count"] for r in counts},
    )


def _without_url(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "url_sealed"}
