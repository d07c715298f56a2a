"""Photos decoded for the model ahead of the batches that read them, in a small pool of threads.

Pillow releases the GIL while it decodes and resizes, so decoding overlaps inference, and memory is
bounded by how far ahead it runs, not by the folder's size. Nothing here imports torch: a run whose
model is known from the library starts decoding while torch is imported and the model loaded
(:func:`while_loading`), on the core that the import leaves idle.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from vit_desktop.core.errors import ImageError, first_line
from vit_desktop.core.models.preprocess import Prepared, prepare_file
from vit_desktop.core.types import Preprocess

#: Decoded photos at most held while the model loads (each is the model's uint8 input, about
#: 150 KB at 224 pixels): the photos the idle core decodes during torch's import, which takes
#: 1.2-2 s, at 4-5 ms a photo.
LOADING_BYTES = 64 << 20
#: The interpreter's thread switch interval while the model loads (its default is 5 ms). Importing
#: torch holds the GIL for long stretches, and each photo needs it a few times between Pillow's
#: GIL-free steps: at 5 ms the decoders mostly wait (100 photos decoded during the import, on 2
#: cores), at 0.2 ms they keep their core busy (200-300).
LOADING_SWITCH_S = 0.0002


def decode_workers() -> int:
    """Threads that decode: one per core, at most four (more only wait for the disk and the GIL)."""
    return max(1, min(4, os.cpu_count() or 2))


class Decoding:
    """``paths`` decoded for a model with preprocessing ``pp``, at most ``ahead`` photos ahead of
    those taken; :meth:`take` hands them out in order. Close it (or use it as a context manager):
    that cancels what has not started and joins the pool."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], pp: Preprocess, *, keep_images: bool = False,
                 ahead: int, workers: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.pp = pp
        self.keep_images = keep_images
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(workers or decode_workers(), thread_name_prefix="vit-decode")
        self._pending: deque[tuple[Path, Future[Prepared]]] = deque()
        self._submitted = 0
        self._taken = 0
        self._fill()

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def remaining(self) -> int:
        """Photos not yet taken."""
        return len(self.paths) - self._taken

    def _fill(self) -> None:
        stop = min(len(self.paths), self._taken + self.ahead)
        while self._submitted < stop:
            p = self.paths[self._submitted]
            self._pending.append((p, self._pool.submit(prepare_file, p, self.pp, keep_image=self.keep_images)))
            self._submitted += 1

    def take(self, n: int) -> list[tuple[str, Prepared | str]]:
        """The next ``n`` photos (fewer at the end): each decoded, or the one-line reason it could
        not be; waits for them, and sets the ones ``ahead`` of them going first."""
        n = min(n, self.remaining)
        self._taken += n
        self._fill()
        batch = [self._pending.popleft() for _ in range(n)]
        return [(str(p), _outcome(f)) for p, f in batch]

    def close(self) -> None:
        for _, f in self._pending:
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def while_loading() -> Iterator[None]:
    """Around loading a model while a :class:`Decoding` runs: the decoders get the GIL when they
    need it (see :data:`LOADING_SWITCH_S`); the interval is put back afterwards."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, LOADING_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def loading_ahead(pp: Preprocess) -> int:
    """How many photos to decode while the model loads, within :data:`LOADING_BYTES`."""
    return max(1, LOADING_BYTES // (3 * pp.crop_size * pp.crop_size))


def _outcome(future: Future[Prepared]) -> Prepared | str:
    """The prepared image, or the one-line reason it could not be prepared."""
    try:
        return future.result()
    except ImageError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not end a folder run
        return first_line(f"could not read image: {type(exc).__name__}: {exc}")


__all__ = ["LOADING_BYTES", "LOADING_SWITCH_S", "Decoding", "decode_workers", "loading_ahead", "while_loading"]
