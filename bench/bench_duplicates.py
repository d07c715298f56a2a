"""Duplicates benchmark: are copies of a photo found, and are different shots left apart?

    .venv/bin/python bench/bench_duplicates.py [--weights W] [--photos ../shared/photos]
        [--data ../shared/fewshot-dev] [--seed 0] [--device cpu] [--keep DIR]

A corpus is built in a temporary folder from the shared photos (nothing is written next to them):

- originals: every photo but the burst sources (below);
- edited copies of each original whose shorter side is 240 pixels or more, one of each kind: a
  byte copy, a re-encode (JPEG quality 60-90), resized to 50 % and 25 %, a 160-pixel thumbnail,
  a light crop (5-10 % off each side, anywhere), brightness +15 % and -15 %;
- near misses: 40 photos (not in the corpus themselves) give three shots each, 80 % of the frame
  a tenth of it apart (a burst where the camera moved: shots a tenth and a fifth apart; the middle
  shot at three quarters of the size, as a shared copy of it would be), which must not be grouped;
  and every two different photos of one fewshot-dev category (two guitars), which must not be either;
- distractors: all the other photos.

The product's own path runs on it (:func:`vit_desktop.core.inference.lookalikes.find_duplicates`,
DeiT-Tiny features, a fresh library), twice: the second run reads everything from the library.
Reported: precision and recall of the duplicate pairs (every two photos of one group), overall and
per edit kind, the near misses grouped, the times, and how precision and recall move with each
setting of the rule around the default.

Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT / ".." / "shared"
KINDS = ("copy", "reencode", "resize50", "resize25", "thumb160", "crop", "bright+15", "bright-15")
BURSTS = 40
#: Where a burst's shots start, as a share of the frame.
OFFSETS = (0.0, 0.1, 0.2)


@dataclass(frozen=True)
class Photo:
    name: str
    group: str  # the picture it is (its original's), or for burst shots their own
    kind: str  # original, one of KINDS, burst
    category: str  # the fewshot-dev category, "" for the other shared photos
    source: str  # the shared photo it came from


def sources(photos: Path, data: Path) -> list[tuple[Path, str]]:
    out = [(p, "") for p in sorted(photos.glob("*.JPEG"))]
    with open(data / "labels.csv", newline="", encoding="utf-8") as f:
        out += [(data / row["file"], row["file"].split("/")[0]) for row in csv.DictReader(f)]
    return out


def build(root: Path, photos: Path, data: Path, seed: int) -> list[Photo]:
    rng = random.Random(seed)
    every = sources(photos, data)
    sizes = {p: Image.open(p).size for p, _ in every}
    editable = [p for p, _ in every if min(sizes[p]) >= 240]
    bursts = set(rng.sample(editable, BURSTS))
    out: list[Photo] = []
    for i, (p, cat) in enumerate(every):
        if p in bursts:
            img = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
            w, h = img.size
            # Three shots: 80 % of the frame, a tenth of it apart, sideways or up and down.
            sideways = rng.random() < 0.5
            cw, ch = (round(w * 0.8), round(h * 0.9)) if sideways else (round(w * 0.9), round(h * 0.8))
            for k, off in enumerate(OFFSETS):
                x0, y0 = (round(w * off), round(h * 0.05)) if sideways else (round(w * 0.05), round(h * off))
                name = f"b{i:03d}_{k}.jpg"
                shot = img.crop((x0, y0, x0 + cw, y0 + ch))
                if k == 1:  # the middle shot as a shared copy: three quarters of the size
                    shot = shot.resize((cw * 3 // 4, ch * 3 // 4), Image.Resampling.LANCZOS)
                shot.save(root / name, quality=90)
                out.append(Photo(name, f"burst{i}_{k}", "burst", cat, p.name))
            continue
        group = f"g{i}"
        name = f"o{i:03d}_{p.name}"
        shutil.copy2(p, root / name)
        out.append(Photo(name, group, "original", cat, p.name))
        if p not in editable:
            continue
        img = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        w, h = img.size

        def save(im: Image.Image, kind: str, quality: int, *, i: int = i, group: str = group, cat: str = cat,
                 source: str = p.name) -> None:
            name = f"e{i:03d}_{kind}.jpg"
            im.save(root / name, quality=quality)
            out.append(Photo(name, group, kind, cat, source))

        name = f"e{i:03d}_copy.JPEG"
        shutil.copyfile(p, root / name)  # new times: a copy made today
        out.append(Photo(name, group, "copy", cat, p.name))
        save(img, "reencode", quality=rng.randint(60, 90))
        save(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), "resize50", quality=90)
        save(img.resize((w // 4, h // 4), Image.Resampling.LANCZOS), "resize25", quality=90)
        thumb = img.copy()
        thumb.thumbnail((160, 160))
        save(thumb, "thumb160", quality=85)
        f = rng.uniform(0.05, 0.10)
        cw, ch = round(w * (1 - f)), round(h * (1 - f))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        save(img.crop((x0, y0, x0 + cw, y0 + ch)), "crop", quality=90)
        save(ImageEnhance.Brightness(img).enhance(1.15), "bright+15", quality=90)
        save(ImageEnhance.Brightness(img).enhance(0.85), "bright-15", quality=90)
    return out


def pairs_of_groups(groups: list[tuple[str, ...]]) -> set[frozenset[str]]:
    return {frozenset(pair) for g in groups for pair in itertools.combinations(g, 2)}


@dataclass(frozen=True)
class Scores:
    pairs: int  # true pairs
    found: int  # pairs found
    precision: float
    recall: float
    #: Per edit kind: (copies found with their original, copies, precision of the pairs they are in).
    per_kind: dict[str, tuple[int, int, float]]
    bursts: tuple[int, int]  # burst pairs grouped, of all
    #: Burst pairs grouped by how far apart their shots are (a share of the frame).
    bursts_by_offset: dict[float, tuple[int, int]]
    same_category: tuple[int, int]  # pairs of different photos of one category grouped, of all
    false: list[tuple[str, ...]]  # the pairs found that are not one picture


def evaluate(corpus: list[Photo], predicted: list[tuple[str, ...]]) -> Scores:
    by_name = {p.name: p for p in corpus}
    truth_groups: dict[str, list[str]] = {}
    for p in corpus:
        truth_groups.setdefault(p.group, []).append(p.name)
    truth = pairs_of_groups([tuple(g) for g in truth_groups.values()])
    pred = pairs_of_groups(predicted)
    hit = truth & pred
    originals = {p.group: p.name for p in corpus if p.kind == "original"}
    per_kind = {}
    for kind in KINDS:
        edited = [p for p in corpus if p.kind == kind]
        found = sum(frozenset((originals[p.group], p.name)) in pred for p in edited)
        involving = [q for q in pred if any(by_name[n].kind == kind for n in q)]
        right = sum(q in truth for q in involving)
        per_kind[kind] = (found, len(edited), right / len(involving) if involving else 1.0)
    bursts: dict[str, list[Photo]] = {}
    for p in corpus:
        if p.kind == "burst":
            bursts.setdefault(p.group.rsplit("_", 1)[0], []).append(p)
    apart: dict[int, list[frozenset[str]]] = {}
    for shots in bursts.values():
        for a, b in itertools.combinations(shots, 2):
            steps = abs(int(a.group.rsplit("_", 1)[1]) - int(b.group.rsplit("_", 1)[1]))
            apart.setdefault(steps, []).append(frozenset((a.name, b.name)))
    same_cat = [frozenset((a.name, b.name)) for a, b in itertools.combinations(corpus, 2)
                if a.category and a.category == b.category and a.source != b.source]
    return Scores(
        pairs=len(truth), found=len(pred),
        precision=len(hit) / len(pred) if pred else 1.0,
        recall=len(hit) / len(truth) if truth else 1.0,
        per_kind=per_kind,
        bursts=(sum(q in pred for v in apart.values() for q in v), sum(len(v) for v in apart.values())),
        bursts_by_offset={round(OFFSETS[k], 2): (sum(q in pred for q in v), len(v)) for k, v in sorted(apart.items())},
        same_category=(sum(q in pred for q in same_cat), len(same_cat)),
        false=sorted(tuple(sorted(q)) for q in pred - truth),
    )


def report(title: str, result: Scores) -> None:
    print(f"\n{title}")
    print(f"  pairs: {result.found} found of {result.pairs} true; "
          f"precision {result.precision:.4f}, recall {result.recall:.4f}")
    print(f"  {'edit':<10} {'found':>9}  precision of the pairs it is in")
    for kind, (found, total, precision) in result.per_kind.items():
        print(f"  {kind:<10} {found:>4}/{total:<4}  {precision:.4f}")
    apart = ", ".join(f"{round(100 * k)} % apart {n}/{t}" for k, (n, t) in result.bursts_by_offset.items())
    print(f"  near misses grouped: burst shots {result.bursts[0]}/{result.bursts[1]} ({apart}), two photos of one "
          f"category {result.same_category[0]}/{result.same_category[1]}")
    if result.false:
        print(f"  false pairs ({len(result.false)}): " + ", ".join(" + ".join(q) for q in result.false[:8]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--photos", type=Path, default=SHARED / "photos")
    ap.add_argument("--data", type=Path, default=SHARED / "fewshot-dev")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", type=Path,
                    help="keep the corpus and its library in this folder, and use them again when it has them "
                         "(default: a temporary folder, removed at the end)")
    args = ap.parse_args()

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench-duplicates-"))
    os.environ["VIT_DESKTOP_DATA_DIR"] = str(tmp / "data")  # a fresh library, before anything reads it
    from vit_desktop.core.inference.loading import choose_model
    from vit_desktop.core.inference.lookalikes import PrintsRun, run_to_end
    from vit_desktop.core.io.image_hash import hamming
    from vit_desktop.core.library.duplicates import CROPPED, DEFAULT_RULE, Match, duplicate_groups, group_matches
    from vit_desktop.core.library.store import Library

    root = tmp / "corpus"
    listing = tmp / "corpus.csv"
    if listing.is_file():  # --keep of an earlier run: the same corpus, its library too
        with open(listing, newline="", encoding="utf-8") as f:
            corpus = [Photo(**row) for row in csv.DictReader(f)]
    else:
        root.mkdir(parents=True)
        corpus = build(root, args.photos, args.data, args.seed)
        with open(listing, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(Photo.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(vars(p) for p in corpus)
    counts = Counter(p.kind for p in corpus)
    print(f"corpus: {len(corpus)} photos: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    print(f"rule: {DEFAULT_RULE}")
    try:
        for attempt in ("first run (nothing stored)", "second run (from the library)"):
            library = Library.open()
            choice = choose_model(str(args.weights), device=args.device, library=library)
            t0 = time.perf_counter()
            run = PrintsRun([str(root)], model=choice, hashes=True, library=library)
            prints = run_to_end(run)
            t1 = time.perf_counter()
            groups = duplicate_groups(prints)
            t2 = time.perf_counter()
            if library is not None:
                library.close()
            print(f"\nmodel {choice.card.name} on {choice.device_name}, {choice.precision}")
            print(f"{attempt}: prints {t1 - t0:.1f} s (hashes: {run.hashes_from_library} from the library, "
                  f"{run.hashed} computed; features: {run.features_from_library} from the library, "
                  f"{run.classified} classified), groups {1000 * (t2 - t1):.0f} ms")
        names = [tuple(Path(p).name for p in g.paths) for g in groups]
        report("with the default rule", evaluate(corpus, names))
        kinds = Counter(g.kind for g in groups)
        print(f"  groups: {len(groups)} ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
        best_first = sum(1 for g in groups if Path(g.paths[0]).name.startswith("o"))
        print(f"  groups led by their original (most pixels, then the oldest): {best_first}/{len(groups)}")

        print("\nthe rule's settings one at a time (precision / recall / bursts grouped / same category grouped)")
        settings: tuple[tuple[str, tuple[Any, ...]], ...] = (
            ("same_bits", (4, 6, 8, 10, 12, 14)), ("crop_bits", (6, 8, 10, 12, 14)),
            ("crop_cosine", (0.4, 0.5, 0.6, 0.7, 0.8)))
        for field, values in settings:
            for v in values:
                rule = replace(DEFAULT_RULE, **{field: v})
                r = evaluate(corpus, [tuple(Path(p).name for p in g.paths) for g in duplicate_groups(prints, rule)])
                mark = " (default)" if getattr(DEFAULT_RULE, field) == v else ""
                (b, bt), (c, ct) = r.bursts, r.same_category
                print(f"  {field}={v:<5} {r.precision:.4f} / {r.recall:.4f} / {b}/{bt} / {c}/{ct}{mark}")
        no_features = replace(prints, features=None)
        report("hashes alone (no features: light crops are not looked for)",
               evaluate(corpus, [tuple(Path(p).name for p in g.paths) for g in duplicate_groups(no_features)]))
        feats = prints.features
        hashes = prints.hashes
        assert feats is not None and hashes is not None
        idx = {Path(p).name: i for i, p in enumerate(prints.paths)}
        originals = {p.group: p.name for p in corpus if p.kind == "original"}

        def frame_bits(a: str, b: str) -> int:
            return int(hamming(hashes[idx[a], 0], hashes[idx[b], 0]))

        def window_bits(a: str, b: str) -> int:
            i, j = idx[a], idx[b]
            return int(min(hamming(hashes[i, :1], hashes[j, 1:]).min(), hamming(hashes[j, :1], hashes[i, 1:]).min()))

        print("\nhash distances in bits (whole frames / nearest crop window), max over the copies of each kind")
        for kind in KINDS:
            pairs = [(originals[p.group], p.name) for p in corpus if p.kind == kind]
            print(f"  {kind:<10} {max(frame_bits(a, b) for a, b in pairs):>2} / {max(window_bits(a, b) for a, b in pairs)}")
        shots: dict[str, list[Photo]] = {}
        for p in corpus:
            if p.kind == "burst":
                shots.setdefault(p.group.rsplit("_", 1)[0], []).append(p)
        for steps in (1, 2):
            pairs = [(a.name, b.name) for v in shots.values() for a, b in itertools.combinations(v, 2)
                     if abs(int(a.group.rsplit("_", 1)[1]) - int(b.group.rsplit("_", 1)[1])) == steps]
            print(f"  burst shots {round(100 * OFFSETS[steps])} % apart: min {min(frame_bits(a, b) for a, b in pairs)} / "
                  f"{min(window_bits(a, b) for a, b in pairs)}")
        original_names = [p.name for p in corpus if p.kind == "original"]
        print(f"  two different originals: min {min(frame_bits(a, b) for a, b in itertools.combinations(original_names, 2))} / "
              f"{min(window_bits(a, b) for a, b in itertools.combinations(original_names, 2))}")

        print("\nfeatures alone (photos grouped where the cosine of their features is at least t)")
        cos = feats @ feats.T
        for t in (0.5, 0.6, 0.7, 0.8, 0.9):
            rows, cols = np.nonzero(np.triu(cos >= t, 1))
            matches = [Match(int(i), int(j), CROPPED, 1.0) for i, j in zip(rows, cols)]
            r = evaluate(corpus, [tuple(Path(p).name for p in g.paths) for g in group_matches(prints, matches)])
            (bb, bt), (ss, st) = r.bursts, r.same_category
            thumbs = r.per_kind["thumb160"]
            print(f"  t={t}: precision {r.precision:.4f}, recall {r.recall:.4f}, thumbnails {thumbs[0]}/{thumbs[1]}, "
                  f"bursts {bb}/{bt}, same category {ss}/{st}")
        print("\nfeatures alone: cosine of each edited copy with its original (min / median)")
        for kind in KINDS:
            cos = [float(feats[idx[originals[p.group]]] @ feats[idx[p.name]]) for p in corpus if p.kind == kind]
            print(f"  {kind:<10} {min(cos):.3f} / {np.median(cos):.3f}")
        unrelated = [float(feats[idx[a.name]] @ feats[idx[b.name]]) for a, b in itertools.combinations(corpus, 2)
                     if a.kind == "original" and b.kind == "original"]
        print(f"  two different originals: max {max(unrelated):.3f}, 99.9th percentile "
              f"{np.percentile(unrelated, 99.9):.3f}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
