"""``vit-desktop finetune``: teach a model the classes of a folder, from the command line.

Per-epoch metrics go to stdout, progress to stderr. Ctrl-C stops training and still saves the
best model seen so far.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from vit_desktop.core.errors import Cancelled
from vit_desktop.core.types import HEAD_CHOICES, TRAINING_MODES, TRAINING_PRECISIONS
from vit_desktop.core.units import format_clock

from .console import PROG, Interrupted, ProgressLine, UsageError

if TYPE_CHECKING:
    from vit_desktop.core.errors import CancelToken
    from vit_desktop.core.training import TrainConfig, TrainProgress, TrainResult
    from vit_desktop.core.training.labelled_set import LabelledSet

    from .console import Subparsers

def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on your own classes (one subfolder per class)",
        description="Fine-tune a model on DATA_DIR (one subfolder per class) and save it as OUT.safetensors.",
    )
    p.add_argument("data", metavar="DATA_DIR", help="folder with one subfolder per class, or a label project file")
    p.add_argument("--base", metavar="MODEL",
                   help="model to start from: a registry name or a checkpoint file (not used by --mode scratch)")
    p.add_argument("--output", "-o", required=True, metavar="OUT.safetensors", help="where to save the new model")
    p.add_argument("--mode", choices=TRAINING_MODES, default="head",
                   help="head: train only a new head on cached features (fast, best for few photos); "
                        "partial: also the last blocks; full: every layer; scratch: a small new ViT")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default depends on --mode)")
    p.add_argument("--val-split", type=float, default=None, metavar="F",
                   help="fraction of each class held out for validation (default: automatic, 20%%)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and training (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", choices=TRAINING_PRECISIONS, default="auto",
                   help="autocast precision (default auto: bf16 on GPUs that have it and on CPUs that compute it "
                        "natively, else fp16 on GPUs and fp32 on CPUs)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default depends on --mode)")
    p.add_argument("--partial-blocks", type=int, default=2, help="--mode partial: blocks to train (default 2)")
    p.add_argument("--head", choices=HEAD_CHOICES, default="auto",
                   help="auto (default): cross-validation on your photos chooses among names (the classes' "
                        "names alone, when the model knows them), hierarchy, blend, probabilities and features")
    p.add_argument("--head-init", choices=("base", "prototype", "linear"), default=None,
                   help="older name for --head: base is auto, prototype and linear are features")
    p.add_argument("--no-augment", action="store_true", help="no random crops or flips while training")
    p.add_argument("--patience", type=int, default=5, help="stop after N epochs without a better validation loss")
    p.add_argument("--image-size", type=int, default=28, help="--mode scratch: input size (default 28)")
    p.add_argument("--patch-size", type=int, default=7, help="--mode scratch: patch size (default 7)")
    p.add_argument("--depth", type=int, default=4, help="--mode scratch: encoder blocks (default 4)")
    p.add_argument("--width", type=int, default=64, help="--mode scratch: hidden width (default 64)")
    p.add_argument("--heads", type=int, default=4, help="--mode scratch: attention heads (default 4)")
    p.add_argument("--color", action="store_true", help="--mode scratch: keep colour (default grayscale)")
    p.add_argument("--name", default=None, help="model name shown in the model picker")
    p.add_argument("--force", action="store_true", help="replace OUT.safetensors if it exists")
    return p


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:6.1%}" if pct else f"{x:.4f}"


def _head(args: argparse.Namespace) -> str:
    if args.head_init is None:
        return str(args.head)
    return "auto" if args.head_init == "base" else "features"


def _config(args: argparse.Namespace) -> TrainConfig:
    from vit_desktop.core.errors import VitDesktopError
    from vit_desktop.core.training import TrainConfig

    try:
        return TrainConfig(
            mode=args.mode,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            partial_blocks=args.partial_blocks,
            augment=not args.no_augment,
            patience=args.patience,
            seed=args.seed,
            val_fraction=args.val_split,
            head=_head(args),
            precision=args.precision,
            image_size=args.image_size,
            patch_size=args.patch_size,
            num_layers=args.depth,
            num_heads=args.heads,
            hidden_dim=args.width,
            mlp_dim=args.width * 2,
            grayscale=not args.color,
        )
    except VitDesktopError as exc:
        raise UsageError(str(exc)) from None


class _Reporter:
    """Per-epoch lines on ``out``; step and feature progress on the progress line."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out = out
        self.line = ProgressLine(err)

    def __call__(self, p: TrainProgress) -> None:
        if p.phase == "val":
            self.line.clear()
            self.out.write(
                f"epoch {p.epoch:3d}/{p.epochs}  loss {_fmt(p.loss)}  acc {_fmt(p.acc, True)}"
                f"  val_loss {_fmt(p.val_loss)}  val_acc {_fmt(p.val_acc, True)}\n"
            )
            self.out.flush()
            return
        eta = f"  ETA {format_clock(p.eta_s)}" if p.eta_s is not None else ""
        self.line.show(f"{p.message}{eta}", force=p.step >= p.steps)


