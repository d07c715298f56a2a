"""Where and how the model computes: device choice, precision, autocast, and running out of memory.

Everything that depends on the machine is decided here, once, for classification and training
alike: which device "auto" means, which precision "auto" means on it, the autocast context for
that precision, and the one out-of-memory back-off (:class:`BatchLimit`) that splits a batch
which does not fit and remembers the size that did.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

from vit_desktop.core.errors import ModelError, VitDesktopError
from vit_desktop.core.types import PRECISIONS, TRAINING_PRECISIONS, DeviceInfo

log = logging.getLogger(__name__)


T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Devices


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def available_devices() -> list[DeviceInfo]:
    """Every device the engine can use here, best first after "auto"."""
    found = [DeviceInfo("auto", "Automatic (best available)")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append(DeviceInfo(f"cuda:{i}", torch.cuda.get_device_name(i)))
    if _mps_available():
        found.append(DeviceInfo("mps", "Apple GPU (MPS)"))
    found.append(DeviceInfo("cpu", "CPU"))
    return found


def resolve_device(key: str = "auto") -> torch.device:
    """"auto" picks CUDA, then MPS, then CPU; anything else must be available or ModelError."""
    key = (key or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(key)
    except RuntimeError:
        raise ModelError(f"unknown device {key!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("CUDA was asked for but no CUDA GPU is available here: use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(f"no GPU {device.index}: this machine has {torch.cuda.device_count()}")
    elif device.type == "mps" and not _mps_available():
        raise ModelError("MPS was asked for but is not available here: use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"unsupported device {key!r}: use auto, cpu, cuda or mps")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return "CPU"


# --------------------------------------------------------------------------------------------
# Precision


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision and, in words, why it was chosen."""

    precision: str
    why: str

    def __str__(self) -> str:
        return f"{self.precision}: {self.why}"


#: "auto" takes int8 only where it costs at most this many points of top-1 against fp32 (the
#: bound bf16 is held to).
INT8_MAX_TOP1_LOSS = 0.5
#: What int8 costs, measured (bench/bench_cpu.py): DeiT-Tiny on the 187 labelled shared photos,
#: 81.3-82.4 % top-1 against fp32's 83.4 % (the activations' scale is the batch's, so the figure
#: moves with the batch size: 1.1 points at batch 16, 2.1 at others); the smaller figure is kept.
#: The one model measured, so auto applies it to every model.
INT8_TOP1_LOSS = 1.1


def int8_within_bound(loss: float | None = None) -> bool:
    """Whether int8's measured top-1 cost (:data:`INT8_TOP1_LOSS` unless given) is within the bound."""
    return (INT8_TOP1_LOSS if loss is None else loss) <= INT8_MAX_TOP1_LOSS


