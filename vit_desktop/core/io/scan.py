"""Files and folders the user named -> the image files to classify, in a stable order.

A walk that copes with what real photo folders contain: links to folders already seen (walked
once), symbolic link loops, unreadable folders, hidden files, FIFOs and devices (never opened), and
trees deeper than Python's recursion limit. Problems are reported per path; the scan goes on.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vit_desktop.core.errors import CancelToken, first_line
from vit_desktop.core.paths import display_path

from .images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ScanResult:
    """Image files found by :func:`scan`, and the paths that could not be used, with reasons."""

    files: tuple[Path, ...] = ()
    #: (display path, one-line reason) for each path that could not be listed or followed.
    errors: tuple[tuple[str, str], ...] = ()
    #: For each file, the index of the path given to :func:`scan` it was found under.
    origins: tuple[int, ...] = ()
    #: Files reached again (given twice, or through a link to a file already found): skipped.
    duplicates: int = 0


#: How many directory entries are looked at between two checks of the cancel token.
_CANCEL_EVERY = 256
_NATURAL_SPLIT = re.compile(r"(\d+)")
# Windows' "hidden" attribute; st_file_attributes only exists there.
_FILE_ATTRIBUTE_HIDDEN = getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 2)


def _natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key that orders "img2" before "img10" and ignores case, as file managers do.

    The raw name breaks ties so that the order is total and stable ("A.jpg" vs "a.jpg").
    """
    parts = _NATURAL_SPLIT.split(name.casefold())
    key = tuple((0, int(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p)
    return key, name


def _is_hidden(entry: os.DirEntry[str]) -> bool:
    if entry.name.startswith("."):
        return True
    if os.name == "nt":  # the attribute comes with the directory listing there, no extra call
        try:
            return bool(getattr(entry.stat(), "st_file_attributes", 0) & _FILE_ATTRIBUTE_HIDDEN)
        except OSError:
            return False
    return False


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return first_line(exc) or type(exc).__name__


class _Scanner:
    """State of one :func:`scan` call: results so far and what has been visited."""

    def __init__(self, cancel: CancelToken | None) -> None:
        self.cancel = cancel
        self.files: list[Path] = []
        self.errors: list[tuple[str, str]] = []
        self.seen_files: set[object] = set()
        self.origins: list[int] = []
        self.duplicates = 0
        #: The index of the path given to scan() that is being walked.
        self.argument = 0
        self.seen_dirs: set[tuple[int, int]] = set()
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.cancel is not None and self.ticks % _CANCEL_EVERY == 0:
            self.cancel.raise_if_cancelled()

    def error(self, path: str | Path, reason: str) -> None:
        self.errors.append((display_path(path), reason))

    def add_file(self, path: str, st: os.stat_result) -> None:
        # The same file reached twice (given twice, inside a given folder, through a link) is
        # classified once. Windows' directory listings carry no inode number: use the path there.
        key: object = (
            (st.st_dev, st.st_ino) if st.st_ino else os.path.normcase(os.path.abspath(path))
        )
        if key not in self.seen_files:
            self.seen_files.add(key)
            self.files.append(Path(path))
            self.origins.append(self.argument)
        else:
            self.duplicates += 1

    def add_argument(self, arg: str | Path) -> None:
        """One path the user named: a file is kept whatever its suffix; a folder is walked."""
        path = os.fspath(arg)
        try:
            st = os.stat(path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and os.path.islink(path):
                self.error(path, "broken symbolic link")
            else:
                self.error(path, _os_reason(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(path, st)
        elif stat.S_ISREG(st.st_mode):
            self.add_file(path, st)
        else:
            # A FIFO or device would block or stream forever when opened.
            self.error(path, "not a regular file or folder")

    def walk(self, top: str, top_stat: os.stat_result) -> None:
        """Walk ``top`` depth-first, each folder's entries in natural order.

        A sub-folder's files come where its name sorts among its siblings, so the result is
        sorted by path parts ("a/z.jpg" before "b.jpg"). An explicit stack of listings instead
        of recursion: folder trees can be deeper than Python's recursion limit.
        """
        first = self.list_dir(top, top_stat)
        stack: list[Iterator[os.DirEntry[str]]] = [iter(first)] if first is not None else []
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            self.tick()
            if _is_hidden(entry):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks: linked folders are walked too
                is_file = not is_dir and entry.is_file()
            except OSError as exc:  # a symlink loop "a -> a" fails here with ELOOP
                self.error(entry.path, _os_reason(exc))
                continue
            if is_dir:
                try:
                    listing = self.list_dir(entry.path, os.stat(entry.path))
                except OSError as exc:
                    self.error(entry.path, _os_reason(exc))
                    continue
                if listing is not None:
                    stack.append(iter(listing))
            elif is_file:
                if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    try:
                        self.add_file(entry.path, entry.stat())
                    except OSError as exc:
                        self.error(entry.path, _os_reason(exc))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                self.error(entry.path, "broken symbolic link")
            # Anything else (FIFO, socket, device) is not a photo: skipped without a word.

    def list_dir(self, directory: str, dir_stat: os.stat_result) -> list[os.DirEntry[str]] | None:
        """Sorted entries of ``directory``; None when already visited or unreadable (reported)."""
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        # Folders are identified by (device, inode), so a link back to an ancestor (a loop) or a
        # folder given twice is walked once. Windows listings lack inodes, but os.stat has them.
        key = (dir_stat.st_dev, dir_stat.st_ino)
        if dir_stat.st_ino:
            if key in self.seen_dirs:
                return None
            self.seen_dirs.add(key)
        try:
            with os.scandir(directory) as listing:
                return sorted(listing, key=lambda e: _natural_key(e.name))
        except OSError as exc:
            self.error(directory, _os_reason(exc))
            return None


def scan(paths: Iterable[str | Path], *, cancel: CancelToken | None = None) -> ScanResult:
    """Expand files and folders to the image files to classify.

    - Named files are kept whatever their suffix (a non-image gets its decode error later).
    - Named folders are walked recursively for :data:`IMAGE_SUFFIXES` (any case), entries in
      natural order ("img2" before "img10"), skipping dot-prefixed (and, on Windows, hidden)
      files and folders inside them. Symlinked folders are followed, each folder once.
    - Results keep the order of ``paths``; the same file reached twice is listed once.
    - Missing paths, unreadable folders and broken links go to ``errors`` and the scan goes on.

    Raises :class:`~vit_desktop.core.types.Cancelled` when ``cancel`` is set during the walk.
    """
    scanner = _Scanner(cancel)
    for i, arg in enumerate(paths):
        if cancel is not None:
            cancel.raise_if_cancelled()
        scanner.argument = i
        scanner.add_argument(arg)
    return ScanResult(files=tuple(scanner.files), errors=tuple(scanner.errors), origins=tuple(scanner.origins),
                      duplicates=scanner.duplicates)


__all__ = ["ScanResult", "scan"]
