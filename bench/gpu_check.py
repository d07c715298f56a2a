"""Everything a GPU run must answer, in one run: correctness first, then speed.

    PYTHONPATH=. python3 bench/gpu_check.py [--shared DIR] [--device D] [--quick]

Each check prints one line, ``PASS``, ``FAIL`` or ``SKIP``, its name and its figure; the exit
status is 1 when any check failed. ``--shared`` is a folder with ``weights/``, ``photos/`` and
``fewshot-dev/`` (default ``../shared``). On a machine without a GPU, ``--device cpu`` runs every
check at small sizes, so that minutes on a GPU go to figures, not typos.

Correctness:
- fp16 and bf16 top-1 agreement with fp32 on the shared photos (at least 99 %);
- rollout grids of each half precision against fp32 (Pearson r at least 0.99 on every photo);
- class maps finite, and agreeing with fp32 (r at least 0.95);
- a real out-of-memory: a batch far beyond the GPU's memory of a big model, split and carried on;
- fine-tuning (the few-shot head, then partial) on ``fewshot-dev`` under mixed precision.

Speed:
- ViT-B/16 (random weights), model only, at its best batch in bf16 and fp16, eager and with
  ``torch.compile``: images/s (target on an H100/H200: at least 10,000);
- end to end from a JPEG folder: the engine (CPU decode threads) and decoding on the device
  (``torchvision.io.decode_jpeg``), images/s of each (target at least 3,000).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop.core.inference.devices import BatchLimit, autocast, choose_precision, resolve_device
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.inference.rollout import RolloutAccumulator
from vit_desktop.core.models import vit
from vit_desktop.core.models.registry import RegistryEntry
from vit_desktop.core.types import ExplainOptions, ModelCard

failures: list[str] = []


def line(status: str, name: str, figure: str) -> None:
    if status == "FAIL":
        failures.append(name)
    print(f"{status} {name}: {figure}", flush=True)


def check(name: str, ok: bool, figure: str) -> None:
    line("PASS" if ok else "FAIL", name, figure)


def reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def guarded(name: str, fn: Callable[[], None]) -> None:
    """A check that crashes is a FAIL with its reason, and the others still run; each says its time."""
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - report and go on
        line("FAIL", name, reason(exc))
    print(f"     ({name}: {time.perf_counter() - started:.0f} s)", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a @ b) / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def half_precisions(device: torch.device) -> list[str]:
    return ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]


# --------------------------------------------------------------------------------------------
# Correctness


def precision_checks(weights: Path, photos: list[Path], device: str) -> None:
    ref = Engine.load(weights, device=device, precision="fp32")
    base = ref.classify(photos, ClassifyOptions(batch_size=32, explain=ExplainOptions()))
    base_top = [r.predictions[0].index for r in base]
    base_class = [ref.explain(p, ExplainOptions(method="class"), t).grid for p, t in zip(photos[:8], base_top)]
    for precision in half_precisions(ref.device):
        engine = Engine.load(weights, device=device, precision=precision)
        got = engine.classify(photos, ClassifyOptions(batch_size=32, explain=ExplainOptions()))
        agree = sum(r.predictions[0].index == t for r, t in zip(got, base_top)) / len(photos)
        check(f"{precision} top-1 agreement with fp32", agree >= 0.99, f"{agree:.1%} of {len(photos)} photos")
        rs = [pearson(r.heatmap.grid, b.heatmap.grid) for r, b in zip(got, base)
              if r.heatmap is not None and b.heatmap is not None]
        check(f"{precision} rollout vs fp32", min(rs) >= 0.99, f"r min {min(rs):.4f}, mean {np.mean(rs):.4f}")
        maps = [engine.explain(p, ExplainOptions(method="class"), t).grid for p, t in zip(photos[:8], base_top)]
        finite = all(np.isfinite(m).all() for m in maps)
        rc = [pearson(m, b) for m, b in zip(maps, base_class)]
        check(f"{precision} class maps finite and vs fp32", finite and min(rc) >= 0.95,
              f"finite {finite}, r min {min(rc):.4f}, mean {np.mean(rc):.4f}")


def out_of_memory_check(device: torch.device) -> None:
    if device.type != "cuda":
        line("SKIP", "out-of-memory split and carried on", "needs a GPU (a CPU would swap, not raise)")
        return
    from torchvision.models import vit_l_16

    module = vit_l_16().eval().to(device).half()
    total = torch.cuda.get_device_properties(device).total_memory
    # Rollout keeps (batch, tokens, tokens) per layer's probabilities: this many images cannot fit.
    n = int(total / (16 * 197 * 197 * 2 * 4)) + 512
    limit = BatchLimit(device)
    done = 0
    halvings: list[int] = []

    def batch(start: int, stop: int) -> int:
        x = torch.randn(stop - start, 3, 224, 224, device=device, dtype=torch.float16)
        acc = RolloutAccumulator()
        with torch.inference_mode():
            vit.forward(module, x, acc)
        return stop - start

    started = time.perf_counter()
    for _, _, count in limit.run(n, batch, on_smaller=halvings.append):
        done += count
    seconds = time.perf_counter() - started
    check("out-of-memory split and carried on", done == n and bool(halvings),
          f"{n} images of ViT-L/16 with rollout asked at once, split down to {limit.size} "
          f"({len(halvings)} halvings), all {done} done in {seconds:.1f} s")
    torch.cuda.empty_cache()


def finetune_checks(weights: Path, fewshot: Path, device: str, quick: bool) -> None:
    from vit_desktop.core.training import TrainConfig, finetune
    from vit_desktop.core.training.labelled_set import LabelledSet

    data = LabelledSet.from_folder(fewshot)
    base = Engine.load(weights, device=device)
    precision = choose_precision("auto", base.device, training=True)
    started = time.perf_counter()
    head = finetune(base, data, TrainConfig(mode="head"))
    acc = head.val_accuracy
    check("fine-tune head on fewshot-dev", acc >= 0.9,
          f"held-out accuracy {acc:.1%} ({head.metrics.validation}), "
          f"{time.perf_counter() - started:.1f} s, {precision}")
    started = time.perf_counter()
    epochs = 1 if quick else 3
    partial = finetune(base, data, TrainConfig(mode="partial", epochs=epochs, batch_size=32))
    losses = [loss for h in partial.history if (loss := h.get("loss")) is not None]
    check("fine-tune partial on fewshot-dev", bool(losses) and all(np.isfinite(losses)),
          f"{epochs} epochs, val accuracy {partial.val_accuracy:.1%}, last loss {losses[-1]:.3f}, "
          f"{time.perf_counter() - started:.1f} s, {precision}")


# --------------------------------------------------------------------------------------------
# Speed


def model_speed(device: torch.device, quick: bool) -> None:
    from torchvision.models import vit_b_16

    module = vit_b_16().eval().to(device)
    batches = [256, 512, 1024, 2048] if device.type == "cuda" else [2, 4]
    steps = 3 if quick or device.type != "cuda" else 10
    target = 10_000 if device.type == "cuda" else None

    def rate_of(fn: Callable[[torch.Tensor], torch.Tensor], batch: int, precision: str) -> float | None:
        try:
            x = torch.randn(batch, 3, 224, 224, device=device)
            with torch.inference_mode(), autocast(device, precision):
                for _ in range(2):
                    fn(x)
                sync(device)
                started = time.perf_counter()
                for _ in range(steps):
                    fn(x)
                sync(device)
            return batch * steps / (time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return None

    def eager(x: torch.Tensor) -> torch.Tensor:
        return vit.forward(module, x)

    for precision in half_precisions(device):
        rates = {}
        for batch in batches:
            rate = rate_of(eager, batch, precision)
            if rate is None:
                break
            rates[batch] = rate
            print(f"     ViT-B/16 {precision} eager    batch {batch:5d}: {rate:9.0f} img/s", flush=True)
        if not rates:
            line("FAIL", f"ViT-B/16 model only, {precision}", f"out of memory even at batch {batches[0]}")
            continue
        best_batch = max(rates, key=rates.__getitem__)
        best = (rates[best_batch], best_batch, "eager")
        if device.type == "cuda":  # compiled once, at the best eager batch (compiling takes a minute)
            try:
                compiled = rate_of(torch.compile(eager, dynamic=False), best_batch, precision)
            except Exception as exc:  # noqa: BLE001 - the eager figure still stands
                compiled = None
                print(f"     ViT-B/16 {precision} compiled: not measured, {reason(exc)}", flush=True)
            if compiled is not None:
                print(f"     ViT-B/16 {precision} compiled batch {best_batch:5d}: {compiled:9.0f} img/s", flush=True)
                if compiled > best[0]:
                    best = (compiled, best_batch, "compiled")
        figure = f"{best[0]:.0f} img/s at batch {best[1]} ({best[2]})"
        if target is None:
            line("PASS", f"ViT-B/16 model only, {precision}", figure + " (the 10,000 img/s target is for H100/H200)")
        else:
            check(f"ViT-B/16 model only, {precision}", best[0] >= target, figure + f", target {target}")


def folder_speed(weights: Path, photos: list[Path], device: str, quick: bool) -> None:
    dev = resolve_device(device)
    copies = 2000 if dev.type == "cuda" and not quick else 48
    target = 3_000 if dev.type == "cuda" else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = []
        for i in range(copies):
            src = photos[i % len(photos)]
            files.append(folder / f"{i:05d}{src.suffix}")
            shutil.copy(src, files[-1])
        for name in ("vit_b_16 (random)", "DeiT-Tiny"):
            if name.startswith("vit_b_16"):
                from torchvision.models import vit_b_16

                from vit_desktop.core.models.registry import REGISTRY

                entry = REGISTRY["vit_b_16"]
                engine = Engine.from_module(vit_b_16().eval(), _card(entry), device=device)
            else:
                engine = Engine.load(weights, device=device)
            batch = 256 if dev.type == "cuda" else 16
            engine.classify(files[:batch], ClassifyOptions(batch_size=batch))  # warm-up
            started = time.perf_counter()
            results = engine.classify(files, ClassifyOptions(batch_size=batch))
            rate = len(files) / (time.perf_counter() - started)
            ok = all(r.ok for r in results)
            figure = f"{rate:.0f} img/s over {len(files)} JPEGs, batch {batch}, {engine.decode_workers} decode threads"
            if target is None or not name.startswith("vit_b_16"):
                line("PASS" if ok else "FAIL", f"{name} folder, CPU decode ({engine.precision})", figure)
            else:
                check(f"{name} folder, CPU decode ({engine.precision})", ok and rate >= target,
                      figure + f", target {target}")
            # Its own guard: a torchvision without nvJPEG fails here, and the next model still runs.
            check_name = f"{name} folder, decode on {dev.type} ({engine.precision})"
            try:
                rate_dev = device_decode_rate(engine, files, batch)
            except Exception as exc:  # noqa: BLE001 - report and go on
                line("FAIL", check_name, reason(exc))
            else:
                line("PASS", check_name,
                     f"{rate_dev:.0f} img/s over {len(files)} JPEGs (torchvision.io.decode_jpeg on the device)")
            del engine
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def _card(entry: RegistryEntry) -> ModelCard:
    return ModelCard("vit_b_16 (random)", "registry", "vit_b_16", entry.arch, entry.labels, entry.preprocess)


def device_decode_rate(engine: Engine, files: list[Path], batch: int) -> float:
    """JPEG bytes -> decode, resize, crop and normalise on the device -> the model, per batch."""
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg, read_file

    pp = engine.card.preprocess
    device = engine.device
    mean = torch.tensor(pp.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=device).view(1, 3, 1, 1)
    c = pp.crop_size

    def run(chunk: list[Path]) -> None:
        data = [read_file(str(p)) for p in chunk]
        images = decode_jpeg(data, device=device)
        xs = []
        for img in images:
            h, w = img.shape[-2:]
            s = pp.resize_size
            nh, nw = (int(s * h / w), s) if w <= h else (s, int(s * w / h))
            x = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            top, left = (nh - c) // 2, (nw - c) // 2
            xs.append(x[..., top : top + c, left : left + c])
        x = (torch.cat(xs) / 255.0 - mean) / std
        with torch.inference_mode(), autocast(device, engine.precision):
            vit.forward(engine.module, x).softmax(-1).topk(5)

    run(files[:batch])
    sync(device)
    started = time.perf_counter()
    for i in range(0, len(files), batch):
        run(files[i : i + batch])
    sync(device)
    return len(files) / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer steps and epochs")
    args = ap.parse_args()
    shared = Path(args.shared)
    weights = shared / "weights" / "deit_tiny_patch16_224.safetensors"
    photos = sorted((shared / "photos").glob("*.JPEG"))
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; {os.cpu_count()} cpus; "
          f"auto precision {choose_precision('auto', device)}", flush=True)
    if not weights.is_file() or not photos:
        print(f"FAIL shared data: no {weights} or no photos under {shared / 'photos'}")
        return 1
    quick = args.quick or device.type != "cuda"
    guarded("precision checks", lambda: precision_checks(weights, photos, str(device)))
    guarded("out-of-memory split and carried on", lambda: out_of_memory_check(device))
    guarded("fine-tune on fewshot-dev", lambda: finetune_checks(weights, shared / "fewshot-dev", str(device), quick))
    guarded("ViT-B/16 model only", lambda: model_speed(device, quick))
    guarded("folder speed", lambda: folder_speed(weights, photos, str(device), quick))
    print(f"{len(failures)} failed" + (f": {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
