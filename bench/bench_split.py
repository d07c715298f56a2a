"""How to share the cores of a folder run: model threads vs decode workers vs heatmap writers.

    python bench/bench_split.py [--model FILE] [--photos DIR] [--count N] [--repeats R]

Runs `vit-desktop classify` in this process on ``--count`` copies of the shared photos, with and
without ``--heatmaps``, for each split of the work: torch's intra-op threads (the model), the
engine's decode workers (decode, resize, crop) and the heatmap writer's threads (overlay, PNG,
npy). Prints images/s of every run, interleaved, and the best of each, next to the defaults this
machine gets (torch's own thread count, ``min(4, cpus)`` decode workers, 2 writers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop import cli
from vit_desktop.cli import outputs as classify_outputs
from vit_desktop.core.inference import decoding as decoding_module
from vit_desktop.core.inference import engine as engine_module
from vit_desktop.core.io import images

SHARED = ROOT.parent / "shared"


def run_once(folder: Path, model: str, out: Path, threads: int, decoders: int, writers: int, maps: Path | None) -> float:
    """images/s of one classify run with this split."""
    torch.set_num_threads(threads)
    engine_init = engine_module.Engine.__init__
    default_workers = decoding_module.decode_workers
    writer_init = classify_outputs.HeatmapWriter.__init__

    def with_decoders(self, *args, **kwargs):
        engine_init(self, *args, **kwargs)
        self.decode_workers = decoders

    def with_writers(self, *args, **kwargs):
        writer_init(self, *args, **kwargs)
        self.pool.shutdown()
        self.pool = ThreadPoolExecutor(writers, thread_name_prefix="vit-heatmap")

    argv = ["classify", str(folder), "--model", model, "--output", str(out), "--overwrite"]
    if maps is not None:
        argv += ["--heatmaps", str(maps)]
    engine_module.Engine.__init__ = with_decoders  # type: ignore[method-assign]  # the split, in the engine the command makes
    decoding_module.decode_workers = lambda: decoders  # and in the decoding a run starts while a known model loads
    classify_outputs.HeatmapWriter.__init__ = with_writers  # type: ignore[method-assign]  # and in its heatmap writer
    try:
        with open(os.devnull, "w") as sink:
            started = time.perf_counter()
            if cli.main(argv, out=sink, err=sink) != 0:
                raise SystemExit("classify failed")
            elapsed = time.perf_counter() - started
    finally:
        engine_module.Engine.__init__ = engine_init  # type: ignore[method-assign]  # the real one back
        decoding_module.decode_workers = default_workers
        classify_outputs.HeatmapWriter.__init__ = writer_init  # type: ignore[method-assign]  # likewise
    return len(list(folder.iterdir())) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "weights" / "deit_tiny_patch16_224.safetensors"))
    ap.add_argument("--photos", default=str(SHARED / "photos"))
    ap.add_argument("--count", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cpus = os.cpu_count() or 2
    default = (torch.get_num_threads(), max(1, min(4, cpus)), 2)
    splits = sorted({default, (cpus, cpus, cpus), (cpus, 1, 1), (max(1, cpus - 1), 1, 1), (cpus, 1, cpus),
                     (max(1, cpus // 2), cpus, cpus)}, reverse=True)
    print(f"{cpus} cpus; default split: torch threads {default[0]}, decode workers {default[1]}, "
          f"writers {default[2]}")
    sources = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "photos"
        folder.mkdir()
        for i in range(args.count):
            shutil.copy(sources[i % len(sources)], folder / f"{i:04d}_{sources[i % len(sources)].name}")
        rates: dict[tuple[bool, tuple[int, int, int]], list[float]] = {}
        for _ in range(args.repeats):
            for heatmaps in (False, True):
                for split in splits:
                    if not heatmaps and split[2] != default[2]:
                        continue  # writers only matter with heatmaps
                    maps = tmp / "maps" if heatmaps else None
                    rates.setdefault((heatmaps, split), []).append(
                        run_once(folder, args.model, tmp / "r.jsonl", *split, maps))
                    if maps is not None:
                        shutil.rmtree(maps)
    print(f"\nimg/s, {args.count} photos, {args.repeats} interleaved runs, then the best of each:")
    for (heatmaps, split), rs in rates.items():
        mark = "  (default)" if split == default else ""
        print(f"  {'--heatmaps' if heatmaps else 'classify  '}  torch {split[0]}  decode {split[1]}  writers "
              f"{split[2]}   {'  '.join(f'{r:6.1f}' for r in rs)}   best {max(rs):6.1f}{mark}")


if __name__ == "__main__":
    main()
