"""Classification throughput: naive loop vs `vit-desktop classify` vs classify with heatmaps.

    python bench/bench_classify.py [--model FILE_OR_NAME] [--photos DIR] [--copies N] [--device D]
        [--whole N]

Prints, in one run on the same photos and model:

1. whole processes, start-up included, as a user meets them: a naive one-photo-at-a-time script,
   ``vit-desktop classify``, ``vit-desktop classify --heatmaps`` and ``classify --precision fp32``
   (what a CPU without native bf16 runs), on ``--whole`` photos
   (400: copies of the shared photos) and on one photo; the CPU's model name and the flags that
   decide its precision (``auto``'s choice and why);
2. images/s of the same inside one process (model loaded), next to the machine's limit: the
   model's FLOPs per image against the measured throughput of a large matrix multiply;
3. each precision this device offers: speed, top-1 agreement with fp32, and top-1 accuracy on the
   labelled shared photos (``labels.csv``: the bound is 0.5 points under fp32).

Defaults use the shared DeiT-Tiny and photos in ../shared. On a GPU, pass `--model vit_b_16-random`
for torchvision's ViT-B/16 with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T
from torchvision.models import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop import cli
from vit_desktop.core.inference.devices import resolve_device
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.io import images
from vit_desktop.core.io.scan import scan
from vit_desktop.core.types import ExplainOptions, ModelCard

SHARED = ROOT.parent / "shared"


def random_vit_b_16() -> tuple[VisionTransformer, ModelCard]:
    """torchvision's vit_b_16, untrained: the project's ViT keeps its layout, so the engine runs it as is."""
    from torchvision.models import vit_b_16

    from vit_desktop.core.models.layouts import default_labels
    from vit_desktop.core.models.vit import architecture_of
    from vit_desktop.core.types import Preprocess

    module = vit_b_16()
    arch = architecture_of(module)
    return module, ModelCard("vit_b_16 (random)", "registry", "vit_b_16", arch, default_labels(1000), Preprocess())


def load_engine(model: str, device: str, precision: str = "auto") -> Engine:
    if model == "vit_b_16-random":
        module, card = random_vit_b_16()
        return Engine.from_module(module, card, device=device, precision=precision)
    return Engine.load(model, device=device, precision=precision)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype) -> float:
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50 if device.type == "cuda" else 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _count_cpu_attention() -> None:
    """Teach torch's FLOP counter the CPU's fused attention, which it does not know (torch 2.14):
    without it a ViT's attention products (14 % of DeiT-Tiny's FLOPs) count as nothing on the CPU
    and the machine's limit in images/s comes out that much too high."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_attention(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(flop_counter.sdpa_flop_count(query, key, value))


def flops_per_image(engine: Engine) -> float:
    """The model's FLOPs for one image, counted as its forward runs them (products and convolutions)."""
    _count_cpu_attention()
    size = engine.card.arch.image_size
    x = torch.randn(1, 3, size, size, device=engine.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        engine.module(x)
    return float(counter.get_total_flops())


def load_module(model: str, device: str) -> tuple[torch.nn.Module, ModelCard, torch.device]:
    """The bare torchvision module and its card, without an Engine (a script's own loading)."""
    from vit_desktop.core.models import registry
    from vit_desktop.core.models.checkpoints import load_checkpoint

    if model == "vit_b_16-random":
        module, card = random_vit_b_16()
    elif model in registry.REGISTRY:
        module, card = registry.load_registry_model(model)
    else:
        module, card = load_checkpoint(Path(model))
    dev = resolve_device(device)
    return module.eval().to(dev), card, dev


NAIVE_SCRIPT = """
import sys, time
started = time.perf_counter()
import torch
from PIL import Image
from torchvision import transforms as T
from vit_desktop.core.models.checkpoints import load_checkpoint  # the weights only: as timm.create_model would
module, card = load_checkpoint(sys.argv[1])
module.eval()
pp = card.preprocess
tf = T.Compose([T.Resize(pp.resize_size, interpolation=T.InterpolationMode(pp.interpolation)),
                T.CenterCrop(pp.crop_size), T.ToTensor(), T.Normalize(pp.mean, pp.std)])
with open(sys.argv[3], "w") as out, torch.no_grad():
    for path in sorted(__import__("pathlib").Path(sys.argv[2]).iterdir()):
        x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
        scores, idx = module(x).softmax(-1).topk(5)
        out.write(f"{path.name} {card.labels[int(idx[0, 0])]} {float(scores[0, 0]):.4f}\\n")
"""


def whole_process(argv: list[str]) -> float:
    """Seconds of one whole process, interpreter start-up included, in an empty data folder: the
    library keeps answers between runs, and a run that read them would not classify anything."""
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, VIT_DESKTOP_DATA_DIR=data)
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
        return time.perf_counter() - started


