"""On a CPU without AVX-512 or native bf16 (this one, held to AVX2 by ``bench/hold_avx2.c``), "auto"
picks fp32 and the engine's fused fp32 path answers as plain PyTorch does.

Most desktops have such a CPU; the test machine may not. The shim answers every library's
``cpuid`` as an AVX2 CPU would (Linux's CPUID faulting), so torch, oneDNN and MKL run the kernels
they run there. Skipped where the shim cannot work: not Linux on x86-64, no C compiler, or no
CPUID faulting.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support import tiny_model
from vit_desktop.core.models import vit

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "bench" / "hold_avx2.c"

HELD_SCRIPT = """
import json, os, torch
from tests.support import tiny_model
from vit_desktop.core.inference.devices import choose_precision
from vit_desktop.core.models import vit
from vit_desktop.core.models.blocks import fused_cpu_available
module, _ = tiny_model(num_classes=5, seed=3)
x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
with torch.inference_mode():
    fused = vit.forward(module.eval(), x, fused=True)
    plain = vit.forward(module, x)
chosen = choose_precision("auto", torch.device("cpu"))
print(json.dumps({"held": os.environ.get("HOLD_AVX2"), "kernels": torch.backends.cpu.get_cpu_capability(),
                  "bf16": torch.cpu._is_avx512_bf16_supported(), "fused": fused_cpu_available(),
                  "auto": chosen.precision, "why": chosen.why, "fused_logits": fused.tolist(),
                  "plain_logits": plain.tolist()}))
"""


def _cpuid_faulting() -> bool:
    try:
        return "cpuid_fault" in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="module")
def held_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the CPUID shim is for Linux on x86-64")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not _cpuid_faulting():
        pytest.skip("no C compiler or no CPUID faulting here: this CPU cannot be held to AVX2")
    tmp = tmp_path_factory.mktemp("held")
    shim = tmp / "hold_avx2.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM)], check=True, capture_output=True)
    env = dict(os.environ, LD_PRELOAD=str(shim), PYTHONPATH=str(ROOT), VIT_DESKTOP_DATA_DIR=str(tmp / "data"))
    out = subprocess.run([sys.executable, "-c", HELD_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    if result["held"] != "1":
        pytest.skip("the kernel refused CPUID faulting here")
    return result


def test_a_cpu_without_native_bf16_gets_fp32(held_run: dict) -> None:
    assert held_run["kernels"] == "AVX2" and held_run["bf16"] is False
    assert held_run["auto"] == "fp32" and "no native bf16" in held_run["why"]


def test_the_fused_path_on_avx2_answers_as_plain_pytorch_here(held_run: dict) -> None:
    assert held_run["fused"] is True  # oneDNN's AVX2 fused linears pass the engine's own check
    fused, plain = torch.tensor(held_run["fused_logits"]), torch.tensor(held_run["plain_logits"])
    module, _ = tiny_model(num_classes=5, seed=3)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        here = vit.forward(module.eval(), x)  # this CPU's own kernels, not held
    assert torch.equal(fused.argmax(-1), here.argmax(-1))
    assert torch.allclose(fused.softmax(-1), here.softmax(-1), atol=1e-4)
    assert torch.allclose(plain.softmax(-1), here.softmax(-1), atol=1e-4)
