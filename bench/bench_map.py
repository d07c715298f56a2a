"""The map of the photos: how long a layout of 5,000 photos takes, and how well it keeps alike photos together.

    .venv/bin/python bench/bench_map.py [--weights W] [--data ../shared/fewshot-dev] [--n 5000]
        [--dims 192,768] [--repeat 3] [--skip-quality] [--skip-scene]

1. Speed: positions for N photos (random features: the time of principal components does not depend
   on what they mean), best of --repeat; and the window's part, putting N photos on the map's scene
   and painting it once (offscreen Qt).
2. Quality: fewshot-dev's photos (163, five categories) through the product's own path (PrintsRun,
   DeiT-Tiny features): the share of each photo's 5 nearest by features that are among its 5
   nearest on the map, and the share of its 5 nearest on the map of its own category.

Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT / ".." / "shared"


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def speed(n: int, dims: list[int], repeat: int) -> None:
    from vit_desktop.core.library.photo_map import layout

    rng = np.random.default_rng(0)
    for dim in dims:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        t = best_of(repeat, lambda x=x: layout(x))
        print(f"{n} photos of {dim} numbers, principal components: {t:.3f} s (best of {repeat})")


def scene(n: int, repeat: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from vit_desktop.core.library.photo_map import layout
    from vit_desktop.gui.map_view import MapWindow, PhotoMap

    app = QApplication.instance() or QApplication([])
    rng = np.random.default_rng(0)
    xy = layout(rng.standard_normal((n, 192)).astype(np.float32))
    paths = tuple(f"/nowhere/photo{i:05d}.jpg" for i in range(n))
    labels = [f"class {i % 37}" if i % 9 else "none of these" for i in range(n)]
    window = MapWindow(None)
    window.resize(1000, 720)
    window.show()

    def build() -> None:
        window.set_map(PhotoMap(paths, xy), labels, "none of these")
        window.grab()
        app.processEvents()

    t = best_of(repeat, build)
    print(f"{n} photos placed on the map and painted once: {t:.3f} s (best of {repeat})")
    window.close()


def quality(weights: Path, data: Path) -> None:
    from vit_desktop.core.inference.loading import choose_model
    from vit_desktop.core.inference.lookalikes import PrintsRun, run_to_end
    from vit_desktop.core.library.photo_map import layout, neighbours_kept

    with open(data / "labels.csv", newline="", encoding="utf-8") as f:
        category = {str(data / row["file"]): row["class"] for row in csv.DictReader(f)}
    choice = choose_model(str(weights), device="cpu")
    t = time.perf_counter()
    prints = run_to_end(PrintsRun([data], model=choice, hashes=False))
    print(f"features of {len(prints)} photos: {time.perf_counter() - t:.1f} s")
    assert prints.features is not None
    cats = np.array([category[p] for p in prints.paths])
    t = time.perf_counter()
    xy = layout(prints.features)
    took = time.perf_counter() - t
    dist = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(dist, np.inf)
    near = np.argpartition(dist, 5, axis=1)[:, :5]
    same = float(np.mean(cats[near] == cats[:, None]))
    kept = neighbours_kept(prints.features, xy, 5)
    print(f"principal components: 5 nearest by features kept {kept:.3f}, 5 nearest on the map of the own "
          f"category {same:.3f} (chance {chance(cats):.3f}), {took:.3f} s")


def chance(cats: np.ndarray) -> float:
    """The share of the own category among 5 photos picked at random."""
    _names, counts = np.unique(cats, return_counts=True)
    n = len(cats)
    return float(np.sum(counts * (counts - 1)) / (n * (n - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--data", type=Path, default=SHARED / "fewshot-dev")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dims", default="192,768", help="feature sizes: DeiT-Tiny 192, ViT-B 768")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-scene", action="store_true")
    args = ap.parse_args()
    speed(args.n, [int(d) for d in args.dims.split(",")], args.repeat)
    if not args.skip_scene:
        scene(args.n, args.repeat)
    if not args.skip_quality:
        if args.weights.exists() and args.data.is_dir():
            quality(args.weights, args.data)
        else:
            print(f"quality skipped: {args.weights} or {args.data} is missing")


if __name__ == "__main__":
    main()
