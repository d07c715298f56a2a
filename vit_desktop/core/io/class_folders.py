"""Copies of the photos sorted into one folder per class: never moved, never replaced."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.files import atomic_path, fit_name, make_dirs
from vit_desktop.core.types import ClassifyResult


def safe_folder_name(label: str) -> str:
    """A class label as a folder name on every platform (no separators or reserved characters)."""
    bad = '<>:"/\\|?*'
    name = "".join("_" if ch in bad or ord(ch) < 32 else ch for ch in label).strip().rstrip(".")
    return name or "unnamed"


#: Where sorting puts a photo whose best score is under the threshold: a turtle sorted into
#: "dog, cat" at 1 % is not a dog photo.
UNCERTAIN_FOLDER = "uncertain"

#: What the folder of a class that is itself called "uncertain" (in any case) gets after its name.
_CLASS_MARK = " (class)"


def class_folder_name(label: str) -> str:
    """The folder of the class ``label``: its :func:`safe_folder_name`, except that a class called
    "uncertain" (any case, as file systems that ignore case see it) gets ``uncertain (class)``, so
    that its photos never mix with the uncertain ones."""
    name = safe_folder_name(label)
    return name + _CLASS_MARK if name.casefold() == UNCERTAIN_FOLDER else name


def class_folder_of(result: ClassifyResult) -> str | None:
    """The folder a classified photo is sorted into (its top label's, or ``uncertain``); None for errors."""
    if not result.ok or result.top is None:
        return None
    return UNCERTAIN_FOLDER if result.uncertain else class_folder_name(result.top.label)


def copy_into_class_folder(src: str | os.PathLike[str], label: str, dest: str | os.PathLike[str]) -> Path:
    """Copy (never move) ``src`` into ``dest/<label>/``, atomically; a name already taken gets a
    number (``photo (1).jpg``), so nothing is ever replaced. Returns the copy's path."""
    return copy_into_folder(src, Path(dest) / safe_folder_name(label))


def copy_into_folder(src: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Copy (never move) ``src`` into ``folder``, atomically; a name already taken gets a number
    (``photo (1).jpg``), so nothing is ever replaced. Returns the copy's path."""
    src = Path(src)
    folder = Path(folder)
    # First, and on its own: a file where the folder should be raises here (FileExistsError, like
    # a taken name below would) instead of sending the loop after ever-higher numbers.
    make_dirs(folder)
    n = 0
    while True:
        # A name of 255 bytes (the most a file system takes) still gets its number: the stem is cut.
        target = folder / (src.name if n == 0 else fit_name(src.stem, f" ({n}){src.suffix}"))
        if not target.exists():
            try:
                # Into a temporary file beside it first: a kill mid-copy leaves no half photo.
                with atomic_path(target) as tmp:
                    shutil.copy2(src, tmp)
                return target
            except FileExistsError:  # taken meanwhile (another copy of the same name)
                pass
        n += 1


def copy_into_class_folders(
    items: Sequence[tuple[str, str]],
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> int:
    """Copy (never move) each ``(photo, label)`` into ``dest/<label>/``; returns how many were copied.

    A name already taken gets a number (``photo (1).jpg``): nothing is ever overwritten. With
    ``on_error``, a photo that cannot be copied is handed to it and the others still are.
    """
    return _copy_each([(src, Path(dest) / safe_folder_name(label)) for src, label in items], progress, cancel,
                      on_error)


def copy_photos_into(
    paths: Sequence[str],
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> int:
    """Copy (never move) each photo into the folder ``dest`` itself, as :func:`copy_into_class_folders`
    does into class folders; returns how many were copied."""
    return _copy_each([(src, Path(dest)) for src in paths], progress, cancel, on_error)


def _copy_each(items: Sequence[tuple[str, Path]], progress: Callable[[int, int], None] | None,
               cancel: CancelToken | None, on_error: Callable[[str, OSError], None] | None) -> int:
    copied = 0
    for i, (src, folder) in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            copy_into_folder(src, folder)
        except OSError as exc:
            if on_error is None:
                raise
            on_error(src, exc)
        else:
            copied += 1
        if progress is not None:
            progress(i + 1, len(items))
    return copied
