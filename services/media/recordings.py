"""Recordings on one media node: started and stopped on a host's word (through signaling),
written by a :class:`Recorder` in a child process, announced when the file is complete.

A recording's row (table ``recordings``) says where it is and how it ended; its events
(``RecordingAvailable``, ``RecordingFailed``) go to the stream ``recording-<id>``. A recorder
that dies before it is stopped (killed, crashed, or its node restarted) leaves a file that
plays up to its last fragment: the recording is then ``partial``, with the duration measured
from the file, or ``failed`` if nothing in it plays. The file
is ``<recordings_dir>/<clinic_id>/<recording_id>.mp4`` and is downloaded through a URL signed
with a key derived from the participant key, valid for ``download_ttl_s``.
"""

import asyncio
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from uuid import UUID

import asyncpg
import structlog

from contracts.media import (
    RecordingAction,
    RecordingAvailable,
    RecordingCommand,
    RecordingFailed,
    RecordingReply,
    recording_stream,
)
from runtime.clock import Clock
from runtime.context import ServiceContext
from services.media.config import MediaSettings
from services.media.journal import Journal
from services.media.recorder import (
    Recorder,
    RecordingError,
    RecordingOutcome,
    playable_duration,
)
from services.media.sfu import Sfu

log = structlog.get_logger(__name__)
DOWNLOAD_KEY_LABEL = b"antechamber recording download v1"


@dataclass(frozen=True)
class Recorded:
    """A recording as its row and its events name it."""

    recording_id: UUID
    clinic_id: str
    room_id: UUID
    started_at: datetime


@dataclass(eq=False)
class Active:
    recording_id: UUID
    clinic_id: str
    room_id: UUID
    recorder: Recorder
    started_at: datetime
    watcher: "asyncio.Task[None] | None" = None
    """Finishes the recording if its recorder dies before it is stopped."""

    @property
    def recorded(self) -> Recorded:
        return Recorded(self.recording_id, self.clinic_id, self.room_id, self.started_at)


