"""``vit-desktop export``: a model as ONNX, verified in onnxruntime before it is kept."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .console import PROG, UsageError

if TYPE_CHECKING:
    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    e = subparsers.add_parser("export", help="write a model as ONNX (checked against the model in onnxruntime)")
    e.add_argument("model", metavar="MODEL", help="registry name (see 'models') or a checkpoint file/folder")
    e.add_argument("--onnx", required=True, metavar="OUT.onnx",
                   help="the file to write; OUT.json beside it gets the labels and preprocessing")
    e.add_argument("--outputs", choices=("logits", "probabilities"), default="logits",
                   help="what the graph returns (default logits)")
    e.add_argument("--photos", nargs="+", metavar="PATH", default=(),
                   help="photos or folders to check the export on (default: the sample photos)")
    e.add_argument("--overwrite", action="store_true", help="replace existing OUT.onnx and OUT.json")
    return e


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from vit_desktop.core.files import cannot_write
    from vit_desktop.core.models.onnx import INSTALL_HINT, ExportError, export_onnx, missing_modules

    missing = missing_modules()
    if missing:
        raise UsageError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")
    dest = Path(args.onnx)
    if dest.suffix.lower() != ".onnx":
        raise UsageError(f"--onnx {args.onnx}: the file name must end in .onnx")
    for path in (dest, dest.with_suffix(".json")):
        if path.exists() and not args.overwrite:
            raise UsageError(f"{path} already exists; pass --overwrite to replace it")
    problem = cannot_write(dest) or cannot_write(dest.with_suffix(".json"))
    if problem:
        raise UsageError(f"--onnx: {problem}")
    photos = _photos(args.photos, err)

    from vit_desktop.core.errors import VitDesktopError
    from vit_desktop.core.inference.engine import Engine

    try:
        engine = Engine.load(args.model, device="cpu", precision="fp32")
    except VitDesktopError as exc:
        raise UsageError(str(exc)) from None
    from vit_desktop.core.paths import display_text

    print(f"{PROG}: exporting {display_text(engine.card.name)} ({engine.card.num_classes} classes, "
          f"{engine.card.preprocess.describe()})", file=err)
    try:
        report = export_onnx(engine.module, engine.card, dest, outputs=args.outputs, photos=photos,
                             overwrite=args.overwrite, progress=lambda text: print(f"{PROG}: {text}", file=err))
    except ExportError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 1
    print(f"{PROG}: wrote {report.summary()}; labels and preprocessing in {report.sidecar}", file=err)
    return 0


def _photos(paths: list[str], err: IO[str]) -> list[Path]:
    from vit_desktop.core.io.scan import scan
    from vit_desktop.core.paths import shipped_dir

    if not paths:
        samples = shipped_dir("resources") / "samples"
        paths = [str(samples)] if samples.is_dir() else []
    found = scan(paths) if paths else None
    if found is None:
        return []
    for path, reason in found.errors:
        print(f"{PROG}: {path}: {reason}", file=err)
    return list(found.files)
