"""The CPU side by side: the engine against the runtimes peers use, model only and whole process.

    python bench/bench_cpu.py [--model FILE] [--batch-size 32] [--repeats 5] [--whole 400]
        [--skip-compile] [--skip-whole] [--avx2]

Prints, in one run, on this CPU (its model name and the flags that decide precision first):

1. answers: on the 187 labelled shared photos (``photos`` and ``fewshot-dev``), each path's top-1
   accuracy, its top-1 agreement with plain fp32 torch and its largest probability difference:
   the engine's fp32 path (fused linears, packed weights, two streams; and as one stream), bf16,
   int8, onnxruntime fp32 and dynamic int8 on the project's own (verified) export, torch.compile;
2. model only, images/s, interleaved runs (median and range) at ``--batch-size`` with torch's
   threads: the same paths, next to the machine's limit (the model's FLOPs per image against a
   large matrix multiply's measured rate, fp32 and bf16);
3. torch.compile in fresh processes: what compiling costs with an empty inductor cache and with a
   warm one, and compiled against eager images/s in the same process;
4. whole processes, start-up included, on ``--whole`` photos (copies of the shared photos) and on
   one: a naive one-photo-at-a-time script against ``vit-desktop classify --fresh`` in fp32 (what a
   CPU without native bf16 runs: "auto" picks fp32 there), auto and int8, each run in an empty data
   folder so that nothing is read from the library; and fp32 once more where the library has seen
   the model (on another photo) but none of these photos, as on every run after a model's first.

``--avx2`` runs parts 2 and 4 again in a process held to AVX2, the nearest this machine comes to a CPU
without AVX-512: ``hold_avx2.c`` (built with the system's C compiler, preloaded) answers every
library's ``cpuid`` as an AVX2 + FMA CPU without AVX-512, AMX or VNNI would, so torch's ATen, oneDNN
and MKL and onnxruntime all pick their AVX2 kernels; torch's own switches are set too. Where the
shim cannot be built or the kernel has no CPUID faulting, only torch is held and the run says so.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_classify import NAIVE_SCRIPT, cpu_report, flops_per_image, labelled_photos

from vit_desktop.core.inference.devices import cpu_bf16, tune_allocator
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.streams import in_two
from vit_desktop.core.io import images
from vit_desktop.core.models import vit
from vit_desktop.core.models.preprocess import prepare_file

SHARED = ROOT.parent / "shared"
DEIT = SHARED / "weights" / "deit_tiny_patch16_224.safetensors"
#: Seconds between timed runs of different paths, for the last one's threads to stop spinning.
SETTLE_S = 0.3
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def spread(values: list[float], unit: str = "") -> str:
    """"median 85.3 (81.0-87.2)"."""
    return f"median {statistics.median(values):7.1f}{unit} ({min(values):.1f}-{max(values):.1f})"


def load_avg() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    """FLOP/s of an n x n matrix multiply, best of a few (other work only ever slows it)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def model_inputs(engine: Engine, paths: list[Path]) -> torch.Tensor:
    """(n, 3, h, w): what the engine feeds its model for these photos."""
    return engine._to_batch([prepare_file(p, engine.card.preprocess).pixels for p in paths])


# ---- the paths -----------------------------------------------------------------------------


def torch_path(module: vit.ViT, *, fused: bool = False, bf16: bool = False) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return vit.forward(module, x, fused=fused).float().numpy()

    return run


def streams_path(module: vit.ViT) -> Callable[[torch.Tensor], np.ndarray]:
    """The engine's fp32 path: fused, packed, each half of the batch on half of the threads at once."""
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            (logits,) = in_two(lambda part: (vit.forward(module, part, fused=True),), x)
            return logits.float().numpy()

    return run