def private_folder(root: Path, folder: Path) -> None:
    """``folder`` (a clinic's, in ``root``) made or kept 0700: recordings are the clinic's.
    ``root`` is made 0700 if it does not exist; one that does (an operator's volume) is left."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)  # made 0755 by an earlier release


@dataclass
class Recordings:
    settings: MediaSettings
    sfu: Sfu
    journal: Journal
    clock: Clock
    active: dict[UUID, Active] = field(default_factory=dict)
    """By room: at most one recording per room."""
    _finishing: set["asyncio.Task[None]"] = field(default_factory=set)

    def path_of(self, clinic_id: str, recording_id: UUID) -> Path:
        return self.settings.recordings_dir / clinic_id / f"{recording_id}.mp4"

    async def command(self, ctx: ServiceContext, command: RecordingCommand) -> RecordingReply:
        """Start or stop; both are idempotent for the same recording id."""
        current = self.active.get(command.room_id)
        if command.action is RecordingAction.stop:
            if current is not None and current.recording_id == command.recording_id:
                self.stop(ctx, command.room_id)
            return RecordingReply(ok=True)
        if current is not None:
            if current.recording_id == command.recording_id:
                return RecordingReply(ok=True)
            return RecordingReply(
                ok=False, reason="already_recording", message="This call is already recorded."
            )
        if self.settings.forwarding != "packets":
            return RecordingReply(
                ok=False,
                reason="recording_unavailable",
                message="This video server does not record calls.",
            )
        path = self.path_of(command.clinic_id, command.recording_id)
        recorder = Recorder(
            path,
            width=self.settings.recording_width,
            height=self.settings.recording_height,
            fps=self.settings.recording_fps,
            want_keyframe=partial(self.sfu.keyframe_for_recording, command.room_id),
        )
        try:
            private_folder(self.settings.recordings_dir, path.parent)
            recorder.start()
        except (OSError, RecordingError) as exc:
            log.error(
                "recording not started", recording_id=str(command.recording_id), error=repr(exc)
            )
            return RecordingReply(
                ok=False,
                reason="recording_unavailable",
                message="The recording could not be started on this video server.",
            )
        now = self.clock()
        await ctx.pool.execute(
            "INSERT INTO recordings (recording_id, clinic_id, room_id, node_id, media_url, "
            "status, started_at) VALUES ($1, $2, $3, $4, $5, 'recording', $6) "
            "ON CONFLICT (recording_id) DO NOTHING",
            command.recording_id,
            command.clinic_id,
            command.room_id,
            self.settings.node_id,
            self.settings.public_url,
            now,
        )
        active = Active(command.recording_id, command.clinic_id, command.room_id, recorder, now)
        self.active[command.room_id] = active
        active.watcher = asyncio.create_task(self._watch(ctx, active), name="recording-watch")
        self.sfu.start_recording(command.room_id, command.clinic_id, recorder)
        log.info("recording started", recording_id=str(command.recording_id))
        return RecordingReply(ok=True)

    def stop(self, ctx: ServiceContext, room_id: UUID) -> None:
        """Stop the room's recording (if any); the file is finished in the background."""
        active = self.active.pop(room_id, None)
        if active is None:
            return
        if active.watcher is not None and active.watcher is not asyncio.current_task():
            active.watcher.cancel()
        self.sfu.stop_recording(room_id)
        task = asyncio.create_task(self._finish(ctx, active), name="recording-finish")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def stop_all(self, ctx: ServiceContext) -> None:
        """The node stops: every recording is finished, then waited for."""
        for room_id in list(self.active):
            self.stop(ctx, room_id)
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def _watch(self, ctx: ServiceContext, active: Active) -> None:
        exit_code = await active.recorder.ended()
        if self.active.get(active.room_id) is active:
            log.warning("recorder died", recording_id=str(active.recording_id), exit_code=exit_code)
            self.stop(ctx, active.room_id)  # what it wrote is kept: partial

    async def recover(self, ctx: ServiceContext) -> None:
        """At start: recordings this node left under way in an earlier life (it was killed
        or crashed) are finished as partial, or failed if nothing in their file plays.

        If that cannot be done now (the database is away), it is logged and left for the next
        start: the calls this node is about to carry come first."""
        try:
            await self._recover(ctx)
        except (OSError, asyncpg.PostgresError):
            log.exception("recordings of an earlier life not finished; the next start retries")

    async def _recover(self, ctx: ServiceContext) -> None:
        booted = self.clock()
        rows = await ctx.pool.fetch(
            "SELECT recording_id, clinic_id, room_id, started_at FROM recordings "
            "WHERE node_id = $1 AND status = 'recording' AND started_at < $2",
            self.settings.node_id,
            booted,
        )
        for row in rows:
            if any(a.recording_id == row["recording_id"] for a in self.active.values()):
                continue  # started in this life, while we read
            recorded = Recorded(
                row["recording_id"], row["clinic_id"], row["room_id"], row["started_at"]
            )
            path = self.path_of(recorded.clinic_id, recorded.recording_id)
            duration_s = await asyncio.to_thread(playable_duration, path)
            reason = "The video server stopped during the recording."
            if duration_s <= 0:
                await self._failed(ctx, recorded, booted, f"{reason} Nothing of it plays.")
                continue
            outcome = RecordingOutcome(
                path=path,
                duration_s=duration_s,
                size_bytes=path.stat().st_size,
                decode_errors=0,
                dropped=0,
                partial=True,
                failure=reason,
            )
            # When the file ends is the best word on when it stopped.
            stopped = recorded.started_at + timedelta(seconds=duration_s)
            await self._available(ctx, recorded, stopped, outcome)
            log.warning(
                "recording left partial by an earlier life",
                recording_id=str(row["recording_id"]),
                duration_s=round(duration_s, 1),
            )

    async def _finish(self, ctx: ServiceContext, active: Active) -> None:
        stopped = self.clock()
        try:
            outcome = await active.recorder.stop()
        except RecordingError as exc:
            log.error("recording failed", recording_id=str(active.recording_id), error=str(exc))
            await self._failed(ctx, active.recorded, stopped, str(exc))
            return
        except Exception as exc:
            log.exception("recording failed", recording_id=str(active.recording_id))
            reason = f"the recording could not be written ({exc})"
            await self._failed(ctx, active.recorded, stopped, reason)
            return
        await self._available(ctx, active.recorded, stopped, outcome)

    async def _available(
        self, ctx: ServiceContext, recorded: Recorded, stopped: datetime, outcome: RecordingOutcome
    ) -> None:
        await ctx.pool.execute(
            "UPDATE recordings SET status = $5, stopped_at = $2, duration_s = $3, "
            "size_bytes = $4, failure = $6 WHERE recording_id = $1",
            recorded.recording_id,
            stopped,
            outcome.duration_s,
            outcome.size_bytes,
            "partial" if outcome.partial else "available",
            outcome.failure,
        )
        event = RecordingAvailable(
            recording_id=recorded.recording_id,
            room_id=recorded.room_id,
            node_id=self.settings.node_id,
            duration_s=outcome.duration_s,
            size_bytes=outcome.size_bytes,
            started_at=recorded.started_at,
            stopped_at=stopped,
            partial=outcome.partial,
            reason=outcome.failure,
        )
        self.journal.record(recording_stream(recorded.recording_id), recorded.clinic_id, event)
        log.info(
            "recording partial" if outcome.partial else "recording available",
            recording_id=str(recorded.recording_id),
            duration_s=round(outcome.duration_s, 1),
            decode_errors=outcome.decode_errors,
            dropped=outcome.dropped,
        )

    async def _failed(
        self, ctx: ServiceContext, recorded: Recorded, stopped: datetime, reason: str
    ) -> None:
        with contextlib.suppress(Exception):
            await ctx.pool.execute(
                "UPDATE recordings SET status = 'failed', stopped_at = $2, failure = $3 "
                "WHERE recording_id = $1",
                recorded.recording_id,
                stopped,
                reason,
            )
        event = RecordingFailed(
            recording_id=recorded.recording_id,
            room_id=recorded.room_id,
            node_id=self.settings.node_id,
            reason=reason,
        )
        self.journal.record(recording_stream(recorded.recording_id), recorded.clinic_id, event)


# -- signed download URLs ---------------------------------------------------------------------


def download_key(participant_key: str) -> bytes:
    """The URL-signing key: derived, so a leaked URL key is not a token-signing key."""
    return hmac.new(participant_key.encode(), DOWNLOAD_KEY_LABEL, hashlib.sha256).digest()


def sign(key: bytes, recording_id: UUID, expires: int) -> str:
    message = f"{recording_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class BadSignature(Exception):
    def __init__(self, expired: bool) -> None:
        self.expired = expired


def check(key: bytes, recording_id: UUID, expires: int, signature: str) -> None:
    """Raise :class:`BadSignature` unless the URL was signed by us and has not expired."""
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not False).
    expected = sign(key, recording_id, expires).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
        raise BadSignature(expired=False)
    if expires < time.time():
        raise BadSignature(expired=True)
