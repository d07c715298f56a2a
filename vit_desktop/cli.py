"""Command line: the same engine as the window, scriptable.

    vit-desktop classify PATH... [--model NAME_OR_FILE] [--top-k K] [--batch-size N]
        [--device auto|cpu|cuda|mps] [--output FILE.csv|.json|.jsonl] [--heatmaps DIR]
        [--head-fusion mean|max|min] [--discard-ratio R]
    vit-desktop models
    vit-desktop finetune DATA_DIR --base MODEL --output OUT.safetensors ...

Exit status: 0 when the run completed (per-file errors are in the output), 2 for a usage error
such as an unreadable model, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import IO, Sequence

from . import __version__

PROG = "vit-desktop"


class UsageError(Exception):
    """Reported as one line on stderr with exit status 2."""


# --------------------------------------------------------------------------------------------
# Progress on stderr


class ProgressBar:
    """A one-line bar on a terminal; silent when stderr is piped or redirected."""

    def __init__(self, stream: IO[str], label: str, *, enabled: bool | None = None) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._last = 0.0
        self.shown = False

    def update(self, done: int, total: int, unit: str = "img") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        if total > 0:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 24)
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else 0.0
            if unit == "B":
                text = f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB  {rate / 1e6:5.1f} MB/s"
            else:
                text = f"{done}/{total}  {rate:5.1f} {unit}/s"
            line = f"\r{self.label} [{bar:<24}] {text}  ETA {int(eta) // 60}:{int(eta) % 60:02d} "
        else:
            line = f"\r{self.label} {done / 1e6:7.1f} MB " if unit == "B" else f"\r{self.label} {done} "
        self.stream.write(line)
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.shown = False
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify photos with Vision Transformers and see why. Without a command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("classify", help="classify images and folders (recursive)")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    c.add_argument("--model", metavar="NAME_OR_FILE", help="registry name (see 'models') or a checkpoint file/folder")
    c.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image (default 5)")
    c.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    c.add_argument("--output", metavar="FILE", help="write results to FILE.csv, FILE.json or FILE.jsonl")
    c.add_argument("--heatmaps", metavar="DIR", help="write <name>.png overlays and <name>.npy rollout grids here")
    c.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean", help="rollout head fusion")
    c.add_argument("--discard-ratio", type=float, default=0.0, metavar="R", help="rollout discard ratio in [0, 1)")
    c.add_argument("--threshold", type=float, default=0.0, metavar="S", help="mark results under this score uncertain")
    c.add_argument("--overwrite", action="store_true", help="replace existing output and heatmap files")

    sub.add_parser("models", help="list registry, bundled and user models")

    try:
        from . import cli_finetune
    except ImportError:  # fine-tuning not installed in this build
        pass
    else:
        cli_finetune.add_parser(sub)
    return parser


# --------------------------------------------------------------------------------------------
# classify


def _check_classify_args(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0.0 <= args.discard_ratio < 1.0:
        raise UsageError("--discard-ratio must be in [0, 1)")
    if args.output:
        from .core.export import format_of

        try:
            format_of(args.output)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if Path(args.output).exists() and not args.overwrite:
            raise UsageError(f"{args.output} already exists; pass --overwrite to replace it")
    if args.heatmaps and Path(args.heatmaps).exists() and not Path(args.heatmaps).is_dir():
        raise UsageError(f"--heatmaps {args.heatmaps} is a file, not a folder")


def default_model() -> tuple[str, str]:
    """(source, why) of the model used without --model: the last one used (here or in the window)
    if it can still be loaded offline, else a cached ImageNet model, else the bundled demo model."""
    from .core import registry, state

    last = state.last_model()
    if last and ((last in registry.REGISTRY and registry.is_cached(last)) or Path(last).is_file()):
        return last, "the model used last"
    infos = registry.list_models()
    for info in infos:
        if info.kind == "registry" and info.cached:
            return info.source, "a cached ImageNet model"
    for info in infos:
        if info.kind == "bundled" and not info.description.startswith("unreadable"):
            return info.source, "the bundled demo model"
    raise UsageError("no model given and none cached or bundled: pass --model NAME_OR_FILE (see 'vit-desktop models')")


def _collect(paths: Sequence[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(file, path relative to its PATH argument) for every image, plus (path, reason) errors."""
    from .core import images

    files: list[tuple[Path, Path]] = []
    errors: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for arg in paths:
        root = Path(arg)
        found = images.scan([root])
        errors.extend(found.errors)
        for f in found.files:
            if f in seen:
                continue
            seen.add(f)
            rel = f.relative_to(root) if root.is_dir() else Path(f.name)
            files.append((f, rel))
    return files, errors


