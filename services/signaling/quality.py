"""Network quality, from the media node that holds a room to the people of it connected here:
a host sees everyone in the call, a guest only themselves."""

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.media import RoomQuality
from contracts.signaling import CallRole
from contracts.signaling_protocol import Quality
from services.signaling.connection import Connection

log = structlog.get_logger(__name__)


def relay_quality(conn: Connection, msg: Msg) -> None:
    """One :class:`RoomQuality` from the node, as this person may see it."""
    try:
        report = RoomQuality.model_validate_json(msg.data)
    except ValidationError:
        log.warning("a media node sent a quality report that cannot be read")
        return
    if report.room_id != conn.room_id:
        return
    shown = (
        report.participants
        if conn.role is CallRole.host
        else [p for p in report.participants if p.participant_id == conn.participant_id]
    )
    if shown:
        conn.send_once("quality", Quality(participants=shown))
