"""Media HTTP API: a clinic's recordings, and their signed, expiring download URLs."""

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel, Field

from runtime.clinic_keys import CLINIC_KEY_PROBLEMS, ClinicId
from runtime.context import ServiceContext
from runtime.http import NO_STORE, Problem, problems
from runtime.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Page,
    decode_cursor,
    encode_cursor,
    time_and_id,
)
from runtime.service import context_of
from services.media import recordings
from services.media.node import Media

router = APIRouter(prefix="/v1/recordings", tags=["recordings"])
Context = Annotated[ServiceContext, Depends(context_of)]
NOT_FOUND = "There is no such recording in this clinic."


async def media_of(request: Request) -> Media:
    media: Media = request.app.state.media
    return media


MediaDep = Annotated[Media, Depends(media_of)]


class RecordingView(BaseModel):
    recording_id: UUID
    room_id: UUID
    status: Literal["recording", "available", "partial", "failed"] = Field(
        description=(
            "partial: the recorder died before the recording was stopped (killed, crashed, or "
            "the video server restarted); the file plays up to where it was cut off."
        )
    )
    started_at: AwareDatetime
    stopped_at: AwareDatetime | None = None
    duration_s: float | None = Field(default=None, description="How long the file plays.")
    size_bytes: int | None = None
    failure: str | None = Field(
        default=None, description="Why it failed, or ended early (partial), when it did."
    )


class DownloadLink(BaseModel):
    url: str = Field(description="Works without credentials until it expires; do not log it.")
    expires_at: AwareDatetime


COLUMNS = "recording_id, room_id, status, started_at, stopped_at, duration_s, size_bytes, failure"


def _view(row: Any) -> RecordingView:
    return RecordingView.model_validate(dict(row))


@router.get(
    "",
    summary="The clinic's recordings, newest first",
    responses=CLINIC_KEY_PROBLEMS | problems(400),
)
async def list_recordings(
    ctx: Context,
    clinic_id: ClinicId,
    room_id: UUID | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[RecordingView]:
    after = decode_cursor(cursor, 2)
    rows = await ctx.pool.fetch(
        f"SELECT {COLUMNS} FROM recordings WHERE clinic_id = $1 "
        "AND ($2::uuid IS NULL OR room_id = $2) "
        "AND ($3::timestamptz IS NULL OR (started_at, recording_id) < ($3, $4::uuid)) "
        "ORDER BY started_at DESC, recording_id DESC LIMIT $5",
        clinic_id,
        room_id,
        *time_and_id(after),
        limit + 1,
    )
    items = [_view(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = items[-1] if items else None
    return Page(
        items=items,
        next_cursor=encode_cursor(last.started_at.isoformat(), last.recording_id)
        if more and last
        else None,
    )


@router.get(
    "/{recording_id}", summary="One recording", responses=CLINIC_KEY_PROBLEMS | problems(404)
)
async def get_recording(ctx: Context, clinic_id: ClinicId, recording_id: UUID) -> RecordingView:
    row = await ctx.pool.fetchrow(
        f"SELECT {COLUMNS} FROM recordings WHERE clinic_id = $1 AND recording_id = $2",
        clinic_id,
        recording_id,
    )
    if row is None:
        raise Problem(404, NOT_FOUND, code="recording_not_found")
    return _view(row)


@router.post(
    "/{recording_id}/download",
    summary="A signed URL that downloads the MP4",
    dependencies=[NO_STORE],
    responses=CLINIC_KEY_PROBLEMS
    | problems(
        404,
        described={
            409: "The recording is still under way.",
            410: "The recording failed and has no file.",
        },
    ),
)
async def download_link(
    ctx: Context, media: MediaDep, clinic_id: ClinicId, recording_id: UUID
) -> DownloadLink:
    row = await ctx.pool.fetchrow(
        "SELECT status, media_url FROM recordings WHERE clinic_id = $1 AND recording_id = $2",
        clinic_id,
        recording_id,
    )
    if row is None:
        raise Problem(404, NOT_FOUND, code="recording_not_found")
    if row["status"] == "recording":
        raise Problem(
            409, "This recording is still under way; stop it first.", code="still_recording"
        )
    if row["status"] == "failed":
        raise Problem(410, "This recording failed and has no file.", code="recording_failed")
    expires = int(time.time()) + media.settings.download_ttl_s
    signature = recordings.sign(media.download_key, recording_id, expires)
    base = str(row["media_url"]).rstrip("/")
    return DownloadLink(
        url=f"{base}/v1/recordings/{recording_id}/file?expires={expires}&signature={signature}",
        expires_at=datetime.fromtimestamp(expires, UTC),
    )


@router.get(
    "/{recording_id}/file",
    summary="The MP4 itself, through a signed URL (no API key)",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
        **problems(
            404,
            503,
            described={
                403: "The signature is not valid for this recording.",
                410: "The download link has expired; ask for a new one.",
            },
        ),
    },
)
async def download(
    ctx: Context,
    media: MediaDep,
    recording_id: UUID,
    expires: int,
    signature: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    try:
        recordings.check(media.download_key, recording_id, expires, signature)
    except recordings.BadSignature as exc:
        if exc.expired:
            raise Problem(
                410, "This download link has expired; ask for a new one.", code="link_expired"
            ) from exc
        raise Problem(403, "This download link is not valid.", code="bad_signature") from exc
    row = await ctx.pool.fetchrow(
        "SELECT clinic_id FROM recordings WHERE recording_id = $1 "
        "AND status IN ('available', 'partial')",
        recording_id,
    )
    if row is None:
        raise Problem(404, NOT_FOUND, code="recording_not_found")
    path = media.recordings.path_of(row["clinic_id"], recording_id)
    if not path.is_file():
        raise Problem(
            404,
            "The file of this recording is not on this video server.",
            code="file_not_here",
        )
    return FileResponse(
        path,
        media_type="video/mp4",
        filename=f"recording-{recording_id}.mp4",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
