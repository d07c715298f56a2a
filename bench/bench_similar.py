"""Similar photos and duplicates at scale: are the nearest photos of the same kind, and how fast is an answer?

    .venv/bin/python bench/bench_similar.py [--weights W] [--data ../shared/fewshot-dev] [--device cpu]
        [--n 100000] [--dims 192,768] [--groups 10000,100000] [--threads 2]

1. Quality: every fewshot-dev photo (163, five categories) asks for its 5 most similar among the
   others, through the product's own path (PrintsRun, DeiT-Tiny features, a fresh library); the
   share of those in the photo's own category, against what chance would give.
2. Speed over N stored vectors (random ones: search time does not depend on what they mean):
   one "similar to this photo" by exact numpy (what the product does), and by each
   nearest-neighbour library installed (faiss-cpu exact and HNSW, hnswlib, usearch): the time to
   build its index, and to answer; recall@10 of the approximate ones against the exact answer.
   One "duplicates of this photo" (hashes and features) over N photos, and every duplicate group
   over the sizes in --groups (exact, in blocks).

Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT / ".." / "shared"
K = 10
#: Search breadths of the HNSW indexes: recall against time.
EFS = (64, 256, 1024)


def timed(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Median seconds of ``fn`` over one call per query, after one call to warm it."""
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quality(weights: Path, data: Path, device: str) -> None:
    from vit_desktop.core.inference.loading import choose_model
    from vit_desktop.core.inference.lookalikes import PrintsRun, run_to_end
    from vit_desktop.core.library.similar import similar_to
    from vit_desktop.core.library.store import Library

    with open(data / "labels.csv", newline="", encoding="utf-8") as f:
        category = {str(data / row["file"]): row["class"] for row in csv.DictReader(f)}
    library = Library.open()
    choice = choose_model(str(weights), device=device, library=library)
    print(f"model {choice.card.name} on {choice.device_name}, {choice.precision}")
    t = time.perf_counter()
    prints = run_to_end(PrintsRun([data], model=choice, hashes=False, library=library))
    print(f"features of {len(prints)} photos: {time.perf_counter() - t:.1f} s")
    if library is not None:
        library.close()
    for k in (1, 5):
        same = [sum(category[n.path] == category[p] for n in similar_to(prints, p, top_k=k)) / k
                for p in prints.paths]
        counts = {c: sum(1 for v in category.values() if v == c) for c in set(category.values())}
        n = len(category)
        chance = sum(c * (c - 1) for c in counts.values()) / (n * (n - 1))
        print(f"top-{k} neighbours in the photo's own category: {np.mean(same):.3f} (chance {chance:.3f})")
        if k == 5:
            for c in sorted(counts):
                rows = [s for p, s in zip(prints.paths, same) if category[p] == c]
                print(f"  {c:<20} {np.mean(rows):.3f} ({len(rows)} photos)")


