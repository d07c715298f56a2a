"""Results leaving the program as text: files in the command line's formats (.csv, .json, .jsonl)
and the terminal table.

The file formats are an interface other tools parse: keep them stable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vit_desktop.core.files import atomic_write_text
from vit_desktop.core.paths import display_path, display_text
from vit_desktop.core.types import ClassifyResult

FORMATS = (".csv", ".json", ".jsonl")


def result_to_dict(result: ClassifyResult) -> dict[str, Any]:
    """``{"path", "predictions": [{"label", "index", "score"}], "error", "uncertain"}``.

    ``uncertain`` is true when the photo is none of the model's classes or the model is not sure of
    it (by the model's open-set rule, or ``--threshold``), false when it is one of them, and null
    for a photo that could not be classified.
    """
    return {
        "path": result.path,
        "predictions": [{"label": p.label, "index": p.index, "score": p.score} for p in result.predictions],
        "error": result.error,
        "uncertain": None if result.error else result.uncertain,
    }


# Lone surrogates: the bytes of a file name that are not UTF-8, as Python's surrogateescape keeps them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(obj: object, **options: Any) -> str:
    """JSON text that is valid UTF-8 (RFC 8259) whatever the file names are.

    Non-ASCII text stays readable; a byte of a file name that is not UTF-8 is written as the
    escape Python's own ``json`` writes for it (``\\udce9`` for byte 0xE9), which reads back to
    the same path: ``os.fsencode(json.loads(text)["path"])`` is the file name's bytes.
    """
    text = json.dumps(obj, ensure_ascii=False, **options)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_jsonl(results: Sequence[ClassifyResult]) -> str:
    return "".join(json_text(result_to_dict(r)) + "\n" for r in results)


def to_json(results: Sequence[ClassifyResult]) -> str:
    return json_text([result_to_dict(r) for r in results], indent=2) + "\n"


def csv_header(top_k: int) -> list[str]:
    """``path, label_1, score_1, ..., error, uncertain``: ``uncertain`` came last, after the columns
    older readers know by position."""
    cols = ["path"]
    for i in range(1, top_k + 1):
        cols += [f"label_{i}", f"score_{i}"]
    return cols + ["error", "uncertain"]


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
    uncertain = "" if result.error else ("true" if result.uncertain else "false")
    return row + [csv_cell(result.error or ""), uncertain]


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


def table_path(path: str, width: int = 48) -> str:
    """A path for a terminal table's column of ``width``: shown safely, its start cut off when long."""
    shown = display_path(path)
    return shown if len(shown) <= width else "…" + shown[-(width - 1):]


def format_table(results: Sequence[ClassifyResult], *, top_k: int) -> str:
    """A readable table for a terminal: one line per image, best label first (labels and errors
    escaped as :func:`~vit_desktop.core.paths.display_text` does: one line each, no terminal codes)."""
    lines = []
    for r in results:
        path = display_path(r.path)
        name = path if len(path) <= 48 else "…" + path[-47:]
        if r.error:
            lines.append(f"{name:<48}  error: {display_text(r.error)}")
            continue
        preds = "  ".join(f"{display_text(p.label)} {p.score:6.1%}" for p in r.predictions[:top_k])
        flag = " (uncertain)" if r.uncertain else ""
        lines.append(f"{name:<48}  {preds}{flag}")
    return "\n".join(lines) + ("\n" if lines else "")
