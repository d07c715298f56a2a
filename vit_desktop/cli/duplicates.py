"""``vit-desktop duplicates``: groups of photos that are the same picture; no photo is touched."""

from __future__ import annotations

import argparse
from typing import IO, TYPE_CHECKING

from .console import PROG, check_output

if TYPE_CHECKING:
    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser(
        "duplicates",
        help="copies of one picture: identical, re-encoded, resized, lightly cropped or brightened (not other "
             "shots of a scene); nothing is moved or deleted")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    c.add_argument("--model", metavar="NAME_OR_FILE",
                   help="the model whose features confirm light crops (default: as for classify); features "
                        "kept in the library by an earlier run of it are read, not computed")
    c.add_argument("--output", metavar="FILE",
                   help="write the groups to FILE.json (a list of {\"paths\", \"kind\", \"score\"}, best copy "
                        "first) or FILE.csv (group, kind, score, path); default: a listing on stdout")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return c


def _check_args(args: argparse.Namespace) -> None:
    if args.output:
        from vit_desktop.core.library.duplicate_files import format_of

        check_output(args.output, args.overwrite, format_of)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    _check_args(args)
    from vit_desktop.core.files import os_reason
    from vit_desktop.core.library.duplicate_files import format_groups, write_groups
    from vit_desktop.core.library.duplicates import duplicate_groups
    from vit_desktop.core.units import format_bytes

    from .gathering import gather_prints

    prints_run, prints = gather_prints(args.paths, args.model, err, hashes=True)
    groups = duplicate_groups(prints)
    copies = sum(len(g.paths) for g in groups)
    print(f"{PROG}: {len(groups)} group{'s' if len(groups) != 1 else ''} of duplicates ({copies} photos) among "
          f"{len(prints)} photos; nothing was moved or deleted", file=err)
    if not args.output:
        rows = {p: i for i, p in enumerate(prints.paths)}

        def describe(path: str) -> str:
            size = prints_run.image_size(path)
            shown = f"{size[0]}x{size[1]}, " if size is not None else ""
            return f"{shown}{format_bytes(int(prints.sizes[rows[path]]))}"

        out.write(format_groups(groups, describe))
        return 0
    try:
        write_groups(groups, args.output, overwrite=args.overwrite)
    except FileExistsError:
        print(f"{PROG}: error: {args.output} appeared meanwhile; not replaced (pass --overwrite)", file=err)
        return 1
    except OSError as exc:
        print(f"{PROG}: error: could not write {args.output} ({os_reason(exc)})", file=err)
        return 1
    print(f"{PROG}: wrote {len(groups)} groups to {args.output}", file=err)
    return 0
