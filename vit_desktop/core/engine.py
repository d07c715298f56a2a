"""The engine: one ViT on one device; batched classification and explanations.

An ``Engine`` is used from a single thread (the GUI's compute thread, or the command line's main
thread): CUDA state and ``inference_mode`` are per thread. Decoding runs in a small thread pool
that stays a couple of batches ahead of the model (Pillow releases the GIL while decoding and
resizing), so decoding overlaps inference and memory is bounded by the look-ahead, not by the
folder's size.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torchvision.models import VisionTransformer

from . import images
from .checkpoints import load_checkpoint
from .rollout import RolloutAccumulator, forward_with_attention, gradient_rollout
from .types import (
    Cancelled,
    CancelToken,
    ClassifyResult,
    DeviceInfo,
    ExplainOptions,
    Heatmap,
    ImageError,
    ModelCard,
    ModelError,
    Prediction,
    Preprocess,
    ProgressCallback,
)

ImageSource = Union[str, os.PathLike, Image.Image]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

log = logging.getLogger(__name__)


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


def is_out_of_memory(exc: BaseException, device: torch.device) -> bool:
    """Out of memory: CUDA raises its own type, MPS and the CPU allocator a RuntimeError saying so."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    if device.type == "cpu":
        return "can't allocate memory" in text  # DefaultCPUAllocator
    return "out of memory" in text


def free_cached_memory(device: torch.device) -> None:
    """Hand the allocator's cached blocks back after running out of memory, before retrying."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The compute precision: half on GPUs; on CPU fp32, which measured fastest within accuracy."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ModelError("fp16 is not supported on the CPU: use fp32 or bf16")
        return precision
    return "fp16" if device.type in ("cuda", "mps") else "fp32"


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
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (AttributeError, ValueError, OSError):  # not glibc (macOS, Windows, musl): leave it
        pass


# --------------------------------------------------------------------------------------------
# Preprocessing


def apply_colour(image: Image.Image, pp: Preprocess) -> Image.Image:
    """The model's colour handling: grayscale ("L") and/or inverted, as ``pp`` says."""
    if pp.color_mode == "L":
        image = image.convert("L")
    if pp.invert:
        from PIL import ImageOps

        image = ImageOps.invert(image)
    return image


def model_input(image: Image.Image, pp: Preprocess) -> np.ndarray:
    """(crop, crop, 3) uint8: resize the shorter side to ``resize_size`` and centre-crop, in one step.

    PIL's ``resize(box=...)`` samples exactly the crop region of the (possibly draft-decoded)
    image, so no intermediate full-size resize is made and the region matches ``Preprocess.crop_box``.
    """
    image = apply_colour(image, pp)
    box = pp.crop_box(*image.size)
    out = image.resize((pp.crop_size, pp.crop_size), _RESAMPLE[pp.interpolation], box=box)
    if out.mode != "RGB":
        out = out.convert("RGB")
    return np.asarray(out, dtype=np.uint8)


