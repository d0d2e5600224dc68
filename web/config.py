"""Settings of the web client, read from the environment."""

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8100


class WebSettings(BaseSettings):
    """Env vars ``ANTECHAMBER_WEB_*``."""

    model_config = SettingsConfigDict(env_prefix="ANTECHAMBER_WEB_", extra="ignore")

    signaling_url: str = Field(
        default="ws://127.0.0.1:8103/v1/signaling",
        description="The signaling WebSocket as browsers reach it (ws:// or wss://).",
    )
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="STUN/TURN servers for browsers, as RTCIceServer objects (JSON), e.g. "
        '[{"urls": ["turn:turn.example.org:3478"], "username": "…", "credential": "…"}].',
    )
    demo_file: Path | None = Field(
        default=None,
        description="The demo clinic (demo.json of `antechamber up`): serves the demo console "
        "at /demo. Never set it in production: the console holds the clinic's API key.",
    )
    scheduling_url: str = Field(
        default="http://127.0.0.1:8101", description="Scheduling's API (demo console only)."
    )
    links_url: str = Field(
        default="http://127.0.0.1:8102", description="Links' API (demo console only)."
    )
    mail_url: str | None = Field(
        default=None, description="The local mail sink's page (demo console only)."
    )

    @field_validator("signaling_url")
    @classmethod
    def _websocket(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(
                "give a ws:// or wss:// URL, e.g. wss://video.example.org/v1/signaling"
            )
        return value

    @property
    def signaling_origin(self) -> str:
        parts = urlsplit(self.signaling_url)
        return f"{parts.scheme}://{parts.netloc}"

    def browser_config(self) -> str:
        """What the pages need to know, as the JSON they read from a meta tag."""
        return json.dumps(
            {"signaling_url": self.signaling_url, "ice_servers": self.ice_servers},
            separators=(",", ":"),
        )