def speed(n: int, dim: int, threads: int) -> None:
    from vit_desktop.core.library.prints import unit_rows
    from vit_desktop.core.library.similar import nearest

    rng = np.random.default_rng(0)
    x = unit_rows(rng.standard_normal((n, dim)).astype(np.float32))
    queries = x[rng.choice(n, 20, replace=False)]
    exact = [set(r for r, _ in nearest(q, x, top_k=K)) for q in queries]
    t = timed(lambda q: nearest(q, x, top_k=K), queries)
    print(f"\n{n} vectors of {dim}: one query, top {K}")
    print(f"  {'numpy exact (the product)':<32} answer {1000 * t:8.2f} ms")

    def report(name: str, build: float, answer: float, found: list[set[int]]) -> None:
        recall = np.mean([len(a & b) / K for a, b in zip(found, exact)])
        print(f"  {name:<32} answer {1000 * answer:8.2f} ms, index built in {build:6.1f} s, recall@{K} {recall:.3f}")

    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        build = time.perf_counter() - t0
        ans = timed(lambda q: flat.search(q[None], K), queries)
        report("faiss-cpu IndexFlatIP (exact)", build, ans, [set(flat.search(q[None], K)[1][0]) for q in queries])
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(x)
        build = time.perf_counter() - t0
        for ef in EFS:
            hnsw.hnsw.efSearch = ef
            ans = timed(lambda q: hnsw.search(q[None], K), queries)
            report(f"faiss-cpu HNSW (M 32, ef {ef})", build, ans, [set(hnsw.search(q[None], K)[1][0]) for q in queries])
    except ImportError:
        print("  faiss-cpu: not installed")
    try:
        import hnswlib

        t0 = time.perf_counter()
        h = hnswlib.Index(space="ip", dim=dim)
        h.init_index(max_elements=n, ef_construction=40, M=32)
        h.set_num_threads(threads)
        h.add_items(x)
        build = time.perf_counter() - t0
        for ef in EFS:
            h.set_ef(ef)
            ans = timed(lambda q: h.knn_query(q[None], k=K), queries)
            report(f"hnswlib (M 32, ef {ef})", build, ans, [set(h.knn_query(q[None], k=K)[0][0]) for q in queries])
    except ImportError:
        print("  hnswlib: not installed")
    try:
        from usearch.index import Index

        t0 = time.perf_counter()
        # Any: usearch declares expansion_search's setter apart from its getter, which mypy cannot follow
        u: Any = Index(ndim=dim, metric="ip", dtype="f32", connectivity=16, expansion_add=40)
        u.add(np.arange(n), x, threads=threads)
        build = time.perf_counter() - t0
        for ef in EFS:
            u.expansion_search = ef
            ans = timed(lambda q: u.search(q, K), queries)
            report(f"usearch (HNSW, M 16, ef {ef})", build, ans, [set(u.search(q, K).keys.tolist()) for q in queries])
    except ImportError:
        print("  usearch: not installed")


def duplicates_speed(n: int, groups: list[int]) -> None:
    from vit_desktop.core.io.image_hash import CODES, HASH_BYTES
    from vit_desktop.core.library.duplicates import duplicate_groups, duplicates_of
    from vit_desktop.core.library.prints import PhotoPrints

    def prints_of(m: int, seed: int = 1) -> PhotoPrints:
        rng = np.random.default_rng(seed)
        hashes = rng.integers(0, 256, (m, CODES, HASH_BYTES), dtype=np.uint8)
        features = rng.standard_normal((m, 192)).astype(np.float32)
        # A copy of every hundredth photo among them, so that there is something to find.
        for i in range(0, m - 1, 100):
            hashes[i + 1], features[i + 1] = hashes[i], features[i]
        return PhotoPrints.of([f"/p/{i}.jpg" for i in range(m)], hashes=hashes, features=features,
                              shapes=np.full((m, 2), 4000), sizes=range(m), mtimes=range(m))

    prints = prints_of(n)
    rows = np.arange(20) * 7919 % n
    t = timed(lambda row: duplicates_of(prints, f"/p/{row}.jpg"), rows)
    print(f"\nduplicates of one photo among {n} (hashes and DeiT-Tiny-sized features): {1000 * t:.1f} ms")
    for m in groups:
        p = prints_of(m)
        t0 = time.perf_counter()
        found = duplicate_groups(p)
        print(f"every duplicate group among {m} photos (exact, in blocks): {time.perf_counter() - t0:.2f} s "
              f"({len(found)} groups found of {len(range(0, m - 1, 100))} planted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "deit_tiny_patch16_224.safetensors")
    ap.add_argument("--data", type=Path, default=SHARED / "fewshot-dev")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dims", default="192,768", help="feature sizes: DeiT-Tiny 192, ViT-B 768")
    ap.add_argument("--groups", default="1000,4000,10000", help="photo counts for every duplicate group")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as tmp:
        os.environ["VIT_DESKTOP_DATA_DIR"] = tmp  # a fresh library
        if not args.skip_quality:
            quality(args.weights, args.data, args.device)
        for dim in (int(d) for d in args.dims.split(",")):
            speed(args.n, dim, args.threads)
        duplicates_speed(args.n, [int(g) for g in args.groups.split(",") if g])


if __name__ == "__main__":
    main()
