"""``vit-desktop library``: where the store of results and features is, how big, and emptying it."""

from __future__ import annotations

import argparse
from typing import IO, TYPE_CHECKING

from .console import PROG, UsageError

if TYPE_CHECKING:
    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser("library", help="show the store of results and features kept between runs, or empty it")
    c.add_argument("--clear", action="store_true",
                   help="empty it: every photo is classified again on its next run (no result file is touched)")
    return c


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from vit_desktop.core.library.store import Library, library_path
    from vit_desktop.core.paths import display_path
    from vit_desktop.core.units import format_bytes

    problems: list[str] = []
    library = Library.open(on_problem=problems.append)
    if library is None:
        raise UsageError(problems[0] if problems else f"{library_path()}: the library cannot be opened")
    try:
        for line in problems:  # a damaged store set aside: said, and a new one in its place
            print(f"{PROG}: {line}", file=err)
        before = library.stats()
        if args.clear:
            library.clear()
        stats = library.stats()
    finally:
        library.close()
    if stats is None or before is None:
        raise UsageError(f"{display_path(str(library_path()))}: the library could not be read")
    if args.clear:
        out.write(f"emptied {display_path(str(stats.path))}: {before.photos} photos, "
                  f"{format_bytes(before.size_bytes)} freed ({format_bytes(stats.size_bytes)} left)\n")
        return 0
    out.write(f"{display_path(str(stats.path))}\n"
              f"  {format_bytes(stats.size_bytes)}, {stats.photos} photos, {stats.results} answers, "
              f"{stats.features} feature sets, {stats.models} model files\n")
    return 0