class HeatmapWriter:
    """Writes ``<rel>.png`` + ``<rel>.npy`` per image in background threads, mirroring folders.

    At most ``max_pending`` images wait to be written: beyond that :meth:`submit` waits, so a
    fast GPU does not pile up a folder's worth of heatmaps in memory, and problems are reported
    as they happen rather than at the end.
    """

    max_pending = 64

    def __init__(self, root: Path, options: dict[str, object], *, overwrite: bool, err: IO[str]) -> None:
        self.root = root
        self.options = options
        self.overwrite = overwrite
        self.err = err
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="vit-heatmap")
        self.pending: deque[Future[str | None]] = deque()
        self.used: set[Path] = set()

    def target(self, rel: Path) -> Path:
        base = self.root / rel.with_suffix("")
        if base in self.used:  # photo.jpg and photo.png in one folder: keep both
            base = self.root / rel
        self.used.add(base)
        return base

    def submit(self, path: Path, rel: Path, heatmap: object) -> None:
        self.pending.append(self.pool.submit(self._write, path, self.target(rel), heatmap))
        while self.pending and (self.pending[0].done() or len(self.pending) > self.max_pending):
            self._report(self.pending.popleft())

    def _report(self, future: Future[str | None]) -> None:
        problem = future.result()
        if problem:
            print(f"{PROG}: {problem}", file=self.err)

    def _write(self, path: Path, base: Path, heatmap: object) -> str | None:
        import io

        import numpy as np

        from .core import images
        from .core.files import atomic_write_bytes
        from .core.heatmap import render_overlay
        from .core.png import encode_png

        png, npy = base.with_name(base.name + ".png"), base.with_name(base.name + ".npy")
        try:
            image = images.load_image(path)
            overlay = render_overlay(image, heatmap, **self.options)  # type: ignore[arg-type]
            atomic_write_bytes(png, encode_png(overlay), overwrite=self.overwrite)
            arr = io.BytesIO()
            np.save(arr, heatmap.grid.astype(np.float32))  # type: ignore[attr-defined]
            atomic_write_bytes(npy, arr.getvalue(), overwrite=self.overwrite)
        except FileExistsError as exc:
            return f"{exc}; not replaced (pass --overwrite)"
        except Exception as exc:  # one image's heatmap must not end the run
            return f"{path}: heatmap not written: {exc}"
        return None

    def close(self) -> None:
        while self.pending:
            self._report(self.pending.popleft())
        self.pool.shutdown()


def run_classify(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    _check_classify_args(args)
    from .core import images
    from .core.engine import Engine
    from .core.export import format_table, write_results
    from .core.types import ClassifyResult, ExplainOptions, VitDesktopError

    from .core import state

    model, why = (args.model, "") if args.model else default_model()
    bar = ProgressBar(err, "downloading")
    try:
        engine = Engine.load(model, device=args.device, progress=lambda d, t: bar.update(d, t, "B"))
    except VitDesktopError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    chosen = f"; no --model given, so {why}: {model}" if why else ""
    print(f"{PROG}: model {engine.card.name} on {engine.device_name} ({engine.precision}){chosen}", file=err)
    if args.model:
        state.set_last_model(str(Path(model).resolve()) if Path(model).exists() else model)

    files, scan_errors = _collect(args.paths)
    results: list[ClassifyResult] = [ClassifyResult(path=p, error=reason) for p, reason in scan_errors]
    if not args.output:
        out.write(format_table(results, top_k=args.top_k))
    explain = ExplainOptions(args.head_fusion, args.discard_ratio) if args.heatmaps else None
    writer = None
    if args.heatmaps:
        writer = HeatmapWriter(Path(args.heatmaps), {}, overwrite=args.overwrite, err=err)
    rel_of = {str(f): (f, rel) for f, rel in files}
    bar = ProgressBar(err, "classifying")
    done = 0
    try:
        for batch in engine.classify_batches(
            [f for f, _ in files],
            top_k=args.top_k,
            batch_size=args.batch_size,
            explain=explain,
            threshold=args.threshold,
        ):
            for r in batch:
                if writer is not None and r.heatmap is not None:
                    writer.submit(*rel_of[r.path], r.heatmap)
            # Heatmap grids are written out already; keep memory flat over big folders.
            batch = [replace(r, heatmap=None) for r in batch]
            results.extend(batch)
            done += len(batch)
            bar.update(done, len(files))
            if not args.output:
                shown = [replace(r, path=images.display_path(r.path)) for r in batch]
                out.write(format_table(shown, top_k=args.top_k))
                out.flush()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if args.output:
        write_results(results, args.output, top_k=args.top_k, overwrite=args.overwrite)
        failed = sum(1 for r in results if r.error)
        print(f"{PROG}: wrote {len(results)} results to {args.output} ({failed} errors)", file=err)
    return 0


# --------------------------------------------------------------------------------------------
# models


def run_models(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .core import registry

    out.write(registry.format_models_table(registry.list_models()) + "\n")
    return 0


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from .app import main as gui_main

        return gui_main([])
    try:
        if args.command == "classify":
            return run_classify(args, out, err)
        if args.command == "models":
            return run_models(args, out, err)
        if args.command == "finetune":
            from . import cli_finetune

            return cli_finetune.run(args, out=out, err=err)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
