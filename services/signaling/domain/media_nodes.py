"""The call's seats on media nodes: seats that lapsed, nodes that died, the call moved to
another node."""

from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    LeftBecause,
    MediaMoved,
    RecordingStopped,
    RecordingStoppedBecause,
    ScreenShareStoppedBecause,
)
from services.signaling.domain.folding import evolve
from services.signaling.domain.leaving import leave
from services.signaling.domain.room import Room, event_ids
from services.signaling.domain.screen_share import share_ends


def seat_lapsed(room: Room, participant_ids: list[UUID], now: datetime) -> list[Event]:
    """The media node no longer holds a seat for these people in the call (their media never
    connected and the reservation lapsed): their places end, so the call and the seats agree."""
    events: list[Event] = []
    for participant_id in participant_ids:
        person = room.people.get(participant_id)
        if person is None or person.waiting:
            continue
        left = leave(room, participant_id, LeftBecause.seat_lapsed, now)
        for event in left:
            room = evolve(room, event)
        events += left
    return events


def on_dead_nodes(room: Room, live: set[str]) -> set[str]:
    """The media nodes people in the call hold seats on that are not among ``live``."""
    return {p.media_node for p in room.in_call() if p.media_node and p.media_node not in live}


def move_media(room: Room, from_node: str, media_node: str, media_url: str | None) -> list[Event]:
    """The call's node ``from_node`` died and the media service placed the room on
    ``media_node``: everyone in the call on the dead node moves there, keeping their place.
    Nothing when nobody is on ``from_node`` any more (another replica moved them first)."""
    moved = [p.participant_id for p in room.in_call() if p.media_node == from_node]
    if not moved or media_node == from_node:
        return []
    events: list[Event] = [
        MediaMoved(
            **event_ids(room),
            from_node=from_node,
            media_node=media_node,
            media_url=media_url,
            participant_ids=moved,
        )
    ]
    if room.screen_share is not None and room.screen_share_node == from_node:
        events += share_ends(room, room.screen_share, ScreenShareStoppedBecause.media_node_lost)
    if room.recording is not None and room.recording_node == from_node:
        events.append(
            RecordingStopped(
                **event_ids(room),
                recording_id=room.recording,
                media_node=from_node,
                because=RecordingStoppedBecause.media_node_lost,
            )
        )
    return events
