"""Settings of the signaling service, read from the environment (``ANTECHAMBER_SIGNALING_*``)."""

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SignalingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_SIGNALING_", extra="ignore")

    replica_id: str = Field(
        default_factory=lambda: f"s{secrets.token_hex(4)}",
        description="Names this replica (a NATS subject token); random per process by default.",
    )
    join_timeout_s: float = Field(default=10.0, gt=0, description="Time to send the join.")
    max_frame_bytes: int = Field(default=65_536, ge=1024, description="Larger frames: error.")
    frames_per_second: float = Field(default=20.0, gt=0, description="Per connection.")
    frame_burst: int = Field(default=60, ge=1)
    strikes: int = Field(
        default=5, ge=1, description="Bad frames on one connection before it is closed (1008)."
    )
    media_states_per_minute: float = Field(
        default=60.0,
        gt=0,
        description="media_state frames one person may send (each change is an event).",
    )
    media_state_burst: int = Field(default=10, ge=1)
    knocks_per_address_per_minute: float = Field(default=20.0, gt=0)
    knocks_per_address_burst: int = Field(default=20, ge=1)
    knocks_per_link_per_minute: float = Field(default=60.0, gt=0)
    knocks_per_link_burst: int = Field(default=60, ge=1)
    network_tests_per_address_per_minute: float = Field(
        default=6.0, gt=0, description="Pre-call network tests one address may start."
    )
    network_tests_per_address_burst: int = Field(default=3, ge=1)
    network_test_duration_s: float = Field(
        default=8.0, ge=2, le=10, description="How long a browser measures a network test."
    )
    network_test_window_s: float = Field(
        default=15.0,
        ge=5,
        le=60,
        description="A network test's token lets its offer in for this long after it starts.",
    )
    token_ttl_s: float = Field(
        default=120.0, ge=5, description="Lifetime of a participant token (to connect media)."
    )
    sweep_s: float = Field(default=1.0, gt=0, description="How often lapsed places are swept.")
    page_gone_grace_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a place is kept for a browser that closed its socket as its page went "
            "away (1001 Going Away: a reload, or a closed tab), when that is less than the "
            "clinic's rejoin grace: long enough for a reload to take it back, short enough "
            "that a closed tab does not hold a seat for minutes."
        ),
    )
    replica_timeout_s: float = Field(
        default=10.0, gt=0, description="A replica silent this long has lost its connections."
    )
    recording_consent_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a request to record waits for everyone in the call to answer "
        "(clinic policy all) before it lapses and the hosts are told.",
    )
    rpc_wait_s: float = Field(default=3.0, gt=0, description="Wait for links and media answers.")
    room_linger_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "How long a replica keeps a room current after the last of its people there left: "
            "a knock within that time decides on it without reading the room's events."
        ),
    )
    chat_per_minute: float = Field(
        default=60.0, gt=0, description="Chat messages one person may send a minute, sustained."
    )
    chat_burst: int = Field(
        default=5, ge=1, description="Chat messages one person may send at once."
    )
    chat_purge_s: float = Field(
        default=60.0,
        gt=0,
        description="How often kept chat past its retention is deleted (one indexed DELETE).",
    )