def ort_paths(engine: Engine, tmp: Path, threads: int) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    """onnxruntime fp32 on the project's verified export, and its dynamic int8 quantisation of it."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from vit_desktop.core.models.onnx import export_onnx

    fp32 = tmp / "model.onnx"
    report = export_onnx(copy.deepcopy(engine.module), engine.card, fp32, photos=sorted((SHARED / "photos").glob("*.JPEG"))[:6])
    print(f"export: {report.summary()}")
    int8 = tmp / "model.int8.onnx"
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process first
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    out: dict[str, Callable[[torch.Tensor], np.ndarray]] = {}
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor, s: ort.InferenceSession = session) -> np.ndarray:
            return s.run(None, {"pixel_values": x.numpy()})[0]

        out[name] = run
    return out


def batched(fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, batch: int) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(logits).float().softmax(dim=-1).numpy()


def answers(paths: dict[str, Callable[[torch.Tensor], np.ndarray]], x: torch.Tensor, truth: np.ndarray,
            batch: int) -> None:
    """Accuracy, agreement with plain fp32 torch and the largest probability difference, per path."""
    reference = softmax(batched(paths["torch fp32 (plain eager)"], x, batch))
    ref_top = reference.argmax(1)
    print(f"\nanswers on {len(truth)} labelled photos (batch {batch}; reference: plain fp32 torch, "
          f"accuracy {100 * (ref_top == truth).mean():.2f} %):")
    for name, fn in paths.items():
        p = softmax(batched(fn, x, batch))
        top = p.argmax(1)
        print(f"  {name:28s} top-1 {100 * (top == truth).mean():6.2f} %   same top-1 as fp32 {(top == ref_top).sum():3d}/"
              f"{len(top)} ({100 * (top == ref_top).mean():5.1f} %)   probabilities within {np.abs(p - reference).max():.1e}")


def model_only(paths: dict[str, Callable[[torch.Tensor], np.ndarray]], x: torch.Tensor, repeats: int,
               limits: dict[str, float]) -> dict[str, list[float]]:
    """images/s of each path on one batch, interleaved.

    Each run starts after a pause: the runtimes' worker threads spin for a while after their last
    work (OpenMP's block time, onnxruntime's spinning), and measured straight after another path
    DeiT-Tiny ran 76.6 images/s in fp32 against 82.6 on its own, onnxruntime 51.8 against 65.4.
    """
    for fn in paths.values():
        fn(x)
        fn(x)
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fn(x)
            rates[name].append(len(x) / (time.perf_counter() - t0))
    print(f"\nmodel only, batch {len(x)}, {torch.get_num_threads()} threads, {repeats} interleaved runs, images/s "
          f"({load_avg()}):")
    for name, r in rates.items():
        kind = "bf16" if "bf16" in name else "fp32"
        print(f"  {name:28s} {spread(r)}   {statistics.median(r) / limits[kind]:4.0%} of the {kind} limit")
    return rates


# ---- torch.compile in its own processes ---------------------------------------------------------


def compile_run(model: str, batch: int, repeats: int) -> None:
    """In a fresh process: compile the forward (timed), check it, then compiled vs eager images/s."""
    tune_allocator()
    started = time.perf_counter()
    engine = Engine.load(model, device="cpu", precision="fp32")
    module = engine.module
    x = torch.randn(batch, 3, engine.card.arch.image_size, engine.card.arch.image_size)
    t0 = time.perf_counter()
    compiled = torch.compile(lambda t: vit.forward(module, t), dynamic=False)
    with torch.inference_mode():
        got = compiled(x)
    compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        diff = float((got.softmax(-1) - vit.forward(module, x).softmax(-1)).abs().max())
    runs = {"eager (engine, two streams)": lambda: streams_path(module)(x), "torch.compile": lambda: compiled(x)}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, fn in runs.items():
                t1 = time.perf_counter()
                fn()
                rates[name].append(batch / (time.perf_counter() - t1))
    print(f"compile {compile_s:.1f} s (process {time.perf_counter() - started:.1f} s), probabilities within {diff:.1e}; "
          + "; ".join(f"{k} {spread(v)}" for k, v in rates.items()))


def compile_section(model: str, batch: int, repeats: int, tmp: Path) -> None:
    cache = tmp / "inductor"
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    print(f"\ntorch.compile (inductor, fp32, batch {batch}), fresh processes ({load_avg()}):")
    for label in ("empty cache", "warm cache", "warm cache"):
        out = subprocess.run([sys.executable, __file__, "--compile-run", "--model", model, "--batch-size", str(batch),
                              "--repeats", str(repeats)], capture_output=True, text=True, env=env)
        line = [s for s in out.stdout.splitlines() if s.startswith("compile")]
        print(f"  {label:12s} {line[-1] if line else 'failed: ' + (out.stderr.strip().splitlines() or ['?'])[-1]}")


# ---- whole processes ------------------------------------------------------------------------------


#: The whole-process run of a model the library knows (every run after a model's first on a machine).
KNOWN = "classify fp32, model known"


def whole_section(model: str, n: int, repeats: int, tmp: Path) -> None:
    """The naive script against classify --fresh in fp32, auto and int8, interleaved, in empty data
    folders; and fp32 where the library knows the model already (not the photos). Either way the
    first photos are decoded while torch is imported: with the preprocessing the file's header
    says, or the one the library's card says."""
    script = tmp / "naive.py"
    script.write_text(NAIVE_SCRIPT, encoding="utf-8")
    sources = sorted(p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
    for count in (n, 1):
        folder = tmp / f"whole{count}"
        folder.mkdir()
        for i in range(count):
            shutil.copy(sources[i % len(sources)], folder / f"{i:04d}_{sources[i % len(sources)].name}")

        def classify(*extra: str, folder: Path = folder) -> list[str]:
            return [sys.executable, "-m", "vit_desktop", "classify", str(folder), "--model", model, "--device", "cpu",
                    "--fresh", "--output", str(tmp / "out.jsonl"), "--overwrite", *extra]

        runs = {
            "naive script": [sys.executable, str(script), model, str(folder), str(tmp / "naive.txt")],
            "classify fp32 (no bf16)": classify("--precision", "fp32"),
            KNOWN: classify("--precision", "fp32"),
            f"classify auto ({'bf16' if cpu_bf16()[0] else 'fp32'} here)": classify(),
            "classify int8": classify("--precision", "int8"),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        loads = []
        for _ in range(repeats):
            for name, argv in runs.items():
                data = tmp / "data"
                shutil.rmtree(data, ignore_errors=True)  # nothing read from the library
                env = dict(os.environ, VIT_DESKTOP_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
                if name == KNOWN:  # the library learns the model (and this machine) on another photo
                    subprocess.run([*argv[:4], str(sources[-1]), *argv[5:]], check=True, capture_output=True, cwd=ROOT,
                                   env=env)
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, cwd=ROOT, env=env)
                times[name].append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
        naive = statistics.median(times["naive script"])
        print(f"\nwhole process, {count} photo{'s' if count != 1 else ''}, start-up included, {repeats} interleaved runs, "
              f"seconds (1-minute load average {min(loads):.2f}-{max(loads):.2f}):")
        for name, t in times.items():
            ratio = "" if name == "naive script" else f"   {naive / statistics.median(t):4.2f}x the naive script"
            print(f"  {name:26s} {spread(t, ' s')}{ratio}")


# ---- main -----------------------------------------------------------------------------------------


def avx2_env(tmp: Path) -> dict[str, str]:
    """The environment of a process held to AVX2: torch's switches, and the CPUID shim preloaded
    where it builds (see the module's docstring)."""
    env = dict(os.environ, **AVX2_ENV)
    shim = tmp / "hold_avx2.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("  (no C compiler: onnxruntime is not held to AVX2)")
        return env
    built = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(ROOT / "bench" / "hold_avx2.c")],
                           capture_output=True, text=True)
    if built.returncode != 0:
        print(f"  (the CPUID shim did not build, onnxruntime is not held to AVX2: {built.stderr.strip()[:200]})")
        return env
    env["LD_PRELOAD"] = " ".join(filter(None, [str(shim), env.get("LD_PRELOAD")]))
    return env


