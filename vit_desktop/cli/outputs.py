"""What ``vit-desktop classify`` writes beside its results, as each batch ends: heatmaps
(``--heatmaps``), keywords into XMP sidecars (``--xmp``) and copies sorted by label (``--sort-into``)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .console import PROG, ProgressLine

if TYPE_CHECKING:
    from PIL import Image

    from vit_desktop.core.types import ClassifyResult, Heatmap


class HeatmapWriter:
    """Writes ``<rel>.png`` + ``<rel>.npy`` per image in background threads, mirroring folders.

    Every photo gets maps of its own: a name another photo of the run took gets a number
    (``x (1).png``), and a name that is one of the run's photos is never written over, even with
    ``--overwrite`` (a map of ``holiday.jpg`` beside the photos is not written over ``holiday.png``).

    At most ``max_pending`` images wait to be written: beyond that :meth:`submit` waits, so a
    fast GPU does not pile up a folder's worth of heatmaps in memory, and problems are reported
    as they happen rather than at the end.
    """

    max_pending = 32

    def __init__(self, root: Path, *, overwrite: bool, err: IO[str], photos: Sequence[Path] = ()) -> None:
        self.root = root
        self.overwrite = overwrite
        self.err = err
        self.photos = photos
        self._photo_ids: set[tuple[int, int]] | None = None
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="vit-heatmap")
        self.pending: deque[Future[str | None]] = deque()
        self.used: set[Path] = set()
        #: Problems already reported, and how many times each came back since.
        self.repeats: dict[str, int] = {}
        #: Photos whose maps could not be written.
        self.failed = 0

    def _is_photo(self, path: Path) -> bool:
        """True when ``path`` is one of the run's photos (the same file, by whatever name)."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        if self._photo_ids is None:  # only once a map's name is taken by some file
            ids = set()
            for photo in self.photos:
                with contextlib.suppress(OSError):
                    ps = os.stat(photo)
                    ids.add((ps.st_dev, ps.st_ino))
            self._photo_ids = ids
        return (st.st_dev, st.st_ino) in self._photo_ids

    def target(self, rel: Path, path: Path | None = None) -> Path:
        """The maps' path without ``.png`` / ``.npy``: ``x`` for ``x.jpg``; ``x.jpg`` when ``x`` is
        a photo's name or another photo's map (``x.png`` beside it); ``x (1)``, ``x (2)``... when
        that is taken too (photos of the same name from several folders). Each name is at most
        :data:`~vit_desktop.core.files.NAME_MAX` bytes with its suffix."""
        from vit_desktop.core.files import fit_name
        from vit_desktop.core.paths import display_path

        folder = self.root / rel.parent
        names = itertools.chain((fit_name(rel.stem, ".png"), fit_name(rel.name, ".png")),
                                (fit_name(rel.stem, f" ({n}).png") for n in itertools.count(1)))
        overlaps: list[Path] = []
        for name in names:
            base = folder / name.removesuffix(".png")
            if base in self.used:
                continue
            photo = next((p for p in (base.with_name(base.name + ".png"), base.with_name(base.name + ".npy"))
                          if self._is_photo(p)), None)
            if photo is not None:
                overlaps.append(photo)
                continue
            self.used.add(base)
            for taken in overlaps:
                print(f"{PROG}: {display_path(taken)} is one of the photos: the map of "
                      f"{display_path(path or rel)} is {display_path(base.name)}.png instead", file=self.err)
            return base
        raise AssertionError("unreachable: the numbers never run out")

    def submit(self, path: Path, rel: Path, heatmap: Heatmap | None, image: Image.Image | None = None) -> None:
        """Queue one photo's files; ``image`` is the decoded photo when the engine kept it."""
        self.pending.append(self.pool.submit(self._write, path, self.target(rel, path), heatmap, image))
        while self.pending and (self.pending[0].done() or len(self.pending) > self.max_pending):
            self._report(self.pending.popleft())

    def _report(self, future: Future[str | None]) -> None:
        problem = future.result()
        if not problem:
            return
        self.failed += 1
        if problem in self.repeats:  # a read-only or full folder: said once, counted after that
            self.repeats[problem] += 1
            return
        self.repeats[problem] = 0
        print(f"{PROG}: {problem}", file=self.err)

    def _write(self, path: Path, base: Path, heatmap: Heatmap | None, image: Image.Image | None) -> str | None:
        import numpy as np

        from vit_desktop.core.files import atomic_write_bytes
        from vit_desktop.core.io.heatmap import save_overlay_png
        from vit_desktop.core.io.images import load_image

        assert heatmap is not None
        png, npy = base.with_name(base.name + ".png"), base.with_name(base.name + ".npy")
        try:
            save_overlay_png(png, load_image(path) if image is None else image, heatmap, overwrite=self.overwrite)
            arr = io.BytesIO()
            np.save(arr, heatmap.grid.astype(np.float32))
            atomic_write_bytes(npy, arr.getvalue(), overwrite=self.overwrite)
        except FileExistsError as exc:
            return f"{exc}; not replaced (pass --overwrite)"
        except OSError as exc:
            if exc.errno is not None and exc.strerror:  # the folder's problem, not the photo's
                return f"{png.parent}: heatmaps not written: {exc.strerror.lower()}"
            return f"{path}: heatmap not written: {exc}"
        except Exception as exc:  # noqa: BLE001 - one image's heatmap must not end the run
            return f"{path}: heatmap not written: {exc}"
        return None

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the heatmaps under way; with ``cancel`` (the run was interrupted) the ones not
        started yet are dropped."""
        if cancel:
            for future in self.pending:
                future.cancel()
        while self.pending:
            future = self.pending.popleft()
            if not future.cancelled():
                self._report(future)
        self.pool.shutdown()
        for problem, n in self.repeats.items():
            if n:
                print(f"{PROG}: ({n} more for the same reason: {problem})", file=self.err)


class KeywordWriter:
    """``--xmp``: each classified photo's label into its XMP sidecar as its batch ends."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.written = 0
        self.unsure = 0
        self.failed = 0

    def write(self, r: ClassifyResult, line: ProgressLine) -> None:
        from vit_desktop.core.io.xmp import write_keyword
        from vit_desktop.core.paths import display_path

        if not r.ok or r.top is None:
            return
        # An uncertain photo gets no keyword (and loses one an earlier run gave it).
        label = None if r.uncertain else r.top.label
        try:
            write_keyword(r.path, label)
        except (OSError, ValueError) as exc:
            self.failed += 1
            line.clear()
            reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{PROG}: {display_path(r.path)}: keyword not written: {reason}", file=self.err)
            return
        self.written += 1
        self.unsure += label is None

    def report(self) -> int:
        """Says how many sidecars were written on stderr; 1 when one could not be."""
        n = self.written
        print(f"{PROG}: wrote keywords into {n} XMP sidecar{'s' if n != 1 else ''}"
              + (f" ({self.unsure} uncertain: no keyword)" if self.unsure else "")
              + (f"; {self.failed} could not be written" if self.failed else ""), file=self.err)
        return 1 if self.failed else 0


