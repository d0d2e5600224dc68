"""Which voices a room forwards: the loudest few, read from RFC 6464 audio levels.

Sixteen people rarely speak at once, and forwarding everyone's audio to everyone costs the
node more than all the video. Each audio packet carries the speaker's level (0 loudest, 127
silence, in -dBov) and a voice-activity bit; the room forwards the ``limit`` loudest of those
speaking, and every host who speaks, and nobody who is silent. A speaker keeps the floor
while speaking: they are displaced only by one louder by ``MARGIN_DB`` (smoothed), never cut
mid-word by a cough or a burst of someone else's gain control: a newcomer takes a free slot
at once, but displaces someone still speaking only after being ahead for ``SWITCH_S``.
They lose the floor ``HOLD_S`` after they stop.
"""

from collections.abc import Callable
from dataclasses import dataclass

HOLD_S = 0.6
"""How long after the last voiced packet a person still counts as speaking."""
MARGIN_DB = 6.0
"""How much louder a newcomer must be to displace someone who has the floor."""
SWITCH_S = 0.5
"""How long a newcomer must stay ahead (by the margin) to displace someone still speaking."""
DECIDE_EVERY_S = 0.1
SPEECH_LEVEL = 80
"""A level at or below this (-dBov) counts as voice when the sender sets no activity bit."""
SMOOTHING = 0.1
"""Weight of each packet's loudness in the running average (about the last 200 ms)."""


@dataclass(eq=False, slots=True)
class Voice:
    """One published audio track, as the selection sees it."""

    host: bool
    on_change: Callable[[bool], None]
    """Told when the track starts or stops being forwarded."""
    loudness: float = 0.0
    """Smoothed ``127 - level``: higher is louder."""
    last_voiced: float = -1e9
    forwarded: bool = False
    ahead_since: float | None = None
    """Since when this (not forwarded) voice ranks among the loudest."""


class LoudestSpeakers:
    """The forwarding decision of one room's audio; ``limit`` 0 forwards everyone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.voices: list[Voice] = []
        self._next_decision = 0.0

    def join(self, voice: Voice) -> None:
        self.voices.append(voice)
        self._set(voice, self.limit == 0)

    def resize(self, limit: int, now: float) -> None:
        """Forward the ``limit`` loudest from now on (0: everyone)."""
        self.limit = limit
        if limit == 0:
            for voice in self.voices:
                self._set(voice, True)
        else:
            self.decide(now)

    def leave(self, voice: Voice) -> None:
        if voice in self.voices:
            self.voices.remove(voice)

    def heard(self, voice: Voice, activity: bool, level: int, now: float) -> None:
        """One packet's level (runs for every audio packet: keep it short)."""
        voice.loudness += SMOOTHING * ((127 - level) - voice.loudness)
        if activity or level <= SPEECH_LEVEL:
            voice.last_voiced = now
            if not voice.forwarded and self.limit:
                self._next_decision = now  # a new speaker is decided on at once
        if now >= self._next_decision:
            self._next_decision = now + DECIDE_EVERY_S
            self.decide(now)

    def decide(self, now: float) -> None:
        if self.limit == 0:
            return
        speaking = [v for v in self.voices if now - v.last_voiced < HOLD_S]
        hosts = {v for v in speaking if v.host}
        others = [v for v in speaking if not v.host]
        others.sort(key=lambda v: v.loudness + (MARGIN_DB if v.forwarded else 0.0), reverse=True)
        top = others[: self.limit]
        for voice in self.voices:
            if voice.forwarded or voice not in top:
                voice.ahead_since = None
            elif voice.ahead_since is None:
                voice.ahead_since = now
        kept = [v for v in others if v.forwarded][: self.limit]  # still speaking, quietest last
        chosen = hosts | set(kept)
        free = self.limit - len(kept)
        for challenger in (v for v in top if not v.forwarded):
            if free > 0:
                free -= 1
            elif challenger.ahead_since is not None and now - challenger.ahead_since >= SWITCH_S:
                chosen.discard(kept.pop())
            else:
                continue
            chosen.add(challenger)
        for voice in self.voices:
            self._set(voice, voice in chosen)

    def _set(self, voice: Voice, forwarded: bool) -> None:
        if voice.forwarded != forwarded:
            voice.forwarded = forwarded
            voice.on_change(forwarded)