def held_report() -> None:
    """In a process started by :func:`avx2_env`: what is held."""
    if os.environ.get("HOLD_AVX2") == "1":
        print(f"  every library sees an AVX2 CPU (CPUID shim); torch's kernels: {torch.backends.cpu.get_cpu_capability()}")
    elif any(k in os.environ for k in AVX2_ENV):
        print(f"  torch held by its switches (kernels: {torch.backends.cpu.get_cpu_capability()}); "
              "onnxruntime NOT held (no CPUID faulting here): its figures are this CPU's own")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEIT))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved runs of each")
    ap.add_argument("--whole", type=int, default=400, metavar="N", help="photos for the whole-process runs")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--avx2", action="store_true", help="also parts 2 and 4 in a process held to AVX2 (see above)")
    ap.add_argument("--compile-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--held", action="store_true", help=argparse.SUPPRESS)  # the --avx2 process: parts 2 and 4
    args = ap.parse_args()
    if args.compile_run:
        compile_run(args.model, args.batch_size, args.repeats)
        return
    tune_allocator()
    if args.held:
        held_report()
    elif not args.model_only:
        cpu_report()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_avg()}")
    fp32 = Engine.load(args.model, device="cpu", precision="fp32")
    int8 = Engine.load(args.model, device="cpu", precision="int8")
    labelled = labelled_photos()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        native_bf16, why = cpu_bf16()
        paths: dict[str, Callable[[torch.Tensor], np.ndarray]] = {
            "torch fp32 (plain eager)": torch_path(fp32.module),
            "engine fp32, one stream": torch_path(fp32.module, fused=True),
            "engine fp32 (two streams)": streams_path(fp32.module),
        }
        if native_bf16:
            paths["engine bf16"] = torch_path(fp32.module, bf16=True)
        paths["engine int8"] = torch_path(int8.runner)
        paths.update(ort_paths(fp32, tmp, torch.get_num_threads()))
        flops = flops_per_image(fp32)
        limits = {"fp32": matmul_rate(torch.float32) / flops}
        line = (f"machine limit: {flops / 1e9:.2f} GFLOP per image; a 2048 matmul runs "
                f"{limits['fp32'] * flops / 1e9:.0f} GFLOP/s fp32 = {limits['fp32']:.0f} images/s")
        if native_bf16:
            limits["bf16"] = matmul_rate(torch.bfloat16) / flops
            line += f", {limits['bf16'] * flops / 1e9:.0f} GFLOP/s bf16 = {limits['bf16']:.0f} images/s"
        else:  # emulated bf16 multiplies at well under 1 GFLOP/s: minutes per figure, and auto never picks it
            line += f"; bf16 not timed ({why})"
        print(line)
        if labelled and not (args.model_only or args.held):
            x = model_inputs(fp32, [p for p, _ in labelled])
            answers(paths, x, np.array([y for _, y in labelled]), 16)
        sample = model_inputs(fp32, [p for p, _ in labelled][: args.batch_size])
        model_only(paths, sample, args.repeats, limits)
        if args.held and not args.skip_whole:
            whole_section(args.model, args.whole, max(3, args.repeats // 2), tmp)
        if args.model_only or args.held:
            return
        if args.avx2:
            print("\nthe same held to AVX2:", flush=True)
            subprocess.run([sys.executable, __file__, "--held", "--model", args.model, "--batch-size",
                            str(args.batch_size), "--repeats", str(args.repeats), "--whole", str(args.whole),
                            *(["--skip-whole"] if args.skip_whole else [])], env=avx2_env(tmp))
        if not args.skip_compile:
            compile_section(args.model, args.batch_size, args.repeats, tmp)
        if not args.skip_whole:
            whole_section(args.model, args.whole, max(3, args.repeats // 2), tmp)


if __name__ == "__main__":
    main()
