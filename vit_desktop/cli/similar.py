"""``vit-desktop similar``: the photos that look most like one photo."""

from __future__ import annotations

import argparse
from typing import IO, TYPE_CHECKING

from .console import PROG, UsageError

if TYPE_CHECKING:
    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser("similar", help="the photos most like one photo, by the model's features")
    c.add_argument("photo", metavar="PHOTO", help="the photo to match (inside the PATHs or not)")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders to search (recursively)")
    c.add_argument("--model", metavar="NAME_OR_FILE",
                   help="the model whose features compare the photos (default: as for classify); features kept "
                        "in the library by an earlier run of it are read, not computed")
    c.add_argument("--top-k", type=int, default=10, metavar="K", help="how many photos to list (default 10)")
    return c


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    from vit_desktop.core.errors import ImageError
    from vit_desktop.core.io.images import decode
    from vit_desktop.core.io.results_files import table_path
    from vit_desktop.core.library.similar import similar_to
    from vit_desktop.core.paths import display_path

    from .gathering import gather_prints

    try:  # a photo that cannot be read is said before any model is loaded
        decode(args.photo, draft_size=32)
    except ImageError as exc:
        raise UsageError(f"{display_path(args.photo)}: {exc}") from None
    prints_run, prints = gather_prints(args.paths, args.model, err, hashes=False, first=args.photo)
    query = prints_run.first
    if query is None or query not in prints:
        reason = prints_run.unreadable.get(query, "") if query is not None else ""
        reason = reason or next((r for _, r in prints_run.scan_errors), "not an image file")
        raise UsageError(f"{display_path(args.photo)}: {reason}")
    neighbours = similar_to(prints, query, top_k=args.top_k)
    if len(neighbours) < args.top_k:
        print(f"{PROG}: {len(neighbours)} other photo{'s' if len(neighbours) != 1 else ''} to compare with",
              file=err)
    for n in neighbours:
        out.write(f"{n.score:6.3f}  {table_path(n.path, 200)}\n")
    return 0
