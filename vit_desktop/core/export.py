"""Results leaving the program: files in the command line's formats (.csv, .json, .jsonl), the
terminal table, and copies of the photos sorted into one folder per class.

The file formats are an interface other tools parse: keep them stable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import CancelToken
from .files import atomic_path, atomic_write_text
from .paths import display_path
from .types import ClassifyResult

FORMATS = (".csv", ".json", ".jsonl")


def result_to_dict(result: ClassifyResult) -> dict[str, Any]:
    """``{"path", "predictions": [{"label", "index", "score"}], "error"}``."""
    return {
        "path": result.path,
        "predictions": [{"label": p.label, "index": p.index, "score": p.score} for p in result.predictions],
        "error": result.error,
    }


# Lone surrogates: the bytes of a file name that are not UTF-8, as Python's surrogateescape keeps them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json(obj: object, **options: Any) -> str:
    """JSON text that is valid UTF-8 (RFC 8259) whatever the file names are.

    Non-ASCII text stays readable; a byte of a file name that is not UTF-8 is written as the
    escape Python's own ``json`` writes for it (``\\udce9`` for byte 0xE9), which reads back to
    the same path: ``os.fsencode(json.loads(text)["path"])`` is the file name's bytes.
    """
    text = json.dumps(obj, ensure_ascii=False, **options)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_jsonl(results: Sequence[ClassifyResult]) -> str:
    return "".join(_json(result_to_dict(r)) + "\n" for r in results)


def to_json(results: Sequence[ClassifyResult]) -> str:
    return _json([result_to_dict(r) for r in results], indent=2) + "\n"


def csv_header(top_k: int) -> list[str]:
    cols = ["path"]
    for i in range(1, top_k + 1):
        cols += [f"label_{i}", f"score_{i}"]
    return cols + ["error"]


#: A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """``text`` as a CSV cell that spreadsheets show as text: formulas are neutralised with a
    leading apostrophe, and bytes of file names that are not UTF-8 are written as ``\\xNN``."""
    text = display_path(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(result: ClassifyResult, top_k: int) -> list[str]:
    row = [csv_cell(result.path)]
    for i in range(top_k):
        if i < len(result.predictions):
            p = result.predictions[i]
            row += [csv_cell(p.label), f"{p.score:.6f}"]
        else:
            row += ["", ""]
    return row + [csv_cell(result.error or "")]


def to_csv(results: Sequence[ClassifyResult], top_k: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(top_k))
    for r in results:
        writer.writerow(csv_row(r, top_k))
    return buf.getvalue()


def render(results: Sequence[ClassifyResult], fmt: str, *, top_k: int) -> str:
    """The text of ``results`` in ``fmt`` (".csv", ".json" or ".jsonl")."""
    if fmt == ".csv":
        return to_csv(results, top_k)
    if fmt == ".json":
        return to_json(results)
    if fmt == ".jsonl":
        return to_jsonl(results)
    raise ValueError(f"unknown result format {fmt!r}: use .csv, .json or .jsonl")


def format_of(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{Path(path).name}: the output must end in .csv, .json or .jsonl")
    return suffix


def write_results(
    results: Sequence[ClassifyResult], path: str | os.PathLike[str], *, top_k: int, overwrite: bool = False
) -> Path:
    """Write ``results`` in the format named by ``path``'s suffix, atomically."""
    return atomic_write_text(path, render(results, format_of(path), top_k=top_k), overwrite=overwrite)


def format_table(results: Sequence[ClassifyResult], *, top_k: int) -> str:
    """A readable table for a terminal: one line per image, best label first."""
    lines = []
    for r in results:
        name = r.path if len(r.path) <= 48 else "…" + r.path[-47:]
        if r.error:
            lines.append(f"{name:<48}  error: {r.error}")
            continue
        preds = "  ".join(f"{p.label} {p.score:6.1%}" for p in r.predictions[:top_k])
        flag = " (uncertain)" if r.uncertain else ""
        lines.append(f"{name:<48}  {preds}{flag}")
    return "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------------------------------------
# Photos sorted into one folder per class


def safe_folder_name(label: str) -> str:
    """A class label as a folder name on every platform (no separators or reserved characters)."""
    bad = '<>:"/\\|?*'
    name = "".join("_" if ch in bad or ord(ch) < 32 else ch for ch in label).strip().rstrip(".")
    return name or "unnamed"


#: Where sorting puts a photo whose best score is under the threshold: a turtle sorted into
#: "dog, cat" at 1 % is not a dog photo.
UNCERTAIN_FOLDER = "uncertain"


def class_folder_of(result: ClassifyResult) -> str | None:
    """The folder a classified photo is sorted into (its top label, or ``uncertain``); None for errors."""
    if not result.ok or result.top is None:
        return None
    return UNCERTAIN_FOLDER if result.uncertain else result.top.label


def copy_into_class_folder(src: str | os.PathLike[str], label: str, dest: str | os.PathLike[str]) -> Path:
    """Copy (never move) ``src`` into ``dest/<label>/``, atomically; a name already taken gets a
    number (``photo (1).jpg``), so nothing is ever replaced. Returns the copy's path."""
    src = Path(src)
    folder = Path(dest) / safe_folder_name(label)
    # First, and on its own: a file where the folder should be raises here (FileExistsError, like
    # a taken name below would) instead of sending the loop after ever-higher numbers.
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        target = folder / (src.name if n == 0 else f"{src.stem} ({n}){src.suffix}")
        if not target.exists():
            try:
                # Into a temporary file beside it first: a kill mid-copy leaves no half photo.
                with atomic_path(target) as tmp:
                    shutil.copy2(src, tmp)
                return target
            except FileExistsError:  # taken meanwhile (another copy of the same name)
                pass
        n += 1


def copy_into_class_folders(
    items: Sequence[tuple[str, str]],
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> int:
    """Copy (never move) each ``(photo, label)`` into ``dest/<label>/``; returns how many were copied.

    A name already taken gets a number (``photo (1).jpg``): nothing is ever overwritten. With
    ``on_error``, a photo that cannot be copied is handed to it and the others still are.
    """
    copied = 0
    for i, (src, label) in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            copy_into_class_folder(src, label, dest)
        except OSError as exc:
            if on_error is None:
                raise
            on_error(src, exc)
        else:
            copied += 1
        if progress is not None:
            progress(i + 1, len(items))
    return copied
