"""Participants as processes (``python -m antechamber.peer``), for media tests and benchmarks.

    async with peer_process(config) as peer:
        await peer.wait_for("ready")
        await peer.wait_for(lambda e: e["event"] == "first_frame" and e["kind"] == "video")
        report = await peer.stop()

A plain helper rather than a fixture, so bench scripts can use it too. Every failure is a
:class:`PeerFailed` (an ``AssertionError``) that carries the peer's last events and stderr.
"""

import asyncio
import contextlib
import json
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from contracts.signaling import CallRole
from runtime.participant_tokens import mint

REPO = Path(__file__).resolve().parents[2]
STDERR_LINES = 200

Event = dict[str, Any]
Match = str | Callable[[Event], bool]
"""An event name, or a predicate on the event."""


class PeerFailed(AssertionError):
    """A peer did not do what a test waited for."""


class PeerProcess:
    """One running peer: the events it printed so far, and ways to wait for more."""

    def __init__(self, config: dict[str, Any], process: asyncio.subprocess.Process) -> None:
        self.config = config
        self.process = process
        self.events: list[Event] = []
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._changed = asyncio.Condition()
        self._stdout_closed = False
        self._stdout_reader = asyncio.create_task(self._read_stdout())
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def find(self, match: Match) -> Event | None:
        """The first event so far that matches."""
        test = _predicate(match)
        return next((event for event in self.events if test(event)), None)

    async def wait_for(self, match: Match, timeout: float = 10.0) -> Event:
        """The first event that matches, printed already or within ``timeout`` seconds."""

        async def matched() -> Event | None:
            async with self._changed:
                while (event := self.find(match)) is None and not self._stdout_closed:
                    await self._changed.wait()
                return event

        try:
            event = await asyncio.wait_for(matched(), timeout)
        except TimeoutError:
            raise PeerFailed(await self.explain(f"no {_name(match)} within {timeout}s")) from None
        if event is None:
            raise PeerFailed(await self.explain(f"exited before any {_name(match)}"))
        return event

    @property
    def stderr(self) -> str:
        """The last lines the peer wrote to stderr (its log)."""
        return "\n".join(self._stderr)

    def latest_stats(self) -> Event | None:
        """The latest ``stats`` (or the final ``done``) report, if any yet."""
        return next((e for e in reversed(self.events) if e.get("event") in ("stats", "done")), None)

    async def exited(self, timeout: float = 10.0) -> int:
        """Wait for the peer to end on its own; its exit code."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise PeerFailed(await self.explain(f"still running after {timeout}s")) from None
        await self._drain()
        return code

    async def stop(self, timeout: float = 15.0) -> Event:
        """SIGTERM, as a person closing the tab: wait for the peer to leave; its ``done``."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await self.exited(timeout)
        done = self.find("done")
        if done is None or code != 0:
            raise PeerFailed(await self.explain(f"stopped with exit code {code}, no done report"))
        return done

    async def move(self, node_id: str, participant_token: str) -> int:
        """Order a peer started with ``follow_moves`` to join ``node_id`` on a new peer
        connection (as a browser follows a fresh ``admitted``); the index of its next event,
        the first that can be the new connection's."""
        assert self.process.stdin is not None, "started without a way to order it"
        order = {"node_id": node_id, "participant_token": participant_token}
        start = len(self.events)
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()
        return start

    def kill(self) -> None:
        """SIGKILL: the peer vanishes without a word (no bye, no report)."""
        if self.process.returncode is None:
            self.process.kill()

    async def explain(self, what: str) -> str:
        """``what`` went wrong, with what the peer said: for assertion messages."""
        if self.process.returncode is not None:
            await self._drain()
        config = {k: v for k, v in self.config.items() if k != "participant_token"}
        recent = "\n".join(json.dumps(event) for event in self.events[-8:])
        stderr = "\n".join(self._stderr) or "(empty)"
        return (
            f"peer {config.get('participant_id')}: {what}\n"
            f"exit code: {self.process.returncode}\nconfig: {json.dumps(config, default=str)}\n"
            f"last events:\n{recent or '(none)'}\nstderr:\n{stderr}"
        )

    async def _drain(self) -> None:
        """Let the readers take in the last of a finished process's output."""
        await asyncio.wait({self._stdout_reader, self._stderr_reader}, timeout=2.0)

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    self._stderr.append(f"(stdout) {line}")
                    continue
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._stdout_closed = True
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._stderr.append(raw.decode(errors="replace").rstrip())

    async def _terminate(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._drain()
        for reader in (self._stdout_reader, self._stderr_reader):
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def participant_token(
    key: str,
    *,
    clinic_id: str,
    room_id: UUID,
    node_id: str,
    participant_id: UUID,
    ttl_s: float = 120,
    now: float | None = None,
) -> str:
    """A participant token as signaling mints it (a guest's)."""
    token, _ = mint(
        key,
        participant_id=str(participant_id),
        room_id=str(room_id),
        clinic_id=clinic_id,
        role=CallRole.guest,
        node_id=node_id,
        ttl_s=ttl_s,
        now=now,
    )
    return token


def participant_config(
    key: str,
    *,
    nats_url: str,
    clinic_id: str,
    room_id: UUID,
    node_id: str,
    participant_id: UUID,
    ttl_s: float = 120,
    **extra: Any,
) -> dict[str, Any]:
    """A peer's configuration for one seated participant, with its token."""
    token = participant_token(
        key,
        clinic_id=clinic_id,
        room_id=room_id,
        node_id=node_id,
        participant_id=participant_id,
        ttl_s=ttl_s,
    )
    return {
        "nats_url": nats_url,
        "node_id": node_id,
        "room_id": str(room_id),
        "participant_id": str(participant_id),
        "participant_token": token,
    } | extra


@contextlib.asynccontextmanager
async def peer_process(config: dict[str, Any]) -> AsyncIterator[PeerProcess]:
    """A peer started with ``config`` (see ``antechamber/peer.py``), ended on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "antechamber.peer",
        json.dumps(config, default=str),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    peer = PeerProcess(config, process)
    try:
        yield peer
    finally:
        await peer._terminate()


def _predicate(match: Match) -> Callable[[Event], bool]:
    if isinstance(match, str):
        return lambda event: event.get("event") == match
    return match


def _name(match: Match) -> str:
    return f"{match!r} event" if isinstance(match, str) else "matching event"
