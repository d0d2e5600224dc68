"""A demo clinic for ``antechamber up``: created through the public API on first start.

What was created (and the clinic's API key) is kept in ``<data-dir>/demo.json``, so a
restart shows the same clinic instead of adding another.
"""

import json
import secrets
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.sealing import new_key


class ApiError(RuntimeError):
    pass


def _call(url: str, method: str, key: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ApiError(f"{method} {url}: {exc.code} {detail}") from exc


def operator_key(data_dir: Path) -> Path:
    """The operator key's file, created with a new random key on first use."""
    path = data_dir / "operator-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path


def link_key_file(data_dir: Path) -> Path:
    """The key that seals join links between services, created on first use."""
    return key_file(data_dir, "link-key")


def participant_key_file(data_dir: Path) -> Path:
    """The key that signs participant tokens (signaling mints, media checks)."""
    return key_file(data_dir, "participant-key")


def key_file(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.exists():
        path.write_text(new_key())
        path.chmod(0o600)
    return path


def seed(scheduling: str, operator: str, data_dir: Path) -> dict[str, Any]:
    saved = data_dir / "demo.json"
    if saved.exists():
        demo: dict[str, Any] = json.loads(saved.read_text())
        try:
            _call(f"{scheduling}/v1/clinic", "GET", demo["api_key"])
            return demo
        except (ApiError, KeyError):
            pass  # the database was reset: create it again
    clinic = _call(
        f"{scheduling}/v1/clinics",
        "POST",
        operator,
        {
            "name": "Demo Clinic",
            "slug": f"demo-{secrets.token_hex(2)}",
            "settings": {"plan": "professional", "public_booking": True},
        },
    )
    key = _call(
        f"{scheduling}/v1/clinics/{clinic['clinic_id']}/api-keys",
        "POST",
        operator,
        {"label": "demo"},
    )["key"]
    v1 = f"{scheduling}/v1"
    practitioner = _call(
        f"{v1}/practitioners", "POST", key, {"display_name": "Dr Demo", "room_slug": "dr-demo"}
    )
    client = _call(
        f"{v1}/clients",
        "POST",
        key,
        {"display_name": "Demo Client", "email": "client@demo.example"},
    )
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=5)
    session = _call(
        f"{v1}/sessions",
        "POST",
        key,
        {
            "practitioner_id": practitioner["practitioner_id"],
            "client_ids": [client["client_id"]],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
            "link_sharing": True,
        },
    )
    demo = {
        "clinic_id": clinic["clinic_id"],
        "clinic_slug": clinic["slug"],
        "api_key": key,
        "practitioner_room": practitioner["room_path"],
        "practitioner_id": practitioner["practitioner_id"],
        "client_id": client["client_id"],
        "session_id": session["session_id"],
    }
    saved.write_text(json.dumps(demo, indent=2))
    saved.chmod(0o600)
    return demo


def join_links(links_url: str, demo: dict[str, Any], wait_s: float = 20.0) -> dict[str, str]:
    """The demo's links by kind, once the links service has issued them."""
    deadline = time.monotonic() + wait_s
    wanted = {"session", "guest", "host", "practitioner_room"}
    found: dict[str, str] = {}
    while time.monotonic() < deadline and not wanted <= set(found):
        for filters in (
            f"session_id={demo['session_id']}",
            f"practitioner_id={demo.get('practitioner_id', '')}",
        ):
            try:
                page = _call(f"{links_url}/v1/links?{filters}", "GET", demo["api_key"])
                for link in page["items"]:
                    found.setdefault(link["kind"], link["url"])
            except ApiError:
                pass
        time.sleep(0.3)
    return found
