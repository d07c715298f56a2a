"""Open-set benchmark: does every result say, with the defaults, whether it is one of the model's classes?

    .venv/bin/python bench/bench_open_set.py [--weights W] [--data ../shared/fewshot-dev]
        [--photos ../shared/photos] [--seeds 0,1,2] [--device cpu]

1. The base model (1000 ImageNet classes, no rule in its file): its default rule, max probability
   under :data:`~vit_desktop.core.models.open_set.BASE_THRESHOLD`, on the 187 labelled shared photos
   (what it keeps, which wrong answers it marks) and on generated pictures of nothing.
2. Fine-tuned heads on fewshot-dev. Three of its five categories are the classes, trained on half
   of their photos (bench_finetune's split: the other half are sub-types training never saw); the
   other two categories, and the shared photos of no category, are "none of these". All ten
   choices of the two left out, each seed. Per head and for the default (cross-validation chooses
   the head, the rule is calibrated on the training photos as ``finetune`` does): known photos
   right and not uncertain, unknown photos marked uncertain, AUROC of the rule's score (known vs
   unknown), and the AUROC of the head's own max probability (what its softmax keeps) beside it.
   One end-to-end ``finetune`` + engine run per left-out pair checks that the product agrees.
3. The same categories by name (``--classes``): the mass on all of them, at the default threshold
   and around it.
4. "my mug" and "her mug": a task the hierarchy cannot express. Each class is crops of the shared
   coffee-mug photo, in its colours or turned half the colour circle; unknown are crops of the same
   mug in a third colour (near) and every other photo (far). End to end through ``finetune`` with the
   default head. The same with two dogs of different breeds (which the hierarchy can tell apart).
5. What ~40 everyday names cover.

Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_finetune import features, split_half

from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.open_set import KEEP, NAMES_THRESHOLD, calibrate
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.io.images import load_image
from vit_desktop.core.labels.categories import Categories, hierarchy_for, resolve_some
from vit_desktop.core.labels.hierarchy import ClassNameError
from vit_desktop.core.models.open_set import BASE_THRESHOLD
from vit_desktop.core.training import TrainConfig, calibrated_rule, finetune
from vit_desktop.core.training.fewshot import HEADS, HeadData, candidates, known_scores, select_head
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.core.types import ClassifyResult

SHARED = ROOT / ".." / "shared"
CATEGORIES = ("clothing", "food", "furniture", "musical instrument", "vehicle")
NAMES = ("dog", "cat", "bird", "fish", "car", "boat", "food", "fruit", "bread", "cup", "mug", "bottle", "instrument",
         "toy", "phone", "house", "crane", "ball", "bag", "shoe", "hat", "chair", "table", "bed", "lamp", "computer",
         "truck", "bike", "flower", "monkey", "bear", "snake", "bug", "plane", "train", "drink", "vegetable", "shirt",
         "dress", "clock", "glass", "box", "pig", "cow", "tree", "my mugs", "red cars", "Grandma's dogs")


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(a known photo scores above an unknown one), ties half."""
    k, u = np.asarray(known)[:, None], np.asarray(unknown)[None, :]
    return float((k > u).mean() + 0.5 * (k == u).mean())


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def mean_sd(v: Sequence[float]) -> str:
    return f"{statistics.mean(v):6.1%} ±{statistics.pstdev(v):4.1%} (min {min(v):5.1%})"


def read_rows(data: Path, photos: Path) -> list[tuple[Path, int, str]]:
    """(file, ImageNet index, fewshot category or "photos") of every labelled shared photo."""
    rows = [(data / r["file"], int(r["imagenet_index"]), r["class"])
            for r in csv.DictReader((data / "labels.csv").open(encoding="utf-8"))]
    rows += [(photos / r["file"], int(r["imagenet_index"]), "photos")
             for r in csv.DictReader((photos / "labels.csv").open(encoding="utf-8"))]
    return rows