class Sorter:
    """``--sort-into``: each classified photo copied into its label's folder as its batch ends."""

    def __init__(self, root: Path, err: IO[str]) -> None:
        self.root, self.err = root, err
        self.copied: dict[str, int] = {}
        self.failed = 0

    def copy(self, r: ClassifyResult, line: ProgressLine) -> None:
        from vit_desktop.core.files import os_reason
        from vit_desktop.core.io.class_folders import class_folder_of, copy_into_class_folder
        from vit_desktop.core.paths import display_path

        folder = class_folder_of(r)
        if folder is None:
            return
        try:
            copy_into_class_folder(r.path, folder, self.root)
        except OSError as exc:
            self.failed += 1
            line.clear()
            print(f"{PROG}: {display_path(r.path)}: not copied into {folder}/: {os_reason(exc)}", file=self.err)
            return
        self.copied[folder] = self.copied.get(folder, 0) + 1

    def report(self) -> int:
        """Says what went where on stderr; 1 when a photo could not be copied."""
        from vit_desktop.core.io.class_folders import UNCERTAIN_FOLDER

        n = sum(self.copied.values())
        classes = len(self.copied) - (UNCERTAIN_FOLDER in self.copied)
        unsure = self.copied.get(UNCERTAIN_FOLDER, 0)
        print(f"{PROG}: copied {n} photo{'s' if n != 1 else ''} into {classes} class folder"
              f"{'s' if classes != 1 else ''} under {self.root}"
              + (f" ({unsure} into {UNCERTAIN_FOLDER}/)" if unsure else "")
              + (f"; {self.failed} could not be copied" if self.failed else ""), file=self.err)
        return 1 if self.failed else 0


__all__ = ["HeatmapWriter", "KeywordWriter", "Sorter"]
