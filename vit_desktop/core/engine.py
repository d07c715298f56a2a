"""The engine: one ViT on one device; batched classification and explanations.

An ``Engine`` is used from a single thread (the GUI's compute thread, or the command line's main
thread): CUDA state and ``inference_mode`` are per thread. Decoding runs in a small thread pool
that stays a couple of batches ahead of the model (Pillow releases the GIL while decoding and
resizing), so decoding overlaps inference and memory is bounded by the look-ahead, not by the
folder's size.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models import VisionTransformer

from . import images, vit
from .categories import Categories
from .checkpoints import load_checkpoint
from .devices import BatchLimit, autocast, device_name, resolve_device, resolve_precision, tune_allocator
from .errors import Cancelled, CancelToken, ImageError, ModelError, first_line
from .preprocess import Prepared, normalized_tensor, prepare_file, prepare_image
from .rollout import RolloutAccumulator, gradient_rollout
from .types import ClassifyResult, ExplainOptions, Heatmap, ModelCard, Prediction, ProgressCallback

ImageSource = str | os.PathLike[str] | Image.Image

log = logging.getLogger(__name__)

_ENGINE_IDS = itertools.count(1)


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
        #: Tells this loaded model apart from every other one in the process (results carry it).
        self.model_id = f"{card.name}#{next(_ENGINE_IDS)}"
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
        self._limits = {False: BatchLimit(device), True: BatchLimit(device)}

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
        return autocast(self.device, self.precision)

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

    def _forward(
        self, x: torch.Tensor, explain: ExplainOptions | None, cancel: CancelToken | None = None
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """Probabilities (n, classes) on the CPU and, when asked, rollout grids (n, g, g).

        Raises Cancelled when ``cancel`` is set between two layers.
        """
        with torch.inference_mode(), self._autocast():
            if explain is None:
                logits = vit.forward(self.module, x, cancel=cancel)
                grids = None
            else:
                acc = RolloutAccumulator(explain.head_fusion, explain.discard_ratio)
                logits = vit.forward(self.module, x, acc, cancel=cancel)
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
        categories: Categories | None = None,
        keep_probabilities: bool = False,
    ) -> Iterator[list[ClassifyResult]]:
        """Classify image files, yielding one list of results per batch, in input order.

        With ``categories`` the predictions are the named categories (scores: probability mass,
        not renormalised) instead of the model's classes. ``keep_probabilities`` keeps each
        result's probabilities over all the model's classes (to re-label without re-running).
        Per-file problems become ``ClassifyResult.error``; the run goes on. When ``cancel`` is set
        the generator ends at the next batch boundary.
        """
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if categories is not None and categories.num_base != self.card.num_classes:
            raise ModelError(f"the categories are groups of {categories.num_base} classes; {self.card.name} has "
                             f"{self.card.num_classes}")
        want = _Want(top_k, explain, threshold, categories, keep_probabilities)
        items = [Path(p) for p in paths]
        pp = self.card.preprocess
        pending: deque[tuple[Path, Future[Prepared]]] = deque()
        window = batch_size * (1 + self.prefetch_batches)
        pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="vit-decode")
        try:
            submitted = 0
            for start in range(0, len(items), batch_size):
                if cancel is not None and cancel.cancelled:
                    return
                while submitted < len(items) and submitted < start + window:
                    p = items[submitted]
                    pending.append((p, pool.submit(prepare_file, p, pp)))
                    submitted += 1
                batch = [pending.popleft() for _ in range(min(batch_size, len(items) - start))]
                prepared = [(str(p), _outcome(f)) for p, f in batch]
                try:
                    results = self._run_prepared(prepared, want, cancel)
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
        categories: Categories | None = None,
        keep_probabilities: bool = False,
    ) -> ClassifyResult:
        """Classify an in-memory image (a pasted one); ``name`` stands in for its path."""
        try:
            prepared: Prepared | str = prepare_image(image, self.card.preprocess)
        except ImageError as exc:
            prepared = str(exc)
        want = _Want(top_k, explain, threshold, categories, keep_probabilities)
        return self._run_prepared([(name, prepared)], want)[0]

    def _run_prepared(
        self, batch: Sequence[tuple[str, Prepared | str]], want: _Want, cancel: CancelToken | None = None
    ) -> list[ClassifyResult]:
        explain = want.explain
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
            if want.categories is not None:
                arrays = probs.numpy()
                all_preds = [want.categories.predictions(row, want.top_k) for row in arrays]
            else:
                all_preds = self._predictions(probs, want.top_k)
            for k, (((i, (_, size, notes)), (_, grid)), preds) in enumerate(zip(done, all_preds)):
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
                    uncertain=preds[0].score < want.threshold,
                    heatmap=heatmap,
                    image_size=size,
                    notes=notes,
                    model=self.model_id,
                    probabilities=probs[k].numpy().copy() if want.keep_probabilities else None,
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

        def batch(start: int, stop: int) -> tuple[torch.Tensor, np.ndarray | None]:
            return self._forward(self._to_batch(arrays[start:stop]), explain, cancel)

        def alone_too_big(_index: int) -> None:
            advice = "a smaller model" if self.device.type == "cpu" else "the CPU (--device cpu) or a smaller model"
            out.append(f"not enough {self.device_name} memory for this model even one image at a time; use {advice}")

        limit = self._limits[explain is not None]
        for start, stop, (probs, grids) in limit.run(len(arrays), batch, on_single_failure=alone_too_big):
            out.extend((probs[r], None if grids is None else grids[r]) for r in range(stop - start))
        return out

    # ---- explanations --------------------------------------------------------------------

    def _prepare_source(self, source: ImageSource) -> Prepared:
        if isinstance(source, Image.Image):
            return prepare_image(source, self.card.preprocess)
        return prepare_file(source, self.card.preprocess)

    def rollout(self, source: ImageSource, options: ExplainOptions) -> Heatmap:
        """The class-agnostic attention rollout of one image. Raises ImageError."""
        arr, size, _notes = self._prepare_source(source)
        _, grids = self._forward(self._to_batch([arr]), options)
        assert grids is not None
        return Heatmap(
            grid=grids[0].astype(np.float32),
            crop_box=self.card.preprocess.crop_box(*size),
            image_size=size,
            head_fusion=options.head_fusion,
            discard_ratio=options.discard_ratio,
        )

    def explain_class(self, source: ImageSource, class_index: int, *, members: Sequence[int] | None = None) -> Heatmap:
        """Gradient-weighted rollout for ``class_index`` (Chefer et al. 2021). Raises ImageError.

        With ``members`` the map is of a named category (the base classes it sums over), and
        ``class_index`` is the category's position, which the heatmap records.
        """
        n = self.card.num_classes
        if members is not None:
            if not members or not all(0 <= m < n for m in members):
                raise ValueError(f"category members must be base classes 0..{n - 1}")
        elif not 0 <= class_index < n:
            raise ValueError(f"class index {class_index} out of range 0..{n - 1}")
        arr, size, _notes = self._prepare_source(source)
        x = self._to_batch([arr])
        with self._autocast():
            if members is not None:
                groups = torch.zeros(1, n, device=self.device)
                groups[0, list(members)] = 1.0
                _, grids = gradient_rollout(self.module, x, groups=groups)
            else:
                _, grids = gradient_rollout(self.module, x, torch.tensor([class_index], device=self.device))
        return Heatmap(
            grid=grids[0].float().cpu().numpy().astype(np.float32),
            crop_box=self.card.preprocess.crop_box(*size),
            image_size=size,
            class_index=class_index,
            head_fusion="mean",
        )


@dataclass(frozen=True)
class _Want:
    """What a classification run asks for, besides the photos."""

    top_k: int
    explain: ExplainOptions | None
    threshold: float
    categories: Categories | None = None
    keep_probabilities: bool = False


def _outcome(future: Future[Prepared]) -> Prepared | str:
    """The prepared image, or the one-line reason it could not be prepared."""
    try:
        return future.result()
    except ImageError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not end a folder run
        return first_line(f"could not read image: {type(exc).__name__}: {exc}")