def base_rule(engine: Engine, z: np.ndarray, idx: np.ndarray, tmp: Path) -> None:
    p = softmax(z)
    best, right = p.max(axis=1), p.argmax(axis=1) == idx
    kept = best >= BASE_THRESHOLD
    print(f"1. base model, max probability < {BASE_THRESHOLD} is 'not sure' ({len(idx)} labelled photos)")
    print(f"   top-1 {right.mean():.1%}; keeps {kept.mean():.1%} of the photos; right and kept {(right & kept).mean():.1%}; "
          f"marks {(~right & ~kept).sum()} of {(~right).sum()} wrong answers "
          f"(AUROC right vs wrong {auroc(best[right], best[~right]):.3f})")
    for keep in (0.90, 0.95, 0.97):
        t = float(np.quantile(best, 1 - keep))
        print(f"   keep {keep:.0%}: threshold {t:.3f}, marks {(~right & (best < t)).sum()} of {(~right).sum()} wrong")
    rng = np.random.default_rng(0)
    made = []
    for i in range(20):  # pictures of nothing: noise, flat colours, gradients
        if i % 3 == 0:
            arr = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        elif i % 3 == 1:
            arr = np.full((240, 320, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        else:
            arr = np.linspace(rng.integers(0, 256, 3), rng.integers(0, 256, 3), 320).astype(np.uint8)[None].repeat(240, 0)
        Image.fromarray(arr).save(tmp / f"nothing{i}.png")
        made.append(tmp / f"nothing{i}.png")
    results = engine.classify(made)
    print(f"   {sum(r.uncertain for r in results)} of {len(results)} generated pictures of nothing marked "
          f"(noise, flat colours, gradients)\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--data", type=Path, default=SHARED / "fewshot-dev")
    ap.add_argument("--photos", type=Path, default=SHARED / "photos")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--skip", default="", help="sections to skip, e.g. 2,4")
    args = ap.parse_args()
    if not args.weights.is_file() or not args.data.is_dir() or not args.photos.is_dir():
        print(f"needs the shared DeiT-Tiny ({args.weights}) and photos ({args.data}, {args.photos})", file=sys.stderr)
        return 2
    skip = {int(s) for s in args.skip.split(",") if s}
    seeds = [int(s) for s in args.seeds.split(",")]
    engine = Engine.load(args.weights, device=args.device)
    tree = hierarchy_for(engine.card)
    assert tree is not None
    rows = read_rows(args.data, args.photos)
    paths = [p for p, _, _ in rows]
    idx = np.array([i for _, i, _ in rows])
    cats = np.array([c for _, _, c in rows])
    t0 = time.perf_counter()
    f, z = features(engine, paths)
    P = softmax(z)
    print(f"{engine.card.name} on {engine.device_name}; {len(rows)} photos; features in {time.perf_counter() - t0:.1f} s\n")
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-set-"))
    if 1 not in skip:
        base_rule(engine, z, idx, tmp)
    # A shared photo whose class is under none of the five categories is "none of these" wherever it is.
    named = {c for name in CATEGORIES for c in tree.resolve(name).classes}
    other = np.array([c == "photos" and i not in named for c, i in zip(cats, idx)])
    if 2 not in skip:
        fine_tuned(engine, tree, f, z, P, cats, other, paths, seeds)
    if 3 not in skip:
        by_names(tree, P, cats, other, seeds)
    if 4 not in skip:
        mine_and_hers(engine, rows, tmp, "mug")
        mine_and_hers(engine, rows, tmp, "dog")
        print()
    if 5 not in skip:
        print("5. what everyday names cover")
        labels = engine.card.labels
        for name in NAMES:
            try:
                r = tree.resolve(name)
            except ClassNameError:
                print(f"   {name:16} (not a name)")
                continue
            shown = ", ".join(labels[i] for i in r.classes[:4]) + (", …" if len(r.classes) > 4 else "")
            print(f"   {name:16} {r.display:42} {len(r.classes):4}  {shown}")
    return 0


def fine_tuned(engine: Engine, tree, f, z, probs, cats, other, paths, seeds) -> None:
    print(f"2. fine-tuned on 3 of the 5 categories (half their photos); the other 2 and {other.sum()} unrelated photos "
          f"are 'none of these'; rule kept {KEEP:.0%} of held-out photos; 10 left-out pairs x {len(seeds)} seeds")
    stats: dict[str, dict[str, list[float]]] = {}
    sweep: dict[float, list[tuple[float, float]]] = {}
    picked: list[str] = []
    product: list[tuple[float, float]] = []
    for left in itertools.combinations(range(5), 2):
        known = [c for i, c in enumerate(CATEGORIES) if i not in left]
        inside = np.flatnonzero(np.isin(cats, known))
        y = np.array([known.index(c) for c in cats[inside]])
        unknown = np.flatnonzero(np.isin(cats, [CATEGORIES[i] for i in left]) | other)
        names = resolve_some(known, tree)
        for seed in seeds:
            tr, te = split_half(y, seed)
            train = HeadData(z[inside[tr]], f[inside[tr]], y[tr])
            test = HeadData(z[inside[te]], f[inside[te]], y[te])
            away = HeadData(z[unknown], f[unknown], np.zeros(len(unknown), dtype=int))
            heads = candidates(3, names, tree)
            # The classes called "class 1/2/3" (names the model does not know): the photos alone choose.
            unnamed = candidates(3, [None] * 3, tree, allowed=("hierarchy", "blend", "probabilities", "features"))
            runs = [(h.name, [h]) for h in heads] + [("default (auto)", heads)]
            runs += [(f"{h.name}, unnamed", [h]) for h in unnamed[:2]] + [("default, unnamed", unnamed)]
            for label, allowed in runs:
                choice = select_head(train, 3, allowed, seed=seed)
                if label == "default (auto)":
                    picked.append(choice.name)
                rule = calibrated_rule(choice, train, None)
                assert rule is not None
                kind = rule.score
                s_known = known_scores(choice.params, train, test, kind)
                s_away = known_scores(choice.params, train, away, kind)
                right = choice.params.log_proba(test).argmax(axis=1) == test.y
                msp_k = np.exp(choice.params.log_proba(test)).max(axis=1)
                msp_u = np.exp(choice.params.log_proba(away)).max(axis=1)
                st = stats.setdefault(f"{label} [{rule.score}]", {})
                st.setdefault("acc", []).append(float(right.mean()))
                st.setdefault("known", []).append(float((right & (s_known >= rule.threshold)).mean()))
                st.setdefault("unknown", []).append(float((s_away < rule.threshold).mean()))
                st.setdefault("auroc", []).append(auroc(s_known, s_away))
                st.setdefault("msp", []).append(auroc(msp_k, msp_u))
                st.setdefault("threshold", []).append(rule.threshold)
                if label == "default (auto)" and choice.held_out_known is not None:
                    for keep in (0.95, 0.97, 0.99):  # the share the threshold keeps, around the default
                        t = calibrate(choice.held_out_known[kind], keep)
                        sweep.setdefault(keep, []).append((float((right & (s_known >= t)).mean()),
                                                           float((s_away < t).mean())))
        # The product end to end: photos decoded, finetune(), the saved rule applied by the engine.
        tr, te = split_half(y, seeds[0])
        data = LabelledSet(tuple(known), tuple((Path(paths[inside[i]]), known[y[i]]) for i in tr))
        result = finetune(engine, data, TrainConfig(mode="head", seed=seeds[0]))
        trained = Engine.from_module(result.module, result.card, device=str(engine.device))
        got_k = trained.classify([paths[inside[i]] for i in te], ClassifyOptions(top_k=1))
        got_u = trained.classify([paths[i] for i in unknown], ClassifyOptions(top_k=1))
        product.append((float(np.mean([r.top is not None and r.top.label == known[y[i]] and not r.uncertain
                                       for r, i in zip(got_k, te)])),
                        float(np.mean([r.uncertain for r in got_u]))))
    print(f"   {'head [score]':34} {'accuracy':>8}  {'known right & kept':<30} {'unknown marked':<30} "
          f"{'AUROC':>6} {'(max p)':>7} {'threshold':>9}")
    for label, st in stats.items():
        print(f"   {label:34} {statistics.mean(st['acc']):8.1%}  {mean_sd(st['known']):<30} {mean_sd(st['unknown']):<30} "
              f"{statistics.mean(st['auroc']):6.3f} {statistics.mean(st['msp']):7.3f} "
              f"{statistics.mean(st['threshold']):9.3f}")
    for keep, got in sweep.items():
        print(f"   default head calibrated to keep {keep:.0%}: known right & kept {mean_sd([k for k, _ in got])}, "
              f"unknown marked {mean_sd([u for _, u in got])}{'  <- default' if keep == KEEP else ''}")
    counts = {h: picked.count(h) for h in HEADS if h in picked}
    print(f"   the default chose: {counts}")
    print(f"   finetune() + engine, end to end (seed {seeds[0]}, 10 pairs): known right & kept "
          f"{statistics.mean(k for k, _ in product):.1%}, unknown marked {statistics.mean(u for _, u in product):.1%}\n")


def by_names(tree, probs, cats, other, seeds) -> None:
    print("3. the same categories by name (--classes): uncertain when the mass on all of them is under the threshold")
    sweep = (0.1, 0.15, NAMES_THRESHOLD, 0.25, 0.3, 0.4)
    res: dict[float, list[tuple[float, float]]] = {t: [] for t in sweep}
    aurocs = []
    for left in itertools.combinations(range(5), 2):
        known = [c for i, c in enumerate(CATEGORIES) if i not in left]
        inside = np.flatnonzero(np.isin(cats, known))
        y = np.array([known.index(c) for c in cats[inside]])
        unknown = np.flatnonzero(np.isin(cats, [CATEGORIES[i] for i in left]) | other)
        categories = Categories.from_names(known, tree)
        for seed in seeds:
            _, te = split_half(y, seed)  # the same test photos as the fine-tuned heads
            s_k, s_u = categories.scores(probs[inside[te]]), categories.scores(probs[unknown])
            right = s_k.argmax(axis=1) == y[te]
            aurocs.append(auroc(s_k.sum(axis=1), s_u.sum(axis=1)))
            for t in sweep:
                res[t].append((float((right & (s_k.sum(axis=1) >= t)).mean()), float((s_u.sum(axis=1) < t).mean())))
    print(f"   AUROC of the mass on all of them {statistics.mean(aurocs):.3f} (min {min(aurocs):.3f})")
    for t in sweep:
        mark = "  <- default" if t == NAMES_THRESHOLD else ""
        print(f"   threshold {t:4.2f}: known right & kept {mean_sd([k for k, _ in res[t]])}, "
              f"unknown marked {mean_sd([u for _, u in res[t]])}{mark}")
    print()


def variants(image: Image.Image, n: int, seed: int) -> list[Image.Image]:
    """Crops (50-100 % of the area), flips and colour shifts of one photo."""
    rng = np.random.default_rng(seed)
    out = []
    w, h = image.size
    for _ in range(n):
        area = rng.uniform(0.5, 1.0)
        cw, ch = int(w * np.sqrt(area)), int(h * np.sqrt(area))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4))
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
        out.append(im)
    return out


