"""Sizes, durations, rates and time left, written the way people read them.

One place for every number a person sees in a status bar, a progress line or a table, so that the
window and the command line say the same thing the same way.
"""

from __future__ import annotations

import time


def format_bytes(size: float) -> str:
    """Binary units, as torchvision states its file sizes: ``512 B``, ``12 KB``, ``330 MB``, ``2.4 GB``."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.0f} KB"
    return f"{int(size)} B"


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``: a tenth of a second under ten seconds,
    so that a quick run never reads "0 s"."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_clock(seconds: float) -> str:
    """``m:ss``, as a terminal progress line shows time left."""
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"


def seconds_left(done: float, total: float, elapsed: float) -> float | None:
    """Time left at the average rate so far; None while nothing is done or the total is unknown."""
    if done <= 0 or total <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


class Stopwatch:
    """Elapsed time and time left of a job made of ``total`` equal units of work."""

    def __init__(self, total: float = 0) -> None:
        self.total = total
        self.done = 0.0
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rate(self, done: float | None = None) -> float:
        """Units per second so far."""
        done = self.done if done is None else done
        return done / max(self.elapsed, 1e-9)

    def tick(self, units: float = 1) -> float:
        """Count ``units`` more done; returns the seconds left (0 once the total is reached)."""
        self.done += units
        return seconds_left(self.done, self.total, self.elapsed) or 0.0


__all__ = ["Stopwatch", "format_bytes", "format_clock", "format_duration", "seconds_left"]