def whole_processes(model: str, photos: list[Path], n: int, repeats: int, tmp: Path) -> None:
    """Naive script vs vit-desktop classify vs classify --heatmaps, as whole processes."""
    script = tmp / "naive.py"
    script.write_text(NAIVE_SCRIPT, encoding="utf-8")
    for count in (n, 1):
        folder = tmp / f"whole{count}"
        folder.mkdir()
        for i in range(count):
            src = photos[i % len(photos)]
            shutil.copy(src, folder / f"{i:04d}_{src.name}")
        out = tmp / f"out{count}.jsonl"
        maps = tmp / f"maps{count}"
        runs = {
            "naive script": [sys.executable, str(script), model, str(folder), str(tmp / "naive.txt")],
            "vit-desktop classify": [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", model,
                                     "--device", "cpu", "--output", str(out), "--overwrite", "--fresh"],
            "classify --heatmaps": [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", model,
                                    "--device", "cpu", "--output", str(out), "--overwrite", "--fresh", "--heatmaps", str(maps)],
            # What a CPU without native bf16 gets ('auto' picks fp32 there).
            "classify fp32": [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", model,
                              "--device", "cpu", "--output", str(out), "--overwrite", "--fresh", "--precision", "fp32"],
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(repeats):
            for name, argv in runs.items():
                times[name].append(whole_process(argv))
        best = {k: min(v) for k, v in times.items()}
        print(f"\nwhole process, {count} photo{'s' if count != 1 else ''} (start-up included; best of {repeats}, "
              "seconds):")
        for name, t in best.items():
            extra = ""
            if name in ("vit-desktop classify", "classify fp32"):
                extra = f"   {best['naive script'] / t:4.2f}x the naive script"
            elif name == "classify --heatmaps":
                extra = f"   {t / best['vit-desktop classify'] - 1:+6.1%} time vs classify"
            print(f"  {name:22s} {t:7.2f} s  ({'  '.join(f'{x:.2f}' for x in times[name])}){extra}")


def cpu_report() -> None:
    """The CPU and what decides its precision."""
    from vit_desktop.core.inference.devices import choose_precision

    model = "?"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))
    print(f"CPU {model}, {os.cpu_count()} cpus; flags: {' '.join(wanted) or '(unknown)'}")
    print(f"precision auto on the CPU: {choose_precision('auto', torch.device('cpu'))}")