def hue(image: Image.Image, turn: float) -> Image.Image:
    """The photo with every hue turned by ``turn`` (a fraction of the colour circle)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(turn * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def mine_and_hers(engine: Engine, rows, tmp: Path, task: str) -> None:
    """Two classes of one kind: each is crops of one photo; unknown are crops of a third (near) and
    every other shared photo (far)."""
    photos = {p.name.split("_", 1)[1].rsplit(".", 1)[0]: p for p, _, c in rows if c == "photos"}
    if task == "mug":
        # One coffee mug photo in three colours: the same ImageNet class, told apart by colour only.
        mug = load_image(photos["coffee_mug"])
        classes = (("my mug", hue(mug, 0.0)), ("her mug", hue(mug, 0.5)))
        third, used = hue(mug, 0.25), {photos["coffee_mug"].name}
        print("4. 'my mug' vs 'her mug': one coffee-mug photo, its colours turned half a circle for 'her mug'; "
              "unknown: the same mug turned a quarter (near) and every other shared photo (far)")
    else:
        classes = (("my dog", load_image(photos["Border_collie"])), ("her dog", load_image(photos["otterhound"])))
        third, used = load_image(photos["bull_mastiff"]), {photos[n].name for n in ("Border_collie", "otterhound")}
        print("   'my dog' vs 'her dog': a Border collie and an otterhound (two breeds: the hierarchy can tell "
              "them apart); unknown: a bull mastiff (near) and every other shared photo (far)")
    folder = tmp / task
    items: list[tuple[Path, str]] = []
    tests: list[tuple[Path, str]] = []
    for seed, (label, image) in enumerate(classes, start=1):
        (folder / label).mkdir(parents=True)
        for i, im in enumerate(variants(image, 24, seed)):
            path = folder / label / f"{i}.png"
            im.save(path)
            (items if i < 12 else tests).append((path, label))
    near = []
    for i, im in enumerate(variants(third, 12, 3)):
        im.save(folder / f"third{i}.png")
        near.append(folder / f"third{i}.png")
    far = [p for p, _, _ in rows if p.name not in used]
    result = finetune(engine, LabelledSet(tuple(c for c, _ in classes), tuple(items)), TrainConfig(mode="head"))
    rule = result.card.open_set
    assert rule is not None and result.metrics.selection is not None
    trained = Engine.from_module(result.module, result.card, device=str(engine.device))
    k = trained.classify([p for p, _ in tests], ClassifyOptions(top_k=1))
    n_, f_ = trained.classify(near, ClassifyOptions(top_k=1)), trained.classify(far, ClassifyOptions(top_k=1))
    right = np.array([r.top is not None and r.top.label == label for r, (_, label) in zip(k, tests)])
    kept = np.array([not r.uncertain for r in k])

    def score(rs: list[ClassifyResult]) -> np.ndarray:
        return np.array([r.known_score for r in rs])

    print(f"   12 crops per class to train, 12 more to test; head {result.metrics.selection.head}; {rule.describe()}")
    print(f"   known: right {right.mean():.0%}, right and kept {(right & kept).mean():.0%}; "
          f"near unknown marked {np.mean([r.uncertain for r in n_]):.0%} (AUROC {auroc(score(k), score(n_)):.3f}); "
          f"far unknown marked {np.mean([r.uncertain for r in f_]):.0%} (AUROC {auroc(score(k), score(f_)):.3f})")


if __name__ == "__main__":
    sys.exit(main())
