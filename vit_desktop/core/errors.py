"""The error family core raises on purpose, the one-line form of any exception, and CancelToken.

Every message of a :class:`VitDesktopError` is one line meant for a person (which file, which key,
what to do); callers show it as it is. A value quoted from a file goes in through :func:`shown`, so
that a hostile one (a megabyte, a line break) cannot make the line long or two. Cancellation is an
outcome, not a message: a job stops by raising :class:`Cancelled`, and callers test for the type,
never for the text. A failure that crosses threads is a :class:`Failure`: its kind decides what to
advise, its message is shown. Warnings that libraries print about a file are caught with
:func:`caught_warnings` and become part of the answer, not stray lines on the terminal.
"""

from __future__ import annotations

import contextlib
import enum
import reprlib
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass


class VitDesktopError(Exception):
    """Base of every error core raises on purpose; its message is one line meant for a person."""


class ModelError(VitDesktopError):
    """A model file or name that cannot be used, with the reason (which key, which shape)."""


class ImageError(VitDesktopError):
    """An image that cannot be read or decoded."""


class DownloadError(VitDesktopError):
    """Weights that could not be fetched: offline, bad hash, server error."""


class Cancelled(VitDesktopError):
    """Raised inside a long job when its CancelToken was set."""


class CancelToken:
    """A thread-safe flag a long job checks between steps (between batches, chunks, epochs)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


class FailureKind(enum.Enum):
    """What went wrong, as far as advice to the person goes."""

    #: A model name or file that cannot be used (wrong layout, truncated, not a ViT).
    MODEL = "model"
    #: Weights that could not be fetched: offline, a bad hash, a server error.
    DOWNLOAD = "download"
    #: A photo that could not be read.
    IMAGE = "image"
    #: Work that needs a model, asked for while none is loaded.
    NO_MODEL = "no model"
    #: Any other problem core reports on purpose (a full disk, a name the model does not know).
    EXPECTED = "expected"
    #: Anything else: a bug, whose message keeps the exception's type for a report.
    INTERNAL = "internal"


@dataclass(frozen=True)
class Failure:
    """Why a job failed, as a value that crosses threads: a kind to act on and one line to show."""

    kind: FailureKind
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure an exception stands for; its message is :func:`one_line`'s."""
        kinds: tuple[tuple[type[BaseException], FailureKind], ...] = (
            (ModelError, FailureKind.MODEL), (DownloadError, FailureKind.DOWNLOAD), (ImageError, FailureKind.IMAGE),
            (VitDesktopError, FailureKind.EXPECTED),
        )
        kind = next((k for t, k in kinds if isinstance(exc, t)), FailureKind.INTERNAL)
        # Whole: a message ends in what to do ("Put vit_b_16-c867db91.pth into /home/...") and the
        # window wraps it; cutting it at 200 characters lost the folder it named.
        return cls(kind, one_line(exc, limit=2000))

    def __str__(self) -> str:
        return self.message


def first_line(text: object, limit: int = 200) -> str:
    """The first non-empty line of ``text``, stripped and cut to ``limit`` characters."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A person-readable single line for an exception.

    Core's own errors already are one line and are shown as they are; anything else (a bug, a
    library's error) keeps its type name, which is what a bug report needs.
    """
    text = first_line(exc, limit)
    if isinstance(exc, VitDesktopError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Shown(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxstring = 40
        self.maxother = 40
        self.maxlong = 40


_SHOWN = _Shown()


def shown(value: object) -> str:
    """``value`` (read from a file) as a message quotes it: its repr, one line, a few dozen characters
    at most whatever its size (a megabyte string, a million-entry list)."""
    return _SHOWN.repr(value)


#: ``warnings.catch_warnings`` swaps process-wide state: every block that records warnings (a
#: photo's metadata, a model file's unpickler) takes this lock, or two threads would restore each
#: other's filters.
_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def caught_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised inside the block, recorded instead of shown; one such block at a time."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


__all__ = [
    "CancelToken",
    "Cancelled",
    "DownloadError",
    "Failure",
    "FailureKind",
    "ImageError",
    "ModelError",
    "VitDesktopError",
    "caught_warnings",
    "first_line",
    "one_line",
    "shown",
]
