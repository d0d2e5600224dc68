"""Settings of one media node, read from the environment."""

import secrets
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.ids import SUBJECT_PART


def new_node_id() -> str:
    """A short id for this process: ``m`` and 8 hex digits, one NATS subject token."""
    return f"m{secrets.token_hex(4)}"


class IceServer(BaseModel):
    """A STUN or TURN server, as in a browser's ``RTCIceServer``."""

    urls: list[str] = Field(min_length=1, examples=[["turn:turn.example.org:3478"]])
    username: str | None = None
    credential: str | None = None


class MediaSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_MEDIA_*``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_MEDIA_", extra="ignore")

    node_id: str = Field(
        default_factory=new_node_id,
        pattern=SUBJECT_PART,
        description="This node's name in the cluster and in its subjects; random per process.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8104", description="Where browsers reach this node's media."
    )
    max_rooms: int = Field(default=50, ge=1, description="Rooms this node hosts at most.")
    reservation_s: float = Field(
        default=30.0, gt=0, description="A granted seat lapses unless a media connection claims it."
    )
    heartbeat_s: float = Field(default=2.0, gt=0, description="How often the node says it lives.")
    node_ttl_s: float = Field(
        default=6.0, gt=0, description="A node not heard from for this long is dead."
    )
    forward_wait_s: float = Field(
        default=1.0, gt=0, description="How long to wait for the node that owns a room."
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description=(
            "STUN/TURN servers for the node's own candidates, as JSON: "
            '[{"urls": ["stun:stun.example.org:3478"]}, {"urls": ["turn:turn.example.org"], '
            '"username": "u", "credential": "p"}].'
        ),
    )
    udp_port_min: int | None = Field(
        default=None, ge=1024, le=65535, description="First UDP port for media (with _max)."
    )
    udp_port_max: int | None = Field(
        default=None, ge=1024, le=65535, description="Last UDP port for media (inclusive)."
    )
    ice_addresses: list[str] = Field(
        default_factory=list,
        description="Local addresses to gather host candidates on; empty: every interface.",
    )
    keyframe_interval_s: float = Field(
        default=0.5, gt=0, description="At most one keyframe request per track this often."
    )
    max_publish_kbps: int = Field(
        default=2500, ge=64, description="What one participant may send (audio and video)."
    )
    over_bitrate_s: float = Field(
        default=5.0, gt=0, description="A participant sending twice the limit this long is cut."
    )
    silence_timeout_s: float = Field(
        default=15.0, gt=0, description="A publisher that sends nothing this long has gone."
    )
    connect_timeout_s: float = Field(
        default=20.0, gt=0, description="A media connection not up by then is closed."
    )
    forwarding: Literal["packets", "transcode"] = Field(
        default="packets",
        description="packets forwards RTP; transcode decodes and re-encodes (aiortc's "
        "MediaRelay): for the benchmark's comparison only, it does not record.",
    )
    loudest_speakers: int = Field(
        default=3,
        ge=0,
        le=16,
        description="Voices forwarded at once: the loudest this many speakers, and every "
        "host who speaks; 0 forwards every voice.",
    )
    report_interval_s: float = Field(
        default=1.0, gt=0, description="How often sender and receiver reports go out."
    )
    quality_interval_s: float = Field(
        default=3.0,
        ge=0.5,
        description="How often each room's network quality is measured and told to signaling.",
    )
    max_forward_kbps: int = Field(
        default=1500,
        ge=64,
        description="The most a publisher's video is asked to send (REMB), whatever its "
        "subscribers could take.",
    )
    network_test_max_s: float = Field(
        default=12.0,
        gt=0,
        le=30,
        description="A pre-call network test's connection is closed after this long at most.",
    )
    network_tests_at_once: int = Field(
        default=2,
        ge=0,
        description="Network tests this node runs at once (0: none); each decodes and encodes "
        "the video it echoes (about as much CPU as a transcoded participant).",
    )
    network_tests_per_address_per_minute: float = Field(default=6.0, gt=0)
    network_tests_per_address_burst: int = Field(default=3, ge=1)
    recordings_dir: Path = Field(
        default=Path("recordings"), description="Where recordings are written (one MP4 each)."
    )
    recording_width: int = Field(default=1280, ge=160, le=3840)
    recording_height: int = Field(default=720, ge=120, le=2160)
    recording_fps: int = Field(default=15, ge=1, le=60)
    download_ttl_s: int = Field(
        default=900, ge=10, le=86400, description="How long a recording's download URL works."
    )

    @model_validator(mode="after")
    def _port_range(self) -> Self:
        if (self.udp_port_min is None) != (self.udp_port_max is None):
            raise ValueError("set both ANTECHAMBER_MEDIA_UDP_PORT_MIN and _MAX, or neither")
        if (
            self.udp_port_min is not None
            and self.udp_port_max is not None
            and self.udp_port_min > self.udp_port_max
        ):
            raise ValueError("ANTECHAMBER_MEDIA_UDP_PORT_MIN is above _MAX")
        return self
