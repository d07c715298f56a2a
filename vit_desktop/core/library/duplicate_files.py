"""Duplicate groups leaving the program as text: ``.json`` and ``.csv`` files, and the terminal listing.

The file formats are an interface other tools parse: keep them stable.

- JSON: a list of groups, ``{"paths": [str, ...], "kind": "identical" | "edited", "score": float}``,
  the best copy first in ``paths``; UTF-8, file names that are not UTF-8 escaped as ``classify``'s
  files escape them (they read back to the same bytes with ``os.fsencode``).
- CSV: one row per photo, ``group, kind, score, path``: groups numbered from 1 in the order of
  the JSON, each group's best copy on its first row; cells neutralised as ``classify``'s are.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vit_desktop.core.files import atomic_write_text
from vit_desktop.core.io.results_files import csv_cell, json_text, table_path

from .duplicates import DuplicateGroup

FORMATS = (".json", ".csv")
CSV_HEADER = ("group", "kind", "score", "path")


def group_to_dict(group: DuplicateGroup) -> dict[str, Any]:
    return {"paths": list(group.paths), "kind": group.kind, "score": group.score}


def to_json(groups: Sequence[DuplicateGroup]) -> str:
    return json_text([group_to_dict(g) for g in groups], indent=2) + "\n"


def to_csv(groups: Sequence[DuplicateGroup]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for number, g in enumerate(groups, 1):
        for path in g.paths:
            writer.writerow([str(number), g.kind, f"{g.score:.6f}", csv_cell(path)])
    return buf.getvalue()


def format_of(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{Path(path).name}: the output must end in .json or .csv")
    return suffix


def write_groups(groups: Sequence[DuplicateGroup], path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``groups`` in the format named by ``path``'s suffix, atomically; an existing file is
    replaced only with ``overwrite`` (FileExistsError otherwise)."""
    text = to_json(groups) if format_of(path) == ".json" else to_csv(groups)
    return atomic_write_text(path, text, overwrite=overwrite)


def format_groups(groups: Sequence[DuplicateGroup], describe: Callable[[str], str] = lambda _path: "") -> str:
    """A readable listing for a terminal: a line per group, then its photos, the best copy first.
    ``describe(path)`` adds a note after each photo (its size, say)."""
    lines = []
    for number, g in enumerate(groups, 1):
        what = "identical files" if g.kind == "identical" else "copies of one picture"
        lines.append(f"group {number}: {len(g.paths)} {what} (score {g.score:.3f})")
        for i, path in enumerate(g.paths):
            note = describe(path)
            mark = "best" if i == 0 else ""
            lines.append(f"  {mark:<4}  {table_path(path, 60):<60}  {note}".rstrip())
    return "\n".join(lines) + ("\n" if lines else "")


__all__ = ["CSV_HEADER", "FORMATS", "format_groups", "format_of", "group_to_dict", "to_csv", "to_json",
           "write_groups"]
