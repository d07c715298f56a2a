"""Few-shot benchmark: every head, and zero-shot by names, on photos of sub-types training never saw.

    .venv/bin/python bench/bench_finetune.py [--weights W] [--data ../shared/fewshot-dev] [--device auto]
        [--seeds 0,1,2,3,4] [--modes partial,full] [--epochs 4]

``fewshot-dev`` holds photos in five broad categories, every photo a different ImageNet class. Each
seed splits it half to train, half to test, stratified by category, so no test photo's ImageNet
class occurs among the training photos: the honest test of "teach it broad classes from a handful
of photos" (a random split of the same sub-types flatters every method).

1. Per head (``TrainConfig.head``) and for "auto" (cross-validation on the training half chooses):
   test accuracy, mean and spread over the seeds, and the time to fit; zero-shot by the category
   names (no photos at all). Features and the base model's logits are computed once per photo
   through the product's own forward; every head is then the product's code on them, and one
   end-to-end ``finetune`` per seed (photos decoded as the engine decodes them, JPEG draft mode
   included) shows the whole path agrees.
2. ``--modes``: partial / full fine-tuning from the chosen head on the first seed: seconds and
   test accuracy.

Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.io.images import load_image
from vit_desktop.core.labels.categories import Categories, hierarchy_for, resolve_some
from vit_desktop.core.models import vit
from vit_desktop.core.models.preprocess import normalized_tensor
from vit_desktop.core.training import TrainConfig, finetune
from vit_desktop.core.training.fewshot import HEADS, HeadData, candidates, select_head
from vit_desktop.core.training.labelled_set import LabelledSet

SHARED = ROOT / ".." / "shared"


def features(engine: Engine, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(features after any pre-logits layer, base logits) of every photo, through the product's forward."""
    feats, logits = [], []
    with torch.inference_mode():
        for i in range(0, len(paths), 32):
            x = torch.stack([normalized_tensor(load_image(p), engine.card.preprocess) for p in paths[i:i + 32]])
            f = vit.features(engine.module, x.to(engine.device))
            feats.append(f.float().cpu())
            logits.append(vit.classifier(engine.module)(f).float().cpu())
    return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


def split_half(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Half of every category to train (the larger half of an odd one alternating with the seed)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    for i, c in enumerate(np.unique(y)):
        idx = rng.permutation(np.flatnonzero(y == c))
        train += idx[: (len(idx) + (i + seed) % 2) // 2].tolist()
    train_idx = np.array(sorted(train))
    return train_idx, np.setdiff1d(np.arange(len(y)), train_idx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--data", type=Path, default=SHARED / "fewshot-dev")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--modes", default="", help="also time partial/full fine-tuning, e.g. partial,full")
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    if not args.weights.is_file() or not args.data.is_dir():
        print(f"needs the shared DeiT-Tiny ({args.weights}) and photos ({args.data})", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    data = LabelledSet.from_folder(args.data)
    classes = data.classes
    paths = [p for p, _ in data.items]
    y = np.array(data.targets())
    base = Engine.load(args.weights, device=args.device)
    tree = hierarchy_for(base.card)
    assert tree is not None
    print(f"{base.card.name} on {base.device_name}; {len(paths)} photos in {len(classes)} categories "
          f"({', '.join(f'{c} {n}' for c, n in data.counts().items())}); seeds {seeds}")

    t0 = time.perf_counter()
    feats, logits = features(base, paths)
    everything = HeadData(logits, feats, y)
    print(f"features and logits of every photo: {time.perf_counter() - t0:.1f} s\n")

    names = resolve_some(classes, tree)
    zero = Categories.from_names(classes, tree)
    acc: dict[str, list[float]] = {h: [] for h in ("zero-shot (names)", "auto", *HEADS)}
    secs: dict[str, list[float]] = {h: [] for h in acc}
    picked: list[str] = []
    end_to_end: list[tuple[float, float]] = []
    for seed in seeds:
        tr, te = split_half(y, seed)
        train, test = everything.take(tr), everything.take(te)
        start = time.perf_counter()
        scores = zero.scores(np.exp(test.log_p))
        secs["zero-shot (names)"].append(time.perf_counter() - start)
        acc["zero-shot (names)"].append(float((scores.argmax(1) == test.y).mean()))
        for head in candidates(len(classes), names, tree):
            start = time.perf_counter()
            params = head.fit(train, len(classes))
            secs[head.name].append(time.perf_counter() - start)
            acc[head.name].append(float((params.log_proba(test).argmax(1) == test.y).mean()))
        start = time.perf_counter()
        choice = select_head(train, len(classes), candidates(len(classes), names, tree), seed=seed)
        secs["auto"].append(time.perf_counter() - start)
        acc["auto"].append(float((choice.params.log_proba(test).argmax(1) == test.y).mean()))
        picked.append(choice.name)
        # The product end to end (photos decoded, features, selection): the same answer.
        train_set = LabelledSet(classes, tuple(data.items[i] for i in tr))
        test_set = LabelledSet(classes, tuple(data.items[i] for i in te))
        start = time.perf_counter()
        result = finetune(base, train_set, TrainConfig(mode="head", seed=seed), val_data=test_set)
        end_to_end.append((result.val_accuracy, time.perf_counter() - start))

    print(f"1. test accuracy on held-out sub-types ({len(seeds)} seeds, half train / half test)")
    print(f"{'head':<22}{'mean':>8}{'sd':>7}{'min':>7}{'max':>7}{'fit s':>9}")
    for h, v in acc.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{h:<22}{statistics.mean(v):>8.1%}{sd:>7.1%}{min(v):>7.1%}{max(v):>7.1%}"
              f"{statistics.median(secs[h]):>9.3f}")
    print(f"auto chose: {', '.join(picked)}")
    print(f"finetune() end to end, auto: test accuracy {statistics.mean(a for a, _ in end_to_end):.1%}, "
          f"{statistics.median(s for _, s in end_to_end):.1f} s per run (photos decoded, features, selection)")

    if args.modes:
        tr, te = split_half(y, seeds[0])
        train_set = LabelledSet(classes, tuple(data.items[i] for i in tr))
        test_set = LabelledSet(classes, tuple(data.items[i] for i in te))
        print(f"\n2. backbone fine-tuning from the chosen head, seed {seeds[0]}, {args.epochs} epochs")
        print(f"{'mode':<10}{'seconds':>10}{'best epoch':>12}{'test acc':>10}")
        for mode in args.modes.split(","):
            start = time.perf_counter()
            # The split's own validation photos pick the epoch; the held-out sub-types measure it.
            result = finetune(base, train_set, TrainConfig(mode=mode, epochs=args.epochs, seed=seeds[0],
                                                           batch_size=16))
            trained = Engine.from_module(result.module, result.card, device=args.device)
            got = trained.classify([p for p, _ in test_set.items])
            test_acc = float(np.mean([r.top is not None and r.top.label == c for r, (_, c) in
                                      zip(got, test_set.items)]))
            print(f"{mode:<10}{time.perf_counter() - start:>10.1f}{result.best_epoch:>12}{test_acc:>10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
