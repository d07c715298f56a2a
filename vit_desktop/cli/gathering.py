"""What ``similar`` and ``duplicates`` share: choosing the model, gathering the photos' prints with
progress on stderr, and saying where they came from and which photos could not be read."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from .choosing import choose
from .console import PROG, ProgressLine

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vit_desktop.core.inference.lookalikes import PrintsProgress, PrintsRun
    from vit_desktop.core.library.prints import PhotoPrints


def gather_prints(paths: Sequence[str], model: str | None, err: IO[str], *, hashes: bool,
                  first: str | None = None) -> tuple[PrintsRun, PhotoPrints]:
    """The prints of ``paths`` (features of ``model``, chosen as ``classify`` chooses it; perceptual
    hashes too with ``hashes``), read from the library where it holds them, with :func:`gather`'s
    progress and report; the library is closed again before they are compared."""
    from vit_desktop.core.inference.lookalikes import PrintsRun
    from vit_desktop.core.library.store import Library

    line = ProgressLine(err, "downloading")
    library = Library.open(on_problem=line.say)
    try:
        choice = choose(model, device="auto", precision="auto", library=library, err=err, line=line)
        run = PrintsRun(paths, model=choice, hashes=hashes, library=library, first=first)
        return run, gather(run, err)
    finally:
        if library is not None:
            library.close()


def gather(run: PrintsRun, err: IO[str]) -> PhotoPrints:
    """Take every step of ``run`` with a progress bar per stage, then report on stderr: paths
    that could not be scanned, photos that could not be read, and how many prints the library
    gave ("15 from the library, 0 classified", as ``classify`` says)."""
    from vit_desktop.core.inference.lookalikes import FEATURES, HASHING, run_to_end
    from vit_desktop.core.paths import display_path

    lines = {HASHING: ProgressLine(err, "hashing"), FEATURES: ProgressLine(err, "features")}

    def progress(step: PrintsProgress) -> None:
        if step.stage == FEATURES:
            lines[HASHING].close()  # the hashing bar stays, finished, on its own line
        if step.total:
            lines[step.stage].bar(step.done, step.total)

    try:
        prints = run_to_end(run, progress)
    finally:
        for line in lines.values():
            line.close()
    for shown, reason in run.scan_errors:
        print(f"{PROG}: {shown}: {reason}", file=err)
    for path, reason in run.unreadable.items():
        print(f"{PROG}: {display_path(path)}: {reason}", file=err)
    if run.repeated:
        twice = run.repeated
        print(f"{PROG}: {twice} duplicate path{'s' if twice != 1 else ''} skipped "
              "(the same file given twice or reached through a link)", file=err)
    if run.files:
        print(f"{PROG}: {sources(run)}", file=err)
    return prints


def sources(run: PrintsRun) -> str:
    """Where the prints came from: "12 from the library, 3 classified; hashes: 15 from the library,
    0 computed; 1 could not be read"."""
    parts = []
    if run.model is not None:
        parts.append(f"{run.features_from_library} from the library, {run.classified} classified")
    if run.want_hashes:
        parts.append(f"hashes: {run.hashes_from_library} from the library, {run.hashed} computed")
    text = "; ".join(parts)
    if run.unreadable:
        text += f"; {len(run.unreadable)} could not be read"
    return text


__all__ = ["gather", "gather_prints", "sources"]
