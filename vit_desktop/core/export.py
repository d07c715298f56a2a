"""Result files in the command line's formats (.csv, .json, .jsonl) and the terminal table.

These formats are an interface other tools parse: keep them stable.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .files import atomic_write_text
from .types import ClassifyResult

FORMATS = (".csv", ".json", ".jsonl")


def result_to_dict(result: ClassifyResult) -> dict[str, Any]:
    """``{"path", "predictions": [{"label", "index", "score"}], "error"}``."""
    return {
        "path": result.path,
        "predictions": [{"label": p.label, "index": p.index, "score": p.score} for p in result.predictions],
        "error": result.error,
    }


def to_jsonl(results: Sequence[ClassifyResult]) -> str:
    return "".join(json.dumps(result_to_dict(r), ensure_ascii=False) + "\n" for r in results)


def to_json(results: Sequence[ClassifyResult]) -> str:
    return json.dumps([result_to_dict(r) for r in results], ensure_ascii=False, indent=2) + "\n"


def csv_header(top_k: int) -> list[str]:
    cols = ["path"]
    for i in range(1, top_k + 1):
        cols += [f"label_{i}", f"score_{i}"]
    return cols + ["error"]


def csv_row(result: ClassifyResult, top_k: int) -> list[str]:
    row = [result.path]
    for i in range(top_k):
        if i < len(result.predictions):
            p = result.predictions[i]
            row += [p.label, f"{p.score:.6f}"]
        else:
            row += ["", ""]
    return row + [result.error or ""]


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