def _load_data(path: Path) -> tuple[LabelledSet, list[tuple[str, str]]]:
    from vit_desktop.core.training.labelled_set import LabelledSet

    if path.is_file():
        data, missing = LabelledSet.load(path)
        return data, [(m, "missing") for m in missing]
    data = LabelledSet.from_folder(path)
    return data, list(data.problems)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``vit-desktop finetune``; returns the exit status."""
    from vit_desktop.core.errors import CancelToken, VitDesktopError

    try:
        return _run(args, out, err, CancelToken())
    except VitDesktopError as exc:
        raise UsageError(str(exc)) from None


def _run(args: argparse.Namespace, out: IO[str], err: IO[str], cancel: CancelToken) -> int:
    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.paths import display_path, display_text
    from vit_desktop.core.training import finetune, train_from_scratch
    from vit_desktop.core.training.results import describe

    output = Path(args.output).expanduser()
    if output.suffix.lower() != ".safetensors":
        raise UsageError(f"{output.name}: the output must be a .safetensors file")
    if output.exists() and not args.force:
        raise UsageError(f"{output} already exists (use --force to replace it)")
    config = _config(args)
    if config.mode != "scratch" and not args.base:
        raise UsageError("--base MODEL is required (except with --mode scratch)")
    data_path = Path(args.data).expanduser()
    if not data_path.exists():
        raise UsageError(f"{data_path}: no such folder")
    data, problems = _load_data(data_path)
    for path, reason in problems:
        err.write(f"skipped {display_path(path)}: {display_text(reason)}\n")
    if config.mode == "scratch":
        data.validate()  # the other modes know which class names the base model knows
    # Class names are folder names: shown as file names are (one line, no terminal codes).
    counts = ", ".join(f"{display_text(c)} {n}" for c, n in data.counts().items())
    err.write(f"{len(data)} photos in {len(data.classes)} classes ({counts})\n")

    job: Callable[[_Reporter], TrainResult]
    if config.mode == "scratch":
        def job(report: _Reporter) -> TrainResult:
            return train_from_scratch(data, config, device=args.device, progress=report, cancel=cancel)
    else:
        err.write(f"loading {args.base}...\n")
        line = ProgressLine(err, "downloading")
        try:
            base = Engine.load(args.base, device=args.device, cancel=cancel, progress=line.bytes)
        finally:
            line.close()
        from vit_desktop.core.inference.devices import choose_precision

        computing = choose_precision(config.precision, base.device, training=True)
        err.write(f"base {display_text(base.card.name)} on {base.device_name}, mode {config.mode}, training in "
                  f"{computing}\n")

        def job(report: _Reporter) -> TrainResult:
            return finetune(base, data, config, progress=report, cancel=cancel)

    reporter = _Reporter(out, err)
    result, stopped_by = _train_interruptibly(job, reporter, cancel, err)

    for path, reason in result.skipped:
        err.write(f"skipped {display_path(path)}: {display_text(reason)}\n")
    if result.skipped:
        err.write(f"{len(result.skipped)} unreadable {'photo' if len(result.skipped) == 1 else 'photos'} skipped\n")
    try:
        result.save(output, name=args.name or output.stem, overwrite=args.force)
    except FileExistsError:
        raise UsageError(f"{output} already exists (use --force to replace it)") from None
    said = describe(result)
    for text in [*said.lines(), *said.details()]:
        out.write(display_text(text) + "\n")
    out.write(f"saved {output}\n")
    out.flush()
    if stopped_by is not None:
        err.write(f"{PROG}: {'terminated' if stopped_by == signal.SIGTERM else 'interrupted'}: "
                  f"saved the best model so far (epoch {result.best_epoch}) to {output}\n")
        return 128 + int(stopped_by)
    return 0


def _train_interruptibly(
    job: Callable[[_Reporter], TrainResult], reporter: _Reporter, cancel: CancelToken, err: IO[str]
) -> tuple[TrainResult, int | None]:
    """Run ``job`` on a worker thread; Ctrl-C or SIGTERM cancels it at its next step and the best
    model so far is returned, with the signal that stopped it. A second Ctrl-C aborts.

    The signals only set the token: the main thread is never interrupted inside ``join`` (on
    Python <= 3.12 an interrupted join leaves the thread looking finished while it still runs).
    """
    box: dict[str, object] = {}
    stopped_by: list[int] = []

    def work() -> None:
        try:
            box["result"] = job(reporter)
        except BaseException as exc:  # noqa: BLE001 - handed back to the main thread
            box["error"] = exc

    def stop(signum: int, _frame: object) -> None:
        if stopped_by and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort without saving
        if not stopped_by:
            stopped_by.append(signum)
            cancel.cancel()
            reporter.line.clear()
            err.write("stopping at the next step: the best model so far will be saved (Ctrl-C again to abort)\n")
            err.flush()

    worker = threading.Thread(target=work, name="finetune", daemon=True)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    reporter.line.clear()
    error = box.get("error")
    signum = stopped_by[0] if stopped_by else None
    if isinstance(error, Cancelled) and signum is not None:
        raise Interrupted(signum)  # stopped before any model existed: nothing to save
    if isinstance(error, BaseException):
        raise error
    from vit_desktop.core.training import TrainResult

    result = box["result"]
    assert isinstance(result, TrainResult)
    return result, signum