def normalized_tensor(image: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float32 on the CPU, normalised: :func:`model_input` as a tensor."""
    x = torch.from_numpy(model_input(image, pp).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


_Prepared = tuple[np.ndarray, tuple[int, int]]


def _prepare_path(path: Path, pp: Preprocess) -> _Prepared:
    image, size = images.load_image_with_size(path, draft_size=pp.resize_size)
    return model_input(image, pp), size


def _prepare_image(image: Image.Image, pp: Preprocess) -> _Prepared:
    rgb = images.to_rgb(image)
    return model_input(rgb, pp), rgb.size


# --------------------------------------------------------------------------------------------
# Engine


class Engine:
    """One ViT on one device. Not thread-safe: use it from one thread."""

    #: Batches decoded ahead of the one being computed.
    prefetch_batches = 2

    def __init__(self, module: VisionTransformer, card: ModelCard, device: torch.device, precision: str) -> None:
        tune_allocator()
        self.module = module.eval().to(device)
        # Inference never needs weight gradients; training code re-enables what it trains.
        self.module.requires_grad_(False)
        self.card = card
        self.device = device
        self.device_name = device_name(device)
        self.precision = precision
        mean = torch.tensor(card.preprocess.mean, dtype=torch.float64)
        std = torch.tensor(card.preprocess.std, dtype=torch.float64)
        # (x / 255 - mean) / std as one multiply-add per pixel: x * scale - shift.
        self._scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1).to(device)
        self._shift = (mean / std).float().view(1, 3, 1, 1).to(device)
        self.decode_workers = max(1, min(4, (os.cpu_count() or 2)))
        # The largest batch known to fit in device memory, without and with rollout.
        self._fits: dict[bool, int] = {}

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str],
        *,
        device: str = "auto",
        precision: str = "auto",
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Engine:
        """A registry name (downloaded on first use) or a checkpoint file/folder, on ``device``."""
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        text = os.fspath(source)
        from . import registry

        if text in registry.REGISTRY:
            module, card = registry.load_registry_model(text, progress=progress, cancel=cancel)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                named = registry.find_model_file(text)
                if named is None:
                    names = ", ".join(registry.REGISTRY)
                    raise ModelError(f"{text}: not a model name ({names}) and no such file or folder")
                path = named
            module, card = load_checkpoint(path)
        return cls(module, card, dev, prec)

    @classmethod
    def from_module(
        cls, module: VisionTransformer, card: ModelCard, *, device: str = "auto", precision: str = "auto"
    ) -> Engine:
        dev = resolve_device(device)
        return cls(module, card, dev, resolve_precision(precision, dev))

    # ---- tensors -------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _to_batch(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        # uint8 crosses to the device (4x less than float), normalisation happens there.
        # (n, h, w, 3) uint8 -> (n, 3, h, w) float
        x = torch.from_numpy(np.stack(arrays))
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        # One pass converts and transposes into a contiguous (n, 3, h, w) buffer, which the patch
        # convolution reads faster than the channels-last view; then normalise in place.
        out = torch.empty(x.shape, dtype=torch.float32, device=self.device)
        return out.copy_(x).mul_(self._scale).sub_(self._shift)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) normalised float32 on the CPU: exactly what classification feeds the model."""
        return normalized_tensor(images.to_rgb(image), self.card.preprocess)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """(n, hidden) class-token features before the head, for normalised (n, 3, H, W) input.

        Runs on the engine's device and returns a float32 tensor there.
        """
        m = self.module
        with torch.inference_mode(), self._autocast():
            x = m._process_input(batch.to(self.device))
            n = x.shape[0]
            x = torch.cat([m.class_token.expand(n, -1, -1), x], dim=1)
            x = m.encoder(x)
            return x[:, 0].float()

    def _forward(
        self, x: torch.Tensor, explain: ExplainOptions | None, cancel: CancelToken | None = None
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """Probabilities (n, classes) on the CPU and, when asked, rollout grids (n, g, g).

        Raises Cancelled when ``cancel`` is set between two layers.
        """
        with torch.inference_mode(), self._autocast():
            if explain is None:
                # On the CPU the rewritten forward (fused attention, QKV as one matrix multiply)
                # measured about 15 % faster than the module's own; GPUs keep the module's fused path.
                if self.device.type == "cpu":
                    logits = forward_with_attention(self.module, x, cancel=cancel)
                else:
                    logits = self.module(x)
                grids = None
            else:
                acc = RolloutAccumulator(explain.head_fusion, explain.discard_ratio)
                logits = forward_with_attention(self.module, x, acc, cancel=cancel)
                grids = acc.grid().float().cpu().numpy()
            probs = logits.float().softmax(dim=-1).cpu()
        return probs, grids

    def _predictions(self, probs: torch.Tensor, top_k: int) -> list[tuple[Prediction, ...]]:
        k = max(1, min(top_k, probs.shape[1]))
        scores, idx = probs.topk(k, dim=1)
        labels = self.card.labels
        return [
            tuple(Prediction(labels[i], i, float(s)) for s, i in zip(srow.tolist(), irow.tolist()))
            for srow, irow in zip(scores, idx)
        ]

    # ---- classification ----------------------------------------------------------------

    def classify_batches(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        top_k: int = 5,
        batch_size: int = 16,
        explain: ExplainOptions | None = None,
        threshold: float = 0.0,
        cancel: CancelToken | None = None,
    ) -> Iterator[list[ClassifyResult]]:
        """Classify image files, yielding one list of results per batch, in input order.

        Per-file problems become ``ClassifyResult.error``; the run goes on. When ``cancel`` is set
        the generator ends at the next batch boundary.
        """
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        items = [Path(p) for p in paths]
        pp = self.card.preprocess
        pending: deque[tuple[Path, Future[_Prepared]]] = deque()
        window = batch_size * (1 + self.prefetch_batches)
        pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="vit-decode")
        try:
            submitted = 0
            for start in range(0, len(items), batch_size):
                if cancel is not None and cancel.cancelled:
                    return
                while submitted < len(items) and submitted < start + window:
                    p = items[submitted]
                    pending.append((p, pool.submit(_prepare_path, p, pp)))
                    submitted += 1
                batch = [pending.popleft() for _ in range(min(batch_size, len(items) - start))]
                prepared = [(str(p), _outcome(f)) for p, f in batch]
                try:
                    results = self._run_prepared(prepared, top_k=top_k, explain=explain, threshold=threshold, cancel=cancel)
                except Cancelled:
                    return  # mid-batch: that batch's results are dropped, like those not started
                yield results
        finally:
            for _, f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def classify(self, paths: Sequence[str | os.PathLike[str]], **options: object) -> list[ClassifyResult]:
        """All results of :meth:`classify_batches` as one list."""
        out: list[ClassifyResult] = []
        for batch in self.classify_batches(paths, **options):  # type: ignore[arg-type]
            out.extend(batch)
        return out

    def classify_image(
        self,
        image: Image.Image,
        name: str,
        *,
        top_k: int = 5,
        explain: ExplainOptions | None = None,
        threshold: float = 0.0,
    ) -> ClassifyResult:
        """Classify an in-memory image (a pasted one); ``name`` stands in for its path."""
        try:
            prepared: _Prepared | str = _prepare_image(image, self.card.preprocess)
        except ImageError as exc:
            prepared = str(exc)
        return self._run_prepared([(name, prepared)], top_k=top_k, explain=explain, threshold=threshold)[0]

    def _run_prepared(
        self,
        batch: Sequence[tuple[str, _Prepared | str]],
        *,
        top_k: int,
        explain: ExplainOptions | None,
        threshold: float,
        cancel: CancelToken | None = None,
    ) -> list[ClassifyResult]:
        ok = [(i, p) for i, (_, p) in enumerate(batch) if not isinstance(p, str)]
        results: list[ClassifyResult] = [
            ClassifyResult(path=name, error=p) if isinstance(p, str) else None  # type: ignore[misc]
            for name, p in batch
        ]
        if ok:
            outcomes = self._forward_fitting([p[0] for _, p in ok], explain, cancel)
            for (i, _), outcome in zip(ok, outcomes):
                if isinstance(outcome, str):
                    results[i] = ClassifyResult(path=batch[i][0], error=outcome)
            done = [(item, out) for item, out in zip(ok, outcomes) if not isinstance(out, str)]
            if not done:
                return results
            probs = torch.stack([out[0] for _, out in done])
            for ((i, (_, size)), (_, grid)), preds in zip(done, self._predictions(probs, top_k)):
                heatmap = None
                if grid is not None and explain is not None:
                    heatmap = Heatmap(
                        grid=grid.astype(np.float32),
                        crop_box=self.card.preprocess.crop_box(*size),
                        image_size=size,
                        class_index=None,
                        head_fusion=explain.head_fusion,
                        discard_ratio=explain.discard_ratio,
                    )
                results[i] = ClassifyResult(
                    path=batch[i][0],
                    predictions=preds,
                    uncertain=preds[0].score < threshold,
                    heatmap=heatmap,
                    image_size=size,
                )
        return results

    def _forward_fitting(
        self, arrays: Sequence[np.ndarray], explain: ExplainOptions | None, cancel: CancelToken | None
    ) -> list[tuple[torch.Tensor, np.ndarray | None] | str]:
        """Per image, (probabilities, rollout grid or None) or why it failed.

        A batch that does not fit in the device's memory is split in halves until it does; the
        size that fitted is kept for the batches after it. An image that does not fit on its own
        gets an error and the run goes on.
        """
        out: list[tuple[torch.Tensor, np.ndarray | None] | str] = []
        mode = explain is not None
        start = 0
        while start < len(arrays):
            step = min(len(arrays) - start, self._fits.get(mode, len(arrays)))
            try:
                probs, grids = self._forward(self._to_batch(arrays[start : start + step]), explain, cancel)
            except Exception as exc:  # noqa: BLE001 - only running out of memory is handled here
                if not is_out_of_memory(exc, self.device):
                    raise
                oom = True
            else:
                oom = False
            if oom:
                # Outside the except block: the traceback no longer holds the batch's tensors.
                free_cached_memory(self.device)
                if step == 1:
                    advice = "a smaller model" if self.device.type == "cpu" else "the CPU (--device cpu) or a smaller model"
                    out.append(f"not enough {self.device_name} memory for this model even one image at a time; use {advice}")
                    start += 1
                else:
                    self._fits[mode] = step // 2
                    log.warning("out of %s memory at batch size %d: going on with %d", self.device_name, step, step // 2)
                continue
            out.extend((probs[r], None if grids is None else grids[r]) for r in range(step))
            start += step
        return out

    # ---- explanations --------------------------------------------------------------------

    def _prepare_source(self, source: ImageSource) -> _Prepared:
        if isinstance(source, Image.Image):
            return _prepare_image(source, self.card.preprocess)
        return _prepare_path(Path(source), self.card.preprocess)

    def rollout(self, source: ImageSource, options: ExplainOptions) -> Heatmap:
        """The class-agnostic attention rollout of one image. Raises ImageError."""
        arr, size = self._prepare_source(source)
        _, grids = self._forward(self._to_batch([arr]), options)
        assert grids is not None
        return Heatmap(
            grid=grids[0].astype(np.float32),
            crop_box=self.card.preprocess.crop_box(*size),
            image_size=size,
            head_fusion=options.head_fusion,
            discard_ratio=options.discard_ratio,
        )

    def explain_class(self, source: ImageSource, class_index: int) -> Heatmap:
        """Gradient-weighted rollout for ``class_index`` (Chefer et al. 2021). Raises ImageError."""
        if not 0 <= class_index < self.card.num_classes:
            raise ValueError(f"class index {class_index} out of range 0..{self.card.num_classes - 1}")
        arr, size = self._prepare_source(source)
        x = self._to_batch([arr])
        target = torch.tensor([class_index], device=self.device)
        with self._autocast():
            _, grids = gradient_rollout(self.module, x, target)
        return Heatmap(
            grid=grids[0].float().cpu().numpy().astype(np.float32),
            crop_box=self.card.preprocess.crop_box(*size),
            image_size=size,
            class_index=class_index,
            head_fusion="mean",
        )


def _outcome(future: Future[_Prepared]) -> _Prepared | str:
    """The prepared image, or the one-line reason it could not be prepared."""
    try:
        return future.result()
    except ImageError as exc:
        return str(exc)
    except Exception as exc:  # a decoder bug must not end a folder run
        return f"could not read image: {type(exc).__name__}: {exc}".splitlines()[0]
