"""Recordings are the clinic's: a recording's file and folders are its owner's alone."""

import asyncio
import stat
from pathlib import Path

from services.media.recorder import Recorder
from services.media.recordings import private_folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_recording_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.mp4"
    recorder = Recorder(path, width=320, height=180)
    recorder.start()
    await asyncio.sleep(0.3)
    await recorder.stop()
    assert mode(path) == 0o600


def test_a_clinics_recordings_folder_is_its_owners_only(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    private_folder(root, root / "c_clinic")
    assert (mode(root), mode(root / "c_clinic")) == (0o700, 0o700)
    # A clinic folder made by an older release (0755) is closed; an operator's root is left.
    shared = tmp_path / "shared"
    (shared / "c_old").mkdir(parents=True)
    shared.chmod(0o755)
    (shared / "c_old").chmod(0o755)
    private_folder(shared, shared / "c_old")
    assert (mode(shared), mode(shared / "c_old")) == (0o755, 0o700)
