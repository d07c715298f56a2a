"""Safe file writes: nothing half-written, nothing replaced without being asked.

Every file the program writes goes through :func:`atomic_path`: the bytes go to a hidden temporary
file in the destination folder, which is renamed over the destination only once it is complete
(``os.replace`` is atomic within one filesystem). A failure, a cancel or an interrupt deletes the
temporary file, and :func:`remove_temporary_files` lets a signal handler do the same for writes
still under way when the process is told to stop.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"

_live: set[Path] = set()
_live_lock = threading.Lock()


def file_mode(path: Path) -> int:
    """The permissions a file written at ``path`` should get: those of the file it replaces, else
    rw-r--r-- (temporary files start as rw------- and would otherwise stay private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block succeeds.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is False, checked before and
    again after writing (another program may have created it meanwhile). The temporary file is
    removed on every way out of the block that is not a success.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    with _live_lock:
        _live.add(tmp)
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
        # After writing: some writers (safetensors) create the file anew with mode 0600.
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    finally:
        with _live_lock:
            _live.discard(tmp)
        tmp.unlink(missing_ok=True)  # a no-op after os.replace


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """UTF-8 text, written atomically (text that cannot be UTF-8 is an error, never a broken file)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def os_reason(exc: OSError) -> str:
    """What went wrong with a file, in lower-case words ("permission denied", "no space left on device")."""
    return (exc.strerror or str(exc)).lower()


def cannot_write(path: str | os.PathLike[str]) -> str | None:
    """Why a file could not be written at ``path``, in words; None when it can (checked by creating
    and deleting a temporary file in the nearest existing folder, so read-only folders, read-only
    filesystems and pseudo-filesystems such as /proc are found before any work is done)."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".vit-desktop-check.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        return f"cannot write in {folder}: {os_reason(exc)}"
    os.close(fd)
    Path(name).unlink(missing_ok=True)
    return None


def remove_temporary_files() -> int:
    """Delete the temporary files of writes still under way (for a signal handler); returns how many."""
    with _live_lock:
        live = list(_live)
        _live.clear()
    for tmp in live:
        try:
            tmp.unlink()
        except OSError:
            pass
    return len(live)


__all__ = [
    "TEMP_SUFFIX",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "cannot_write",
    "file_mode",
    "os_reason",
    "remove_temporary_files",
]
