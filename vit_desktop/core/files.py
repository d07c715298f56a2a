"""Safe file writes: nothing half-written, nothing replaced without being asked.

Every file the program writes goes through :func:`atomic_path`: the bytes go to a hidden temporary
file in the destination folder, which is renamed over the destination only once it is complete
(``os.replace`` is atomic within one filesystem). A failure, a cancel or an interrupt deletes the
temporary file, and :func:`remove_temporary_files` lets a signal handler do the same for writes
still under way when the process is told to stop. Files that belong together go through
:func:`atomic_paths`, which never leaves a mix of old and new ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"

#: The longest file name (in bytes) that common file systems take (ext4, XFS, Btrfs, APFS, NTFS).
NAME_MAX = 255

#: How much of a file's name its temporary file's name keeps: with the dot, the random part and the
#: suffix (14 bytes) it stays within every file system's limit (eCryptfs: 143 bytes) however long
#: the name is, so that any name that can be written can be written atomically.
_TEMP_NAME_BYTES = 120

_live: set[Path] = set()
_live_lock = threading.Lock()


def _cut(text: str, limit: int) -> str:
    """``text`` cut at a character boundary to at most ``limit`` bytes as a file name is stored."""
    while len(os.fsencode(text)) > limit:
        text = text[: -max(1, (len(os.fsencode(text)) - limit) // 4)]
    return text


def fit_name(stem: str, ending: str = "") -> str:
    """``stem + ending`` as a file name of at most :data:`NAME_MAX` bytes: the stem is cut (at a
    character boundary) so that the ending, such as ``" (1).jpg"`` or ``".png"``, is kept."""
    return _cut(stem, NAME_MAX - len(os.fsencode(ending))) + ending


def _temporary_file(path: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A new empty file beside ``path`` with a unique name that starts with ``.<path's name>.``
    (cut, see :data:`_TEMP_NAME_BYTES`)."""
    fd, name = tempfile.mkstemp(prefix=f".{_cut(path.name, _TEMP_NAME_BYTES)}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` and the folders above it that are missing, but never a missing home folder:
    a program run with HOME pointing nowhere (a service, a sandbox) must not make one. Raises
    FileNotFoundError naming the home folder then, and OSError as ``mkdir`` does."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry: there is no home folder to spare
        home = None
    if home is not None and (folder == home or home in folder.parents) and not home.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"the home folder {home} does not exist", str(home))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def file_mode(path: Path) -> int:
    """The permissions a file written at ``path`` should get: those of the file it replaces, else
    rw-r--r-- (temporary files start as rw------- and would otherwise stay private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (its folder created if need be), removed on the way out
    unless it was renamed meanwhile, and by :func:`remove_temporary_files` while it lives."""
    make_dirs(path.parent)
    tmp = _temporary_file(path)
    with _live_lock:
        _live.add(tmp)
    try:
        yield tmp
    finally:
        with _live_lock:
            _live.discard(tmp)
        tmp.unlink(missing_ok=True)  # a no-op after os.replace


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
    with _temporary(path) as tmp:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
        # After writing: some writers (safetensors) create the file anew with mode 0600.
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str], overwrite: bool = False) -> Iterator[tuple[Path, ...]]:
    """Temporary paths beside each of ``paths``, which replace them together when the block succeeds:
    files that belong together (a model and its description) are never left as a mix of old and new.

    The temporary files are complete before anything is replaced. Then the files there are moved
    aside (last first) and the new ones put in place (first first), so that whenever the process is
    killed the paths hold a prefix of the old files or a prefix of the new ones, never both; a
    failure (or an interrupt) on the way puts the old files back and removes the new ones. Raises
    FileExistsError as :func:`atomic_path` does.
    """
    targets = [Path(p) for p in paths]
    for path in targets:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
    with contextlib.ExitStack() as stack:
        tmps = tuple(stack.enter_context(_temporary(p)) for p in targets)
        yield tmps
        for path in targets:
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} already exists")
        _replace_together(list(zip(tmps, targets)))


def _replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """``os.replace`` each (new, path) pair, all or none (see :func:`atomic_paths`)."""
    aside: list[tuple[Path, Path]] = []  # (backup, path) of the old files moved out of the way
    placed: list[Path] = []
    try:
        for tmp, path in reversed(pairs):
            os.chmod(tmp, file_mode(path))
            if path.exists():
                backup = _temporary_file(path, ".old")
                try:
                    os.replace(path, backup)
                except BaseException:
                    backup.unlink(missing_ok=True)
                    raise
                aside.append((backup, path))
        for tmp, path in pairs:
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        for backup, path in reversed(aside):
            os.replace(backup, path)
        raise
    for backup, _ in aside:
        backup.unlink(missing_ok=True)


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
    "NAME_MAX",
    "TEMP_SUFFIX",
    "atomic_path",
    "atomic_paths",
    "atomic_write_bytes",
    "atomic_write_text",
    "cannot_write",
    "file_mode",
    "fit_name",
    "make_dirs",
    "os_reason",
    "remove_temporary_files",
]
