"""``vit-desktop classify``: classify images and folders, write results and heatmaps."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from vit_desktop.core.types import EXPLAIN_METHODS, HEAD_FUSIONS, PRECISIONS

from .choosing import choose
from .console import PROG, ProgressLine, UsageError, check_output
from .outputs import HeatmapWriter, KeywordWriter, Sorter

if TYPE_CHECKING:

    from vit_desktop.core.inference.decoding import Decoding
    from vit_desktop.core.inference.runs import FolderRun
    from vit_desktop.core.io.scan import ScanResult
    from vit_desktop.core.labels.categories import Categories
    from vit_desktop.core.library.store import Library
    from vit_desktop.core.types import ClassifyResult, ExplainOptions, ModelCard

    from .console import Subparsers


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser("classify", help="classify images and folders (recursive)")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    c.add_argument("--model", metavar="NAME_OR_FILE", help="registry name (see 'models') or a checkpoint file/folder")
    c.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image (default 5)")
    c.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    c.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="compute precision (default auto: half on GPUs; on the CPU bf16 where it is native, "
                        "else fp32). int8 (CPU only): the blocks' linears quantised, faster where bf16 is not "
                        "native, 1-2 points less accurate with DeiT-Tiny")
    c.add_argument("--output", metavar="FILE", help="write results to FILE.csv, FILE.json or FILE.jsonl")
    c.add_argument("--heatmaps", metavar="DIR",
                   help="write <name>.png overlays and <name>.npy grids of the --explain map here")
    c.add_argument("--explain", choices=EXPLAIN_METHODS,
                   help="which map --heatmaps writes: rollout (default: where the model looked), class (what its "
                        "top-1 answer rests on, or with --classes the top category's; several times rollout's "
                        "cost) or refined (a class map in two passes: more faithful, twice a class map's cost)")
    c.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean", help="rollout head fusion")
    c.add_argument("--discard-ratio", type=float, default=0.0, metavar="R", help="rollout discard ratio in [0, 1)")
    c.add_argument("--threshold", type=float, default=None, metavar="S",
                   help="mark results whose best score is under S uncertain (default: the model's own rule: a "
                        "fine-tuned model's, calibrated on its photos; with --classes, under 20%% of the "
                        "probability on all the categories; else a best class under 24%%)")
    c.add_argument("--classes", metavar="NAMES",
                   help="zero-shot: classify into these comma-separated categories (\"dog,cat,car\"); a score is "
                        "the model's probability summed over the category's classes. Edit what a name covers "
                        "with \"cat = cat - tiger\" or \"boat = boat + ship.n.01\" (a space before + and -)")
    c.add_argument("--classes-file", metavar="FILE", help="--classes from a file, one name (or NAME = ...) per line")
    c.add_argument("--sort-into", metavar="DIR",
                   help="copy each photo into DIR/<its label>/ (uncertain ones into DIR/uncertain/); never "
                        "moves, never replaces: a name taken gets a number")
    c.add_argument("--xmp", action="store_true",
                   help="write each photo's label as a keyword into its XMP sidecar (photo.jpg.xmp, or an existing "
                        "photo.xmp), where photo managers read it; uncertain photos get none; the photo itself and "
                        "everything else the sidecar holds are left as they are")
    c.add_argument("--overwrite", action="store_true",
                   help="replace existing output and heatmap files (never one of the photos classified)")
    c.add_argument("--fresh", action="store_true",
                   help="classify every photo again instead of reading answers kept in the library (and refresh them)")
    return c


#: Beyond this many images a batch only costs memory (and the device layer splits it anyway).
MAX_BATCH = 1024


def _check_args(args: argparse.Namespace) -> None:
    """Usage errors, and every destination checked before any work is done."""
    from vit_desktop.core.files import cannot_write

    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0.0 <= args.discard_ratio < 1.0:
        raise UsageError("--discard-ratio must be in [0, 1)")
    if args.threshold is not None and not math.isfinite(args.threshold):  # nan: nothing would be uncertain
        raise UsageError("--threshold must be a number, such as 0.5")
    if args.output:
        from vit_desktop.core.io.results_files import format_of

        check_output(args.output, args.overwrite, format_of)
    if args.explain and not args.heatmaps:
        raise UsageError("--explain chooses the map --heatmaps writes: give --heatmaps DIR too")
    if args.classes and args.classes_file:
        raise UsageError("give --classes or --classes-file, not both")
    for option, folder_arg in (("--heatmaps", args.heatmaps), ("--sort-into", args.sort_into)):
        if folder_arg:
            folder = Path(folder_arg)
            if folder.exists() and not folder.is_dir():
                raise UsageError(f"{option} {folder_arg} is a file, not a folder")
            problem = cannot_write(folder / "photo.png")
            if problem:
                raise UsageError(f"{option}: {problem}")


def _folder_run(args: argparse.Namespace, library: Library | None, line: ProgressLine, err: IO[str],
                found: ScanResult, early: Decoding | None) -> FolderRun:
    """The run ``args`` ask for, over ``found`` (the scan of its paths): the model chosen (and loaded,
    unless the library knows it, while ``early`` decodes the first photos), the options checked
    against it."""
    from vit_desktop.core.inference.decoding import loading
    from vit_desktop.core.inference.options import ClassifyOptions
    from vit_desktop.core.inference.runs import FolderRun

    with loading(early) if early is not None else contextlib.nullcontext():
        choice = choose(args.model, device=args.device, precision=args.precision, library=library, err=err,
                        line=line)
    categories = _categories(args, choice.card, err)
    n_classes = len(categories.names) if categories is not None else choice.card.num_classes
    top_k = min(args.top_k, n_classes)
    if top_k < args.top_k:
        what = "categories" if categories is not None else "model's"
        print(f"{PROG}: --top-k {args.top_k} is more than the {what} {top_k} classes: showing {top_k}", file=err)
    batch_size = min(args.batch_size, MAX_BATCH)
    if batch_size < args.batch_size:
        print(f"{PROG}: --batch-size {args.batch_size} is more than a batch can use: {batch_size}", file=err)
    options = ClassifyOptions(top_k=top_k, batch_size=batch_size, explain=_explain_options(args, categories, err),
                              threshold=args.threshold, categories=categories, keep_images=bool(args.heatmaps))
    # Maps need the photo itself: a run that writes them computes every photo (and stores the answers).
    return FolderRun(choice, args.paths, options, library=library, reuse=not (args.fresh or args.heatmaps),
                     found=found, decoding=early)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    _check_args(args)
    # Only what every run needs is imported here: a run answered from the library never imports
    # torch (the engine and the registry do), and ends in well under a second.
    from vit_desktop.core.inference.runs import decoding_before_load
    from vit_desktop.core.io.results_files import format_table
    from vit_desktop.core.io.scan import scan
    from vit_desktop.core.library.store import Library
    from vit_desktop.core.paths import display_path, display_text

    line = ProgressLine(err, "downloading")

    library = Library.open(on_problem=line.say)
    # A model loaded for the first time: its file's header says how photos are prepared, so the
    # first ones are decoded meanwhile (a known model's run does that itself). Maps keep whole photos.
    found = scan(args.paths)
    early = None
    if args.model and not args.heatmaps:
        early = decoding_before_load(args.model, found.files, library=library, device=args.device,
                                     precision=args.precision)
    try:
        folder_run = _folder_run(args, library, line, err, found, early)
    except BaseException:
        if early is not None:
            early.close()
        raise
    top_k = folder_run.options.top_k
    print(f"{PROG}: {display_text(folder_run.rule.describe())}", file=err)
    if folder_run.duplicates:
        twice = folder_run.duplicates
        print(f"{PROG}: {twice} duplicate{'s' if twice != 1 else ''} skipped "
              "(the same file given twice or reached through a link)", file=err)
    writer = (HeatmapWriter(Path(args.heatmaps), overwrite=args.overwrite, err=err, photos=folder_run.files)
              if args.heatmaps else None)
    sorter = Sorter(Path(args.sort_into), err) if args.sort_into else None
    keywords = KeywordWriter(err) if args.xmp else None
    results: list[ClassifyResult] = []
    line = ProgressLine(err, "classifying")
    finished = False
    try:
        for step in folder_run.steps():
            for r in step.results:
                if writer is not None and r.heatmap is not None:
                    writer.submit(Path(r.path), folder_run.relative_path(r.path), r.heatmap, r.image)
                for n in r.notes:
                    line.clear()
                    print(f"{PROG}: {display_path(r.path)}: {display_text(n)}", file=err)
                if sorter is not None:
                    sorter.copy(r, line)
                if keywords is not None:
                    keywords.write(r, line)
            # Heatmaps are written out already; keep memory flat over big folders.
            batch = [replace(r, heatmap=None, image=None) for r in step.results]
            results.extend(batch)
            if folder_run.total:
                line.bar(step.done, folder_run.total)
            if not args.output:
                out.write(format_table(batch, top_k=top_k))
                out.flush()
        finished = True
    finally:
        line.close()
        folder_run.close()  # a run stopped early: its decoding (and decoding child) ends here
        if writer is not None:
            writer.close(cancel=not finished)
        if library is not None:
            library.close()
    if library is not None and folder_run.files:
        print(f"{PROG}: {_sources(folder_run)}", file=err)
    status = 0
    if writer is not None and writer.failed:
        unwritten = writer.failed
        print(f"{PROG}: error: the heatmaps of {unwritten} photo{'s' if unwritten != 1 else ''} could not be "
              "written", file=err)
        status = 1
    if sorter is not None:
        status = sorter.report() or status
    if keywords is not None:
        status = keywords.report() or status
    if args.output:
        return _write_output(results, Path(args.output), top_k, args.overwrite, err) or status
    return status


def _sources(run: FolderRun) -> str:
    """Where the answers came from: "812 from the library, 1 classified"."""
    parts = [f"{run.from_library} from the library"]
    if run.from_features:
        parts.append(f"{run.from_features} from stored features")
    parts.append(f"{run.classified} classified")
    if run.unreadable:
        parts.append(f"{run.unreadable} could not be read")
    return ", ".join(parts)


def _explain_options(args: argparse.Namespace, categories: Categories | None, err: IO[str]) -> ExplainOptions | None:
    """The map --heatmaps writes, said once on stderr when it is a class map."""
    from vit_desktop.core.types import ExplainOptions

    if not args.heatmaps:
        return None
    method = args.explain or "rollout"
    if method != "rollout":
        of = "top category" if categories is not None else "top-1 class"
        kind = "refined class map" if method == "refined" else "class map"
        print(f"{PROG}: heatmaps: the {kind} of each photo's {of}", file=err)
        if args.head_fusion != "mean" or args.discard_ratio:
            print(f"{PROG}: note: --head-fusion and --discard-ratio shape rollout only; a class map ignores "
                  "them", file=err)
    return ExplainOptions(args.head_fusion, args.discard_ratio, method)


def _categories(args: argparse.Namespace, card: ModelCard, err: IO[str]) -> Categories | None:
    """The named categories of --classes / --classes-file, resolved over the model's hierarchy."""
    if not args.classes and not args.classes_file:
        return None
    from vit_desktop.core.errors import VitDesktopError
    from vit_desktop.core.labels.categories import Categories, hierarchy_for, no_hierarchy_reason, parse_names

    if args.classes_file:
        try:
            text = Path(args.classes_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--classes-file {args.classes_file}: {exc}") from None
    else:
        text = args.classes
    hierarchy = hierarchy_for(card)
    if hierarchy is None:
        raise UsageError(f"--classes: {no_hierarchy_reason(card)}")
    try:
        categories = Categories.from_names(parse_names(text), hierarchy)
    except VitDesktopError as exc:
        raise UsageError(f"--classes: {exc}") from None
    meanings = ", ".join(f"{n} = {m}" for n, m in zip(categories.names, categories.meanings))
    print(f"{PROG}: categories: {meanings}", file=err)
    for note in categories.notes:
        print(f"{PROG}: note: {note}", file=err)
    return categories


def _write_output(results: Sequence[ClassifyResult], output: Path, top_k: int, overwrite: bool, err: IO[str]) -> int:
    """Write the results where asked; if that fails after all (a full disk), keep them in the data
    folder and say where: a run is never lost."""
    import time

    from vit_desktop.core.files import fit_name, os_reason
    from vit_desktop.core.io.results_files import write_results
    from vit_desktop.core.paths import data_dir

    failed = sum(1 for r in results if r.error)
    try:
        write_results(results, output, top_k=top_k, overwrite=overwrite)
    except OSError as exc:
        reason = os_reason(exc)
        folder = data_dir() / "unsaved results"
        stamp = f"-{time.strftime('%Y%m%d-%H%M%S')}"
        # Never replaced: two runs failing in the same second each keep their own file.
        for n in itertools.count():
            fallback = folder / fit_name(output.stem, f"{stamp}{f' ({n})' if n else ''}{output.suffix}")
            try:
                write_results(results, fallback, top_k=top_k)
                break
            except FileExistsError:
                continue
            except OSError as again:
                print(f"{PROG}: error: could not write {output} ({reason}) nor {fallback} "
                      f"({os_reason(again)}): the results are lost", file=err)
                return 1
        print(f"{PROG}: error: could not write {output} ({reason}); the {len(results)} results are in "
              f"{fallback}", file=err)
        return 1
    print(f"{PROG}: wrote {len(results)} results to {output} ({failed} errors)", file=err)
    return 0