def choose_precision(precision: str, device: torch.device, *, training: bool = False) -> PrecisionChoice:
    """The compute precision for ``precision`` ("auto" or an explicit one) on ``device``, and why.

    "auto": half precision on GPUs (bf16 for training where the GPU has it: no loss scaling
    needed); on the CPU bf16 where the CPU computes it natively (AVX512-BF16 or AMX, about 1.4x
    fp32 for DeiT-Tiny at a 0.3-point top-1 cost), fp32 elsewhere, where bf16 is emulated and
    several times slower. A CPU that torch cannot tell about (not x86) is timed once and the
    verdict kept (:func:`cpu_bf16`). int8 (classification on the CPU only) is faster than fp32
    but is taken by "auto" only within :data:`INT8_MAX_TOP1_LOSS` of fp32's top-1, which it is not.
    """
    allowed = TRAINING_PRECISIONS if training else PRECISIONS
    if precision not in allowed:
        if precision in PRECISIONS:
            raise ModelError(f"{precision} is for classifying only: train in {', '.join(TRAINING_PRECISIONS)}")
        raise ModelError(f"unknown precision {precision!r}: use {', '.join(allowed)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ModelError("fp16 is not supported on the CPU: use fp32 or bf16")
        if precision == "int8" and device.type != "cpu":
            raise ModelError("int8 runs on the CPU only: use --device cpu, or fp16 on the GPU")
        return PrecisionChoice(precision, "as asked")
    if device.type == "cuda":
        if training:
            if torch.cuda.is_bf16_supported():
                return PrecisionChoice("bf16", "half precision on the GPU; bf16 trains without loss scaling")
            return PrecisionChoice("fp16", "half precision on the GPU (no bf16 here; losses are scaled)")
        return PrecisionChoice("fp16", "half precision on the GPU")
    if device.type == "mps":
        return PrecisionChoice("fp16", "half precision on the Apple GPU")
    fast, why = cpu_bf16()
    if fast:
        return PrecisionChoice("bf16", why)
    if not training and int8_within_bound():
        return PrecisionChoice("int8", f"{why}; int8 costs {INT8_TOP1_LOSS:g} points of top-1, within the "
                                       f"{INT8_MAX_TOP1_LOSS:g} allowed")
    return PrecisionChoice("fp32", why)


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
#: bf16 must beat fp32 by this factor in the timing to be chosen (its rounding costs accuracy).
BF16_MIN_SPEEDUP = 1.15


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 faster than fp32, and why (decided once per process).

    On x86 torch knows: AVX512-BF16 and AMX compute bf16 natively; without them oneDNN emulates it.
    Elsewhere (ARM: some cores have BF16 instructions, some do not) a few matrix multiplies are
    timed once per machine and torch version, and the verdict is kept in the state file.
    """
    cpu = getattr(torch, "cpu", None)
    if platform.machine().lower() in _X86 and cpu is not None and hasattr(cpu, "_is_avx512_bf16_supported"):
        if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
            return True, "this CPU computes bf16 natively (AMX)"
        if cpu._is_avx512_bf16_supported():
            return True, "this CPU computes bf16 natively (AVX512-BF16)"
        return False, "this CPU has no native bf16 (no AVX512-BF16 or AMX), where fp32 is faster"
    from vit_desktop.core import state

    key = f"{platform.machine()} {platform.processor()} {os.cpu_count()} cpus, torch {torch.__version__}"
    cached = state.cpu_bf16_verdict(key)
    if cached is not None:
        return cached >= BF16_MIN_SPEEDUP, f"bf16 timed {cached:.2f}x fp32 on this CPU (measured once)"
    speedup = _time_bf16()
    state.set_cpu_bf16_verdict(key, speedup)
    return speedup >= BF16_MIN_SPEEDUP, f"bf16 timed {speedup:.2f}x fp32 on this CPU"


def _time_bf16(size: int = 384, repeats: int = 5) -> float:
    """fp32 time / bf16 time of a ``size`` square matrix multiply, best of ``repeats`` each."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(4):
                torch.mm(x, y)
            times.append(time.perf_counter() - started)
        return min(times)

    with torch.inference_mode():
        fp32 = best(a, b)
        bf16 = best(a.bfloat16(), b.bfloat16())
    return fp32 / max(bf16, 1e-9)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """The autocast context for a resolved ``precision``; fp32 computes as it is, and so does int8
    (its quantised linears are int8 whatever the context, everything else fp32)."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Memory


def is_out_of_memory(exc: BaseException, device: torch.device) -> bool:
    """Out of memory: CUDA raises its own type, MPS and the CPU allocator a RuntimeError saying so.

    cuBLAS that cannot get its workspace under memory pressure says CUBLAS_STATUS_ALLOC_FAILED in
    a plain RuntimeError; a smaller batch is its cure too.
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    if device.type == "cpu":
        return "can't allocate memory" in text  # DefaultCPUAllocator
    return "out of memory" in text or (device.type == "cuda" and "cublas_status_alloc_failed" in text)


def free_cached_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back after running out of memory, before retrying."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


class OutOfMemory(VitDesktopError):
    """One item alone did not fit in the device's memory."""


class BatchLimit:
    """The largest batch known to fit on ``device``, learnt by halving on out-of-memory.

    The single back-off for classification and training: :meth:`run` splits work into batches of
    at most :attr:`size` items; a batch that runs out of memory is retried in halves, and the size
    that fitted is kept for what comes after (so later batches do not fail first).
    """

    def __init__(self, device: torch.device, size: int | None = None) -> None:
        self.device = device
        #: None: no limit known yet (the caller's whole request is tried first).
        self.size = size

    def run(
        self,
        total: int,
        fn: Callable[[int, int], T],
        *,
        on_smaller: Callable[[int], None] | None = None,
        on_single_failure: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, int, T]]:
        """Yield ``(start, stop, fn(start, stop))`` for consecutive batches covering ``range(total)``.

        ``on_smaller(size)`` is told each time the batch size is halved. A single item that does
        not fit goes to ``on_single_failure(index)`` and is skipped; without that callback
        :class:`OutOfMemory` is raised.
        """
        start = 0
        while start < total:
            step = min(total - start, self.size or total)
            try:
                value = fn(start, start + step)
            except Exception as exc:
                if not is_out_of_memory(exc, self.device):
                    raise
            else:
                yield start, start + step, value
                start += step
                continue
            # Out of the except block: the traceback no longer holds the batch's tensors.
            free_cached_memory(self.device)
            if step == 1:
                if on_single_failure is None:
                    advice = "a smaller model" if self.device.type == "cpu" else "the CPU or a smaller model"
                    raise OutOfMemory(f"not enough {device_name(self.device)} memory even for one image; use {advice}")
                on_single_failure(start)
                start += 1
                continue
            self.size = step // 2
            log.warning("out of %s memory at batch size %d: going on with %d",
                        device_name(self.device), step, self.size)
            if on_smaller is not None:
                on_smaller(self.size)


# --------------------------------------------------------------------------------------------
# The process's allocator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_allocator_tuned = False


def tune_allocator() -> None:
    """Let glibc's malloc keep freed tensor memory for reuse (once per process; Linux only).

    By default every buffer over ~128 KB to 32 MB (a batch's attention maps, MLP activations) is
    mapped fresh from the kernel and unmapped on free, so each layer of each batch pays page faults
    and zeroing. Serving them from the heap made DeiT-Tiny's CPU forward 15-30 % faster here and
    removed run-to-run swings of the same size (bench/bench_classify.py). The price is that up to
    256 MB of freed memory may stay with the process instead of going back to the system.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl): leave it
        pass


__all__ = [
    "BatchLimit",
    "OutOfMemory",
    "autocast",
    "available_devices",
    "device_name",
    "free_cached_memory",
    "is_out_of_memory",
    "resolve_device",
    "INT8_MAX_TOP1_LOSS",
    "INT8_TOP1_LOSS",
    "PrecisionChoice",
    "int8_within_bound",
    "choose_precision",
    "cpu_bf16",
    "tune_allocator",
]
