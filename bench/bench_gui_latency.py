"""How responsive the window stays while a folder streams through the model.

A precise ``QTimer`` fires every 5 ms on the GUI thread; each tick records how late it came
(elapsed since the previous tick minus 5 ms). A stalled GUI thread (a decode, a layout pass, a
long slot) shows up as a late tick. The window is really shown (offscreen by default), the
gallery paints thumbnails and the detail view follows the selection, as for a user.

Also measured: start-up, from launching a fresh interpreter to the window being shown.

    python bench/bench_gui_latency.py [--images 200] [--model PATH] [--size 640x480]
    python bench/bench_gui_latency.py --gallery 5000   # the gallery alone: insert + scroll
    python bench/bench_gui_latency.py --photos ../shared/photos --images 400 --precision fp32 --cli --repeats 3

``--photos DIR`` runs copies of the photos in DIR instead of made-up JPEGs; ``--precision`` is the
window's Precision menu; ``--cli`` also times ``vit-desktop classify --fresh`` on the same photos at
the same precision and batch size (in a process that has imported torch and loaded the model once,
as the window has), interleaved with the window's runs, so that the two read alike.

``--gallery N`` skips the model: it streams N ready-made results into the gallery in batches of
16 (as a run would) while scrolling it continuously, so that thumbnail decoding, sorting and
painting of thousands of items are measured on their own.

Without ``--model`` the real DeiT-Tiny from ``../shared/weights`` is used when present, else a
tiny random ViT (which measures the GUI's own overhead, not the model); ``--tiny`` forces it.

Measured on the development machine (2 shared CPU cores, load average about 4 from other work,
no GPU, offscreen platform):

- start-up to window shown: 544, 450, 451 ms (median 451 ms; torch is not imported until the
  window is up);
- folder run, DeiT-Tiny with rollout heatmaps, 200 JPEGs of 640x480: 5.2 images/s; event-loop
  lateness p50 0.1 ms, p95 7.0 ms, p99 15.0 ms, max 99.9 ms; later, on a quiet machine and with
  the faster CPU forward and allocator setting: 27.4 images/s, lateness p50 0.2 ms, p95 3.0 ms,
  p99 11.2 ms, max 125.7 ms (start-up 452-611 ms);
- folder run, tiny random ViT, 1000 JPEGs (about 95 images/s, the GUI's own load): p99 26-44 ms
  across runs, max 75-176 ms;
- ``--gallery 5000`` (sorted by score, scrolling): p99 15.1 ms, max 36.8 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DEIT = REPO.parent / "shared" / "weights" / "deit_tiny_patch16_224.safetensors"
PERIOD_MS = 5

STARTUP_SNIPPET = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
import vit_desktop.gui.app  # what the entry point imports before main()
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
from vit_desktop.gui.main_window import MainWindow
from vit_desktop.gui.style import apply_style
app = QApplication([])
apply_style(app)
w = MainWindow(settings=QSettings({ini!r}, QSettings.Format.IniFormat))
w.show()
app.processEvents()
print("shown", time.perf_counter() - t0, flush=True)
w.shutdown()
"""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure_startup(runs: int = 3) -> list[float]:
    """Seconds from spawning ``python`` to the window being shown, per run."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        code = STARTUP_SNIPPET.format(repo=str(REPO), ini=str(Path(tmp) / "s.ini"))
        env = dict(os.environ, VIT_DESKTOP_DATA_DIR=tmp)
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("shown"):
                    out.append(time.perf_counter() - t0)
            proc.wait()
    return out


def make_images(folder: Path, n: int, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    # Smooth gradients plus noise: JPEGs of realistic size and decode cost, cheap to make.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        c = rng.uniform(0, 255, (3,))
        img = (c[None, None, :] * (0.5 + 0.5 * np.sin(xx[..., None] / (20 + i % 30) + yy[..., None] / 37 + i))
               + rng.normal(0, 12, (h, w, 3)))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:04d}.jpg", quality=88)


def tiny_model(path: Path) -> Path:
    import torch

    from vit_desktop.core.models.model_file import save_model
    from vit_desktop.core.models.vit import build_module
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    arch = Architecture(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                        num_classes=3)
    card = ModelCard(name="tiny", kind="file", source="", arch=arch, labels=("a", "b", "c"),
                     preprocess=Preprocess(crop_size=32, resize_size=36))
    torch.manual_seed(0)
    return save_model(path, build_module(arch).eval(), card)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiny", action="store_true", help="a tiny random ViT: the GUI's own overhead at high rates")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--gallery", type=int, default=0, metavar="N")
    parser.add_argument("--photos", default=None, metavar="DIR", help="copies of these photos instead of made-up ones")
    parser.add_argument("--precision", default="auto", help="the window's precision (and the command line's)")
    parser.add_argument("--cli", action="store_true", help="also classify the same photos on the command line")
    parser.add_argument("--repeats", type=int, default=1, help="window runs (each in a fresh process with --cli)")
    parser.add_argument("--one-window-run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-cli-run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_cli_run:
        return cli_runs(Path(args.one_cli_run), args.model or str(SHARED_DEIT), args.precision, args.repeats)
    if args.cli or args.repeats > 1:
        return compare(args)
    if args.gallery:
        return bench_gallery(args.gallery)

    if not args.no_startup:
        times = measure_startup()
        print(f"start-up to window shown: {', '.join(f'{t * 1000:.0f}' for t in times)} ms "
              f"(median {percentile(times, 0.5) * 1000:.0f} ms)")

    from PySide6.QtCore import QElapsedTimer, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from vit_desktop.gui.jobs import Outcome
    from vit_desktop.gui.main_window import MainWindow
    from vit_desktop.gui.style import apply_style

    w_px, h_px = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        os.environ["VIT_DESKTOP_DATA_DIR"] = str(tmpdir / "data")
        if args.one_window_run:
            folder = Path(args.one_window_run)
        else:
            folder = tmpdir / "images"
            folder.mkdir()
            fill_folder(folder, args.images, args.photos, (w_px, h_px))
        if args.tiny or (not args.model and not SHARED_DEIT.is_file()):
            model = str(tiny_model(tmpdir / "tiny.safetensors"))
        else:
            model = args.model or str(SHARED_DEIT)

        app = QApplication([sys.argv[0]])
        apply_style(app)
        qsettings = QSettings(str(tmpdir / "s.ini"), QSettings.Format.IniFormat)
        qsettings.setValue("model/precision", args.precision)
        window = MainWindow(settings=qsettings)
        window.resize(1280, 800)
        window.show()

        lateness: list[float] = []
        clock = QElapsedTimer()
        probe = QTimer()
        probe.setTimerType(Qt.TimerType.PreciseTimer)
        probe.setInterval(PERIOD_MS)
        state = {"recording": False, "run_s": 0.0, "t_run": 0.0, "cancelled": False, "n": 0}

        def tick() -> None:
            if state["recording"]:
                lateness.append(max(0.0, clock.nsecsElapsed() / 1e6 - PERIOD_MS))
            clock.restart()

        def loaded(_m: object) -> None:
            current, card = window.controller.current_model, window.controller.current_card
            assert current is not None and card is not None  # model_changed: a model is loaded
            print(f"model: {card.name} on {current.device_name}, {current.precision}")
            state["recording"] = True
            clock.restart()
            state["t_run"] = time.perf_counter()
            window.intake.add_paths([str(folder)])

        def finished(outcome: object) -> None:
            state["recording"] = False
            state["run_s"] = time.perf_counter() - state["t_run"]
            state["cancelled"] = outcome is not Outcome.DONE
            state["n"] = window.results_model.rowCount()
            app.quit()

        def load_failed(message: str) -> None:
            print(f"the model could not be loaded: {message}")
            app.quit()

        probe.timeout.connect(tick)
        window.controller.model_changed.connect(loaded)
        window.run_status.run_finished.connect(finished)
        probe.start()
        window.models.load_model(model).errored.connect(load_failed)
        QTimer.singleShot(600_000, app.quit)
        app.exec()
        window.shutdown()

    n = state["n"]
    if not lateness:
        return 1
    print(f"folder run: {n} images of {w_px}x{h_px} in {state['run_s']:.1f} s "
          f"({n / max(state['run_s'], 1e-9):.1f} images/s){' (cancelled)' if state['cancelled'] else ''}")
    print(f"event-loop lateness over {len(lateness)} ticks of {PERIOD_MS} ms: "
          f"p50 {percentile(lateness, 0.5):.1f} ms, p95 {percentile(lateness, 0.95):.1f} ms, "
          f"p99 {percentile(lateness, 0.99):.1f} ms, max {max(lateness, default=float('nan')):.1f} ms")
    return 0


def fill_folder(folder: Path, n: int, photos: str | None, size: tuple[int, int]) -> None:
    """``n`` made-up JPEGs of ``size``, or copies of the photos in ``photos``."""
    import shutil

    if photos is None:
        make_images(folder, n, size)
        return
    from vit_desktop.core.io.images import IMAGE_SUFFIXES

    sources = sorted(p for p in Path(photos).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for i in range(n):
        shutil.copy(sources[i % len(sources)], folder / f"{i:04d}_{sources[i % len(sources)].name}")


def cli_runs(folder: Path, model: str, precision: str, repeats: int) -> int:
    """``vit-desktop classify --fresh`` on ``folder`` in this process, after one warm-up run (torch
    imported, as the window has it); prints images/s of each run."""
    import io

    from vit_desktop import cli

    n = len(list(folder.iterdir()))
    argv = ["classify", str(folder), "--model", model, "--precision", precision, "--fresh", "--output",
            str(folder.parent / "out.jsonl"), "--overwrite"]
    cli.main([*argv[:1], str(next(folder.iterdir())), *argv[2:]], out=io.StringIO(), err=io.StringIO())
    for _ in range(repeats):
        started = time.perf_counter()
        if cli.main(argv, out=io.StringIO(), err=io.StringIO()) != 0:
            return 1
        print(f"cli {n / (time.perf_counter() - started):.2f}", flush=True)
    return 0


def compare(args: argparse.Namespace) -> int:
    """Window runs and command-line runs on the same photos, interleaved, each window run in a fresh process."""
    import statistics

    w_px, h_px = (int(v) for v in args.size.lower().split("x"))
    window: list[float] = []
    cli: list[float] = []
    late: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        fill_folder(folder, args.images, args.photos, (w_px, h_px))
        model = args.model or str(SHARED_DEIT)
        base = [sys.executable, __file__, "--model", model, "--precision", args.precision]
        for _ in range(args.repeats):
            out = subprocess.run([*base, "--no-startup", "--one-window-run", str(folder)], capture_output=True,
                                 text=True, env=dict(os.environ, VIT_DESKTOP_DATA_DIR=str(Path(tmp) / "d1")))
            for line in out.stdout.splitlines():
                if line.startswith("folder run:"):
                    window.append(float(line.split("(")[1].split()[0]))
                elif line.startswith("event-loop"):
                    late.append(line.split(": ", 1)[1])
                elif line.startswith("model:"):
                    print(line)
            if args.cli:
                out = subprocess.run([*base, "--one-cli-run", str(folder)], capture_output=True, text=True,
                                     env=dict(os.environ, VIT_DESKTOP_DATA_DIR=str(Path(tmp) / "d2")))
                cli += [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("cli ")]
            print(f"  window {window[-1] if window else float('nan'):.1f} img/s"
                  + (f", classify {cli[-1]:.1f} img/s" if cli else "") + f"; load average {os.getloadavg()[0]:.2f}",
                  flush=True)

    def spread(v: list[float]) -> str:
        return f"median {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "failed"

    print(f"{args.images} photos, precision {args.precision}, {args.repeats} interleaved runs, images/s:")
    print(f"  window folder run      {spread(window)}")
    if args.cli:
        print(f"  vit-desktop classify   {spread(cli)}")
    for line in late:
        print(f"  window lateness: {line}")
    return 0


def bench_gallery(n: int) -> int:
    """Stream ``n`` results into a sorted gallery while it scrolls; report event-loop lateness."""
    from PySide6.QtCore import QElapsedTimer, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from vit_desktop.core.types import ClassifyResult, Prediction
    from vit_desktop.gui.main_window import MainWindow
    from vit_desktop.gui.style import apply_style

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        src = tmpdir / "src"
        src.mkdir()
        make_images(src, 50, (640, 480))
        sources = sorted(src.iterdir())
        files = []
        for i in range(n):  # hard links: n distinct paths, thumbnails really decoded, little disk
            f = tmpdir / f"g{i:05d}.jpg"
            os.link(sources[i % len(sources)], f)
            files.append(str(f))
        labels = ["tabby cat", "golden retriever", "wall clock", "tennis ball", "traffic light", "maze"]
        results = [ClassifyResult(path=f, predictions=(Prediction(labels[i % 6], i % 6, (i * 37 % 100) / 100),),
                                  uncertain=(i * 37 % 100) < 50, image_size=(640, 480))
                   for i, f in enumerate(files)]

        app = QApplication([sys.argv[0]])
        apply_style(app)
        window = MainWindow(settings=QSettings(str(tmpdir / "s.ini"), QSettings.Format.IniFormat))
        window.resize(1280, 800)
        window.show()
        window.pane.sort_combo.setCurrentIndex(3)  # score, high first: every batch re-sorts
        lateness: list[float] = []
        clock = QElapsedTimer()
        state: dict[str, Any] = {"next": 0, "t0": time.perf_counter()}

        def tick() -> None:
            lateness.append(max(0.0, clock.nsecsElapsed() / 1e6 - PERIOD_MS))
            clock.restart()

        def feed() -> None:
            i = state["next"]
            if i >= n:
                return
            window.results_model.add_results(results[i:i + 16])
            state["next"] = i + 16

        def scroll() -> None:
            bar = window.gallery.verticalScrollBar()
            bar.setValue(bar.value() + 40 if bar.value() < bar.maximum() else 0)
            if state["next"] >= n and time.perf_counter() - state["t0"] > 2 + n / 16 * 0.02:
                app.quit()

        probe = QTimer()
        probe.setTimerType(Qt.TimerType.PreciseTimer)
        probe.timeout.connect(tick)
        probe.start(PERIOD_MS)
        feeder = QTimer()
        feeder.timeout.connect(feed)
        feeder.start(20)  # a batch every 20 ms: faster than any model here delivers them
        scroller = QTimer()
        scroller.timeout.connect(scroll)
        scroller.start(16)
        clock.restart()
        app.exec()
        rows = window.results_model.rowCount()
        window.shutdown()
    print(f"gallery: {rows} items streamed in batches of 16 while scrolling, sorted by score")
    print(f"event-loop lateness over {len(lateness)} ticks of {PERIOD_MS} ms: "
          f"p50 {percentile(lateness, 0.5):.1f} ms, p95 {percentile(lateness, 0.95):.1f} ms, "
          f"p99 {percentile(lateness, 0.99):.1f} ms, max {max(lateness, default=float('nan')):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
