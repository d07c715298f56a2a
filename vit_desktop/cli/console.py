"""What every command shares on the terminal: the program's name, usage errors, the progress line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from vit_desktop.core.units import format_clock

PROG = "vit-desktop"

if TYPE_CHECKING:
    #: What ``ArgumentParser.add_subparsers()`` returns: each command adds its parser to it.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


class UsageError(Exception):
    """Reported as one line on stderr with exit status 2."""


def check_output(output: str, overwrite: bool, format_of: Callable[[str], object]) -> None:
    """``--output`` refused before anything runs: a format ``format_of`` does not know (it raises
    ValueError), a file that exists without ``--overwrite``, a place that cannot be written."""
    from vit_desktop.core.files import cannot_write

    try:
        format_of(output)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    path = Path(output)
    if path.exists() and not path.is_dir() and not overwrite:
        raise UsageError(f"{output} already exists; pass --overwrite to replace it")
    problem = cannot_write(path)
    if problem:
        raise UsageError(f"--output: {problem}")


class ProgressLine:
    """One line on a terminal, rewritten in place; silent when the stream is piped or redirected.

    :meth:`bar` draws ``label [#####   ] done/total  rate  ETA m:ss``; :meth:`show` any text.
    Updates come at most ten times a second, except the last one of a bar.
    """

    def __init__(self, stream: IO[str], label: str = "", *, enabled: bool | None = None) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._last = 0.0
        self.shown = False

    def show(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(f"\r{text}\033[K")
        self.stream.flush()
        self.shown = True

    def bar(self, done: int, total: int, unit: str = "img") -> None:
        """Progress of ``total`` units (images, or bytes with ``unit="B"``); total 0 means unknown."""
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        if total > 0:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 24)
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else 0.0
            if unit == "B":
                text = f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB  {rate / 1e6:5.1f} MB/s"
            else:
                text = f"{done}/{total}  {rate:5.1f} {unit}/s"
            line = f"{self.label} [{bar:<24}] {text}  ETA {format_clock(eta)}"
        else:
            line = f"{self.label} {done / 1e6:7.1f} MB" if unit == "B" else f"{self.label} {done}"
        self.show(line, force=total > 0 and done >= total)

    def bytes(self, done: int, total: int) -> None:
        """A download's progress: the callback core's loaders take."""
        self.bar(done, total, "B")

    def say(self, text: str) -> None:
        """One message on the stream, ``vit-desktop: text``, below whatever progress was drawn."""
        self.clear()
        print(f"{PROG}: {text}", file=self.stream)

    def clear(self) -> None:
        """Erase the line, so that ordinary output starts at the left margin."""
        if self.shown:
            self.shown = False
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self) -> None:
        """End the line and keep it (a finished bar stays visible)."""
        if self.shown:
            self.shown = False
            self.stream.write("\n")
            self.stream.flush()


class Interrupted(BaseException):
    """A signal asked the command to stop (SIGTERM); ``signum`` says which.

    A BaseException, like KeyboardInterrupt: ``except Exception`` blocks must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


__all__ = ["PROG", "Interrupted", "ProgressLine", "UsageError", "check_output"]