def naive_loop(model: str, device: str, paths: list[Path]) -> float:
    """What a short script does: one image at a time, torchvision transforms, no overlap.

    Runs in a fresh interpreter, so that nothing vit-desktop does to the process (its allocator
    settings) helps it.
    """
    out = subprocess.run(
        [sys.executable, __file__, "--naive-run", "--model", model, "--device", device, "--photos", str(paths[0].parent)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def naive_run(model: str, device: str, folder: Path) -> None:
    module, card, dev = load_module(model, device)
    pp = card.preprocess
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}.get(
        pp.interpolation, T.InterpolationMode.BILINEAR
    )
    tf = T.Compose([T.Resize(pp.resize_size, interpolation=interp), T.CenterCrop(pp.crop_size), T.ToTensor(),
                    T.Normalize(pp.mean, pp.std)])
    paths = sorted(folder.iterdir())

    def loop(files: list[Path]) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for p in files:
                x = tf(Image.open(p).convert("RGB")).unsqueeze(0).to(dev)
                probs = module(x).softmax(-1)
                probs.topk(5)[0].tolist()
        sync(dev)
        return len(files) / (time.perf_counter() - t0)

    loop(paths[:4])  # warm-up: allocator, kernels, file cache
    print(loop(paths))


def cli_run(model: str, folder: Path, out: Path, device: str, batch: int, heatmaps: Path | None) -> float:
    """`vit-desktop classify` end to end in this process: model load, scan, decode, write."""
    args = ["classify", str(folder), "--model", model, "--device", device, "--batch-size", str(batch),
            "--output", str(out), "--overwrite", "--fresh"]
    if heatmaps is not None:
        args += ["--heatmaps", str(heatmaps), "--overwrite"]
    n = len(scan([folder]).files)
    sink = open(Path(tempfile.gettempdir()) / "bench-classify.log", "w")
    t0 = time.perf_counter()
    code = cli.main(args, out=sink, err=sink)
    elapsed = time.perf_counter() - t0
    sink.close()
    if code != 0:
        raise SystemExit(f"classify failed ({code}); see {sink.name}")
    return n / elapsed


def engine_run(engine: Engine, paths: list[Path], batch: int, explain: ExplainOptions | None) -> float:
    """The engine alone: decode, preprocess, forward, top-k; nothing written."""
    t0 = time.perf_counter()
    engine.classify(paths, ClassifyOptions(batch_size=batch, explain=explain))
    return len(paths) / (time.perf_counter() - t0)


def labelled_photos() -> list[tuple[Path, int]]:
    """(photo, ImageNet class) of every labelled shared photo."""
    import csv

    out = []
    for name in ("photos", "fewshot-dev"):
        table = SHARED / name / "labels.csv"
        if table.is_file():
            with table.open(encoding="utf-8") as f:
                out += [(SHARED / name / row["file"], int(row["imagenet_index"])) for row in csv.DictReader(f)]
    return out


def precision_table(model: str, device: str, paths: list[Path], batch: int) -> None:
    """Speed, top-1 agreement with fp32 and accuracy on labelled photos, per precision."""
    dev = resolve_device(device)
    modes = ["fp32", "bf16"] if dev.type == "cpu" else ["fp32", "fp16", "bf16"]
    labelled = labelled_photos()
    base = None
    for mode in modes:
        eng = load_engine(model, device, mode)
        eng.classify(paths[:batch], ClassifyOptions(batch_size=batch))  # warm-up
        rates = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = eng.classify(paths, ClassifyOptions(batch_size=batch, top_k=1))
            rates.append(len(paths) / (time.perf_counter() - t0))
        top = [r.predictions[0].index for r in res if r.ok]
        base = base or top
        agree = sum(a == b for a, b in zip(top, base)) / len(base)
        accuracy = ""
        if labelled and eng.card.num_classes == 1000:
            got = eng.classify([p for p, _ in labelled], ClassifyOptions(batch_size=batch, top_k=1))
            right = sum(r.ok and r.predictions[0].index == y for r, (_, y) in zip(got, labelled))
            accuracy = f"   top-1 accuracy {right / len(labelled):6.1%} of {len(labelled)} labelled photos"
        print(f"  {mode:5s} {max(rates):7.1f} img/s   top-1 agreement with fp32 {agree:6.1%}{accuracy}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "weights" / "deit_tiny_patch16_224.safetensors"))
    ap.add_argument("--photos", default=str(SHARED / "photos"))
    ap.add_argument("--copies", type=int, default=4, help="copies of the photo set (more images, steadier figures)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; the best is reported")
    ap.add_argument("--skip-precision", action="store_true")
    ap.add_argument("--whole", type=int, default=400, metavar="N", help="photos for the whole-process runs (0: skip)")
    ap.add_argument("--naive-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_run:
        naive_run(args.model, args.device, Path(args.photos))
        return

    engine = load_engine(args.model, args.device)
    dev = engine.device
    cpu_report()
    print(f"model {engine.card.name}  device {engine.device_name}  precision {engine.precision} "
          f"({engine.precision_why})  torch {torch.__version__}  threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.whole and args.model != "vit_b_16-random":
            sources = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
            whole_processes(args.model, sources, args.whole, args.repeats, Path(tmp))
        folder = Path(tmp) / "photos"
        folder.mkdir()
        sources = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
        for c in range(args.copies):
            for p in sources:
                shutil.copy(p, folder / f"{c}_{p.name}")
        paths = sorted(folder.iterdir())
        print(f"{len(paths)} images ({len(sources)} photos x {args.copies})")

        maps = Path(tmp) / "maps"
        runs: dict[str, Callable[[], float]] = {
            "naive": lambda: naive_loop(args.model, args.device, paths),
            "classify": lambda: cli_run(args.model, folder, Path(tmp) / "r.jsonl", args.device, args.batch_size, None),
            "heatmaps": lambda: cli_run(args.model, folder, Path(tmp) / "r2.jsonl", args.device, args.batch_size, maps),
            "engine": lambda: engine_run(engine, paths, args.batch_size, None),
            "engine+rollout": lambda: engine_run(engine, paths, args.batch_size, ExplainOptions()),
        }
        # Interleaved repeats, best of each: other work on the machine only ever slows a run down.
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                rates[name].append(run())
        best = {name: max(r) for name, r in rates.items()}
        naive, classify, heat = best["naive"], best["classify"], best["heatmaps"]
        plain_engine, with_maps_engine = best["engine"], best["engine+rollout"]

        flops = flops_per_image(engine)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(engine.precision, torch.float32)
        peak = matmul_flops_per_s(dev, dtype)
        limit = peak / flops
        print(f"\nimg/s of {args.repeats} interleaved runs:")
        for name, rs in rates.items():
            print(f"  {name:16s} {'  '.join(f'{r:6.1f}' for r in rs)}")
        print("best of each:")
        print(f"naive one-at-a-time loop           {naive:8.1f} img/s")
        print(f"vit-desktop classify               {classify:8.1f} img/s   {classify / naive:4.2f}x naive")
        print(f"vit-desktop classify --heatmaps    {heat:8.1f} img/s   {classify / heat - 1:+6.1%} time vs classify")
        print(f"engine only (no files written)     {plain_engine:8.1f} img/s,  with rollout {with_maps_engine:8.1f} img/s "
              f"({plain_engine / with_maps_engine - 1:+.1%} time)")
        print(f"machine limit                      {limit:8.1f} img/s   ({flops / 1e9:.2f} GFLOP/image, "
              f"matmul {peak / 1e12:.3f} TFLOP/s {str(dtype).split('.')[-1]})")
        print(f"classify reaches {classify / limit:.0%} of the matmul limit")
        if not args.skip_precision:
            print("\nprecision (engine, same images):")
            precision_table(args.model, args.device, paths, args.batch_size)


if __name__ == "__main__":
    main()
