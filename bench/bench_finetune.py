"""Fine-tuning benchmark on the shared DeiT-Tiny and photos: time per epoch and validation accuracy.

    .venv/bin/python bench/bench_finetune.py [--weights W] [--photos DIR] [--device auto]
        [--modes head,partial,full] [--epochs 4] [--seeds 0,1,2] [--skip-heads]

Two parts:

1. Few-shot head strategies (``TrainConfig.head_init``), on three tasks built from the photos:
   * ``crops/named``: each class is one photo seen through different crops and flips, named by its
     ImageNet class ("jay"), so the base head's own rows can be matched by name;
   * ``crops/anon``: the same photos, classes renamed "class 1", "class 2"... (no name match);
   * ``groups/held-out``: photos grouped into broader classes ("dog": three breeds...), validated
     on crops of a photo never seen in training: the hardest and most realistic.
2. Modes head / partial / full on the same data (``--task``): seconds per epoch (after the
   features pass; head epochs run on cached features) and validation accuracy.

Not part of the test run; prints figures only.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop.core.data import LabelledSet
from vit_desktop.core.engine import Engine
from vit_desktop.core.training import HEAD_INITS, TrainConfig, TrainProgress, finetune

SHARED = ROOT / ".." / "shared"
GROUPS = {
    "dog": ["otterhound", "Border_collie", "bull_mastiff"],
    "fish": ["anemone_fish", "lionfish"],
    "reptile": ["box_turtle", "Indian_cobra"],
    "music": ["maraca", "ocarina"],
    "clothing": ["poncho", "mask"],
}


def _crops(photo: Path, n: int, rng: random.Random) -> list[Image.Image]:
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    out = []
    for i in range(n):
        s = rng.uniform(0.5, 0.9)
        cw, ch = int(w * s), int(h * s)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        c = img.crop((x, y, x + cw, y + ch))
        out.append(c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else c)
    return out


def _write(root: Path, cls: str, images: list[Image.Image], tag: str) -> list[tuple[Path, str]]:
    (root / cls).mkdir(parents=True, exist_ok=True)
    items = []
    for i, im in enumerate(images):
        p = root / cls / f"{tag}_{i}.jpg"
        im.save(p, quality=90)
        items.append((p, cls))
    return items


def crop_task(photos: Path, rows: list[dict[str, str]], root: Path, per_class: int, named: bool,
              seed: int) -> tuple[LabelledSet, None]:
    rng = random.Random(seed)
    items: list[tuple[Path, str]] = []
    classes = []
    for k, r in enumerate(rows):
        cls = r["name"] if named else f"class {k + 1}"
        classes.append(cls)
        items += _write(root, cls, _crops(photos / r["file"], per_class, rng), "c")
    return LabelledSet(tuple(classes), tuple(items)), None


def group_task(photos: Path, rows: list[dict[str, str]], root: Path, per_photo: int,
               seed: int) -> tuple[LabelledSet, LabelledSet]:
    """Train on crops of all but one photo per group; validate on crops of the held-out photo."""
    rng = random.Random(seed)
    by_name = {r["name"]: r for r in rows}
    train: list[tuple[Path, str]] = []
    val: list[tuple[Path, str]] = []
    for cls, names in GROUPS.items():
        order = names[:]
        rng.shuffle(order)
        for j, name in enumerate(order):
            crops = _crops(photos / by_name[name]["file"], per_photo, rng)
            (val if j == 0 else train).extend(_write(root, cls, crops, f"{name}"))
    classes = tuple(GROUPS)
    return LabelledSet(classes, tuple(train)), LabelledSet(classes, tuple(val))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--photos", type=Path, default=SHARED / "photos")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modes", default="head,partial,full")
    ap.add_argument("--epochs", type=int, default=4, help="epochs for partial/full")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--skip-heads", action="store_true", help="skip the head strategy comparison")
    ap.add_argument("--task", choices=("groups", "crops"), default="groups", help="data for the mode comparison")
    ap.add_argument("--head-init", choices=HEAD_INITS, default="base", help="head strategy for the mode comparison")
    args = ap.parse_args()
    if not args.weights.is_file():
        print(f"no weights at {args.weights}: this benchmark needs the shared DeiT-Tiny", file=sys.stderr)
        return 2
    with open(args.photos / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    base = Engine.load(args.weights, device=args.device)
    print(f"base {base.card.name} on {base.device_name} (loaded in {time.perf_counter() - t0:.1f} s)")
    few = [r for r in rows if r["name"] in ("jay", "box_turtle", "lionfish", "coffee_mug", "maze", "stethoscope",
                                            "guenon", "crane")]

    if not args.skip_heads:
        print("\n1. few-shot head strategies: validation accuracy, mean over seeds "
              f"{seeds} (head-only, cached features)")
        print(f"{'task':<34}" + "".join(f"{h:>12}" for h in HEAD_INITS))
        tasks = [
            ("crops/named, 8 classes x 5", lambda root, s: crop_task(args.photos, few, root, 5, True, s)),
            ("crops/anon, 8 classes x 5", lambda root, s: crop_task(args.photos, few, root, 5, False, s)),
            ("crops/anon, 8 classes x 3", lambda root, s: crop_task(args.photos, few, root, 3, False, s)),
            ("groups/held-out, 5 classes", lambda root, s: group_task(args.photos, rows, root, 6, s)),
        ]
        for title, build in tasks:
            accs: dict[str, list[float]] = {h: [] for h in HEAD_INITS}
            for s in seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    data, val = build(Path(tmp), s)
                    for h in HEAD_INITS:
                        cfg = TrainConfig(mode="head", head_init=h, seed=s,
                                          val_fraction=0.4 if val is None else None)
                        accs[h].append(finetune(base, data, cfg, val_data=val).val_accuracy)
            print(f"{title:<34}" + "".join(f"{statistics.mean(v):>11.1%} " for v in accs.values()))

    if args.task == "groups":
        title = "groups/held-out, 5 classes, validated on unseen photos"
    else:
        title = "crops/anon, 8 classes x 10 crops, 40 % validation"
    print(f"\n2. modes on {title}, head {args.head_init}, seed {seeds[0]}")
    print(f"{'mode':<10}{'epochs':>8}{'s/epoch':>10}{'features s':>12}{'total s':>10}{'best':>6}{'val acc':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.task == "groups":
            data, val = group_task(args.photos, rows, Path(tmp), 6, seeds[0])
        else:
            data, val = crop_task(args.photos, few, Path(tmp), 10, False, seeds[0])
        for mode in args.modes.split(","):
            marks: dict[str, float] = {}

            def on_progress(p: TrainProgress, marks: dict[str, float] = marks) -> None:
                now = time.perf_counter()
                if p.phase == "features" and p.step == p.steps:
                    marks["features_end"] = now
                if p.phase == "train" and "train_start" not in marks:
                    marks["train_start"] = now
                if p.phase == "val":
                    marks.setdefault("first_val", now)
                    marks["last_val"] = now

            epochs = None if mode == "head" else args.epochs
            cfg = TrainConfig(mode=mode, epochs=epochs, seed=seeds[0], val_fraction=None if val else 0.4,
                              batch_size=16, patience=100, head_init=args.head_init)
            start = time.perf_counter()
            result = finetune(base, data, cfg, val_data=val, progress=on_progress)
            total = time.perf_counter() - start
            run_epochs = int(result.metrics["epochs_run"])  # type: ignore[call-overload]
            feats = marks.get("features_end", start) - start
            if mode == "head":
                per_epoch = (marks.get("last_val", start) - marks.get("features_end", start)) / max(1, run_epochs)
            else:
                per_epoch = (marks.get("last_val", start) - marks.get("train_start", start)) / max(1, run_epochs)
            print(f"{mode:<10}{run_epochs:>8}{per_epoch:>10.3f}{feats:>12.1f}{total:>10.1f}{result.best_epoch:>6}"
                  f"{result.val_accuracy:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
