"""The engine: one ViT on one device; batched classification and explanations.

An ``Engine`` is used from a single thread (the GUI's compute thread, or the command line's main
thread): CUDA state and ``inference_mode`` are per thread. Photos are decoded a couple of batches
ahead of the model, in a small thread pool (:mod:`.decoding`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from vit_desktop.core.errors import Cancelled, CancelToken, ImageError, ModelError
from vit_desktop.core.io import images
from vit_desktop.core.library.keys import ModelKeys, compute_key, model_keys, tensor_keys
from vit_desktop.core.models import vit
from vit_desktop.core.models.checkpoints import load_checkpoint
from vit_desktop.core.models.open_set import KnownScore, model_rule
from vit_desktop.core.models.preprocess import Prepared, normalized_tensor, prepare_file, prepare_image
from vit_desktop.core.models.vit import ViT
from vit_desktop.core.types import ClassifyResult, ExplainOptions, Heatmap, ModelCard, OpenSetRule, ProgressCallback

from . import answers
from .decoding import Decoding, decode_workers
from .devices import BatchLimit, autocast, choose_precision, device_name, resolve_device, tune_allocator
from .open_set import run_rule
from .options import ClassifyOptions
from .rollout import RolloutAccumulator, TopPicker, class_relevance, class_targets
from .streams import in_two

ImageSource = str | os.PathLike[str] | Image.Image

log = logging.getLogger(__name__)

_ENGINE_IDS = itertools.count(1)
_DEFAULT_OPTIONS = ClassifyOptions()


# --------------------------------------------------------------------------------------------
# Engine


class Engine:
    """One ViT on one device. Not thread-safe: use it from one thread."""

    #: Batches decoded ahead of the one being computed.
    prefetch_batches = 2

    def __init__(self, module: ViT, card: ModelCard, device: torch.device, precision: str,
                 precision_why: str = "") -> None:
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
        #: Why this precision: "this CPU computes bf16 natively (AVX512-BF16)", "as asked", ...
        self.precision_why = precision_why
        #: fp32 on the CPU runs the blocks with oneDNN's fused linears (bias, GELU and residual in the
        #: product): 7-10 % faster for DeiT-Tiny here, the same answers (vit.forward_features).
        self.fused = device.type == "cpu" and precision == "fp32" and vit.fused_cpu_available()
        #: A fused pass (with rollout or without) computes its batch as two halves at once, each on
        #: half of torch's threads (:mod:`.streams`): 6-7 % faster on 2 cores, the same answers.
        self.streams = self.fused
        #: What classification and rollout run: the module, or for int8 its quantised copy (class
        #: maps need gradients, which quantised linears have not: they run the fp32 module).
        self.runner: ViT = self.module
        if precision == "int8":
            from vit_desktop.core.models.quantize import int8_module

            self.runner = int8_module(self.module)
        mean = torch.tensor(card.preprocess.mean, dtype=torch.float64)
        std = torch.tensor(card.preprocess.std, dtype=torch.float64)
        # (x * rescale - mean) / std as one multiply-add per pixel: x * scale - shift.
        self._scale = (card.preprocess.rescale / std).float().view(1, 3, 1, 1).to(device)
        self._shift = (mean / std).float().view(1, 3, 1, 1).to(device)
        self.decode_workers = decode_workers()
        # The largest batch known to fit in device memory, without and with rollout.
        #: Memory one class-map batch may take: on a GPU out-of-memory halves the batch anyway, so
        #: this only keeps the first try sensible; on the CPU it keeps the machine responsive.
        self.class_map_budget_bytes = (1 << 30) if device.type == "cpu" else (4 << 30)
        # Keyed by the map computed in the pass (None: no map); class maps' limits are made on first use.
        self._limits: dict[str | None, BatchLimit] = {None: BatchLimit(device), "rollout": BatchLimit(device)}
        #: The file or folder the weights came from (the registry's cached file for a registry
        #: name); None for a model made in memory (one just fine-tuned).
        self.source_path: Path | None = None
        self._tensors: tuple[str, str] | None = None
        # The model's own open-set score, on the device: computed inside each pass when it reads the
        # pooled token (a mass before the head's softmax, a distance to the training photos).
        self._known = KnownScore(self.module, model_rule(card)).to(device).eval()

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
        choice = choose_precision(precision, dev)
        text = os.fspath(source)
        from vit_desktop.core.models import registry

        if text in registry.REGISTRY:
            module, card = registry.load_registry_model(text, progress=progress, cancel=cancel)
            path = registry.weights_path(text)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                named = registry.find_model_file(text)
                if named is None:
                    names = ", ".join(registry.REGISTRY)
                    raise ModelError(f"{text}: not a model name ({names}) and no such file or folder")
                path = named
            module, card = load_checkpoint(path)
        engine = cls(module, card, dev, choice.precision, choice.why)
        engine.source_path = path.resolve()
        return engine

    @classmethod
    def from_module(
        cls, module: ViT, card: ModelCard, *, device: str = "auto", precision: str = "auto"
    ) -> Engine:
        dev = resolve_device(device)
        choice = choose_precision(precision, dev)
        return cls(module, card, dev, choice.precision, choice.why)

    # ---- identity ------------------------------------------------------------------------

    @property
    def tensors(self) -> tuple[str, str]:
        """Hashes of (every tensor, the backbone's) with the labels and preprocessing: what the
        library files this model's rows under. Computed once (a second per GB of weights) unless
        the library already knew the file and set them."""
        if self._tensors is None:
            self._tensors = tensor_keys(self.module, self.card)
        return self._tensors

    @tensors.setter
    def tensors(self, value: tuple[str, str]) -> None:
        self._tensors = value

    @property
    def keys(self) -> ModelKeys:
        return model_keys(self.tensors, compute_key(self.device.type, self.precision))

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

    def open_set_rule(self, options: ClassifyOptions = _DEFAULT_OPTIONS) -> OpenSetRule:
        """The rule that decides ``ClassifyResult.uncertain`` in a run with ``options``: a
        ``--threshold`` given, else named categories' own, else this model's (its file's, or the
        default for models without one). Its ``explain(result.known_score)`` says why in words."""
        return run_rule(self.card, options)

    def _own_rule_in_pass(self, want: ClassifyOptions) -> bool:
        """Whether the run's score is the model's own and reads the pooled token (so the pass computes it)."""
        return want.threshold is None and want.categories is None and self._known.needs_pooled

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) normalised float32 on the CPU: exactly what classification feeds the model."""
        return normalized_tensor(images.to_rgb(image), self.card.preprocess)

    def _forward(
        self, x: torch.Tensor, want: ClassifyOptions, cancel: CancelToken | None = None
    ) -> _Pass:
        """Probabilities (n, classes) on the CPU, the maps asked for ((n, g, g) or None), per image
        the class (or category) its map explains (None for rollout or no map), the pooled
        features the head read ((n, hidden) float32, when asked for and the pass computed them), and
        the model's own open-set score (n,) when the run applies it and it reads the pooled token.

        Raises Cancelled when ``cancel`` is set between two layers.
        """
        explain = want.explain
        n = x.shape[0]
        if explain is not None and explain.class_specific:
            # Gradients are needed: autograd, not inference mode, for this one pass.
            picked: list[int | None] = []
            pick = TopPicker(want.categories, picked)
            seen: list[torch.Tensor] = []
            own = self._own_rule_in_pass(want)
            with self._autocast():
                logits, _, grid_t = class_relevance(self.module, x, pick, refine=explain.method == "refined",
                                                    cancel=cancel, on_pooled=seen.append if own else None)
                with torch.inference_mode():
                    known = self._known(seen[0], logits).float().cpu().numpy() if own else None
            probs = logits.float().softmax(dim=-1).cpu()
            # The backward pass keeps no pooled features: a class-map run stores none.
            return _Pass(probs, grid_t.float().cpu().numpy(), picked, None, known)
        with torch.inference_mode(), self._autocast():

            def run(part: torch.Tensor) -> tuple[torch.Tensor, ...]:
                acc = None
                if explain is not None:
                    acc = RolloutAccumulator(explain.head_fusion, explain.discard_ratio, vit.readout(self.module))
                pooled, logits = vit.forward_pooled(self.runner, part, acc, cancel=cancel, fused=self.fused)
                return (pooled, logits) if acc is None else (pooled, logits, acc.grid())

            # With a map or without, the same halves: a photo's scores do not depend on its map.
            outs = in_two(run, x) if self.streams else run(x)
            pooled, logits = outs[0], outs[1]
            grids = outs[2].float().cpu().numpy() if len(outs) > 2 else None
            probs = logits.float().softmax(dim=-1).cpu()
            features = pooled.float().cpu().numpy() if want.keep_features else None
            known = self._known(pooled, logits).float().cpu().numpy() if self._own_rule_in_pass(want) else None
        return _Pass(probs, grids, [None] * n, features, known)

    # ---- classification ----------------------------------------------------------------

    def classify_batches(
        self,
        paths: Sequence[str | os.PathLike[str]],
        options: ClassifyOptions = _DEFAULT_OPTIONS,
        *,
        cancel: CancelToken | None = None,
        decoding: Decoding | None = None,
    ) -> Generator[list[ClassifyResult], None, None]:
        """Classify image files, yielding one list of results per batch, in input order.

        With ``options.categories`` the predictions are the named categories (scores: probability
        mass, not renormalised) instead of the model's classes. ``keep_probabilities`` keeps each
        result's probabilities over all the model's classes (to re-label without re-running);
        ``keep_images`` the decoded photo, where it is small (to draw an overlay on it).
        Per-file problems become ``ClassifyResult.error``; the run goes on. When ``cancel`` is set
        the generator ends at the next batch boundary. ``decoding`` (of ``paths``, started before
        the engine was loaded) is used when it decodes for this model's input, and closed either way.
        """
        categories = options.categories
        batch_size = options.batch_size
        ahead = batch_size * (1 + self.prefetch_batches)
        if decoding is not None and (decoding.pp, decoding.keep_images) != (self.card.preprocess, options.keep_images):
            decoding.close()  # decoded for another preprocessing: not this model's input
            decoding = None
        if categories is not None and categories.num_base != self.card.num_classes:
            if decoding is not None:
                decoding.close()
            raise ModelError(f"the categories are groups of {categories.num_base} classes; {self.card.name} has "
                             f"{self.card.num_classes}")
        if decoding is None:
            decoding = Decoding(paths, self.card.preprocess, keep_images=options.keep_images, ahead=ahead,
                                workers=self.decode_workers)
        decoding.ahead = ahead
        with decoding:
            while decoding.remaining:
                if cancel is not None and cancel.cancelled:
                    return
                prepared = decoding.take(batch_size)
                try:
                    results = self._run_prepared(prepared, options, cancel)
                except Cancelled:
                    return  # mid-batch: that batch's results are dropped, like those not started
                yield results

    def classify(
        self,
        paths: Sequence[str | os.PathLike[str]],
        options: ClassifyOptions = _DEFAULT_OPTIONS,
        *,
        cancel: CancelToken | None = None,
    ) -> list[ClassifyResult]:
        """All results of :meth:`classify_batches` as one list."""
        out: list[ClassifyResult] = []
        for batch in self.classify_batches(paths, options, cancel=cancel):
            out.extend(batch)
        return out

    def answer_features(self, features: np.ndarray, *, own_score: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, hidden) pooled features of this model's backbone -> (n, classes) float32
        probabilities, and with ``own_score`` the model's own open-set score (n,): the head alone,
        as a forward pass would run it."""
        with torch.inference_mode(), self._autocast():
            f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
            logits = self.module.heads(f)
            probs: np.ndarray = logits.float().softmax(dim=-1).cpu().numpy()
            known = self._known(f, logits).float().cpu().numpy() if own_score else None
        return probs, known

    def classify_image(
        self, image: Image.Image, name: str, options: ClassifyOptions = _DEFAULT_OPTIONS
    ) -> ClassifyResult:
        """Classify an in-memory image (a pasted one); ``name`` stands in for its path."""
        try:
            prepared: Prepared | str = prepare_image(image, self.card.preprocess)
        except ImageError as exc:
            prepared = str(exc)
        return self._run_prepared([(name, prepared)], options)[0]

    def _run_prepared(
        self, batch: Sequence[tuple[str, Prepared | str]], want: ClassifyOptions, cancel: CancelToken | None = None
    ) -> list[ClassifyResult]:
        ok = [(i, p) for i, (_, p) in enumerate(batch) if not isinstance(p, str)]
        results: list[ClassifyResult] = [
            ClassifyResult(path=name, error=p) if isinstance(p, str) else None  # type: ignore[misc]  # None: filled in below
            for name, p in batch
        ]
        if ok:
            outcomes = self._forward_fitting([p[0] for _, p in ok], want, cancel)
            for (i, _), outcome in zip(ok, outcomes):
                if isinstance(outcome, str):
                    results[i] = ClassifyResult(path=batch[i][0], error=outcome)
            done = [(item, out) for item, out in zip(ok, outcomes) if not isinstance(out, str)]
            if not done:
                return results
            probs = torch.stack([row.probs for _, row in done])
            all_preds = answers.predictions(probs.numpy(), self.card.labels, want)
            rule = self.open_set_rule(want)
            known = self._known_scores(probs, [row.known for _, row in done], want)
            for k, (((i, prepared), row), preds) in enumerate(zip(done, all_preds)):
                heatmap = None
                if row.grid is not None and want.explain is not None:
                    heatmap = self._heatmap(row.grid, prepared.size, want.explain, row.explained)
                results[i] = ClassifyResult(
                    path=batch[i][0],
                    predictions=preds,
                    uncertain=bool(known[k] < rule.threshold),
                    heatmap=heatmap,
                    image_size=prepared.size,
                    notes=prepared.notes,
                    model=self.model_id,
                    probabilities=probs[k].numpy().copy() if want.keep_probabilities else None,
                    image=prepared.image,
                    features=row.features.copy() if row.features is not None else None,
                    known_score=float(known[k]),
                )
        return results

    def _known_scores(self, probs: torch.Tensor, in_pass: Sequence[float | None], want: ClassifyOptions) -> np.ndarray:
        """(n,) the run's open-set score of each photo, from its probabilities (n, classes) or, for
        the model's own scores that read the pooled token, from the pass (``in_pass``)."""
        own = np.array(in_pass, dtype=np.float32) if self._own_rule_in_pass(want) else None
        return answers.known_scores(probs.numpy(), want, own)

    def _heatmap(self, grid: np.ndarray, size: tuple[int, int], options: ExplainOptions,
                 class_index: int | None) -> Heatmap:
        rollout = not options.class_specific
        return Heatmap(
            grid=np.asarray(grid, dtype=np.float32),
            crop_box=self.card.preprocess.crop_box(*size),
            image_size=size,
            class_index=class_index,
            head_fusion=options.head_fusion if rollout else "mean",
            discard_ratio=options.discard_ratio if rollout else 0.0,
            method=options.method,
        )

    def _forward_fitting(
        self, arrays: Sequence[np.ndarray], want: ClassifyOptions, cancel: CancelToken | None
    ) -> list[_Row | str]:
        """Per image, its row of the pass (probabilities, map, explained class, features) or why it failed.

        A batch that does not fit in the device's memory is split in halves until it does; the
        size that fitted is kept for the batches after it. An image that does not fit on its own
        gets an error and the run goes on. Class maps keep every layer's attention for the
        backward pass, so their batches start no larger than :meth:`class_map_batch` allows.
        """
        out: list[_Row | str] = []

        def batch(start: int, stop: int) -> _Pass:
            return self._forward(self._to_batch(arrays[start:stop]), want, cancel)

        def alone_too_big(_index: int) -> None:
            advice = "a smaller model" if self.device.type == "cpu" else "the CPU (--device cpu) or a smaller model"
            out.append(f"not enough {self.device_name} memory for this model even one image at a time; use {advice}")

        method = None if want.explain is None else want.explain.method
        limit = self._limits.get(method)
        if limit is None:
            limit = self._limits[method] = BatchLimit(self.device, self.class_map_batch())
        for start, stop, p in limit.run(len(arrays), batch, on_single_failure=alone_too_big):
            out.extend(_Row(p.probs[r], None if p.grids is None else p.grids[r], p.explained[r],
                            None if p.features is None else p.features[r],
                            None if p.known is None else float(p.known[r])) for r in range(stop - start))
        return out

    def class_map_batch(self) -> int:
        """The most images one class-map pass should hold: every layer's attention and activations
        stay for the backward pass (about 50 MB an image for ViT-Ti/16, 200 MB for ViT-B/16)."""
        a = self.card.arch
        tokens = (a.image_size // a.patch_size) ** 2 + 1
        # Per layer, fp32: probabilities, their gradient and softmax's saved output (heads x t x t),
        # and the block's saved activations (t x (2 mlp + 8 hidden)).
        per_image = a.num_layers * 4 * (3 * a.num_heads * tokens**2 + tokens * (2 * a.mlp_dim + 8 * a.hidden_dim))
        budget = self.class_map_budget_bytes
        return max(1, int(budget // per_image))

    # ---- explanations --------------------------------------------------------------------

    def _prepare_source(self, source: ImageSource) -> Prepared:
        if isinstance(source, Image.Image):
            return prepare_image(source, self.card.preprocess)
        return prepare_file(source, self.card.preprocess)

    def explain(
        self, source: ImageSource, options: ExplainOptions, class_index: int | None = None,
        *, members: Sequence[int] | None = None,
    ) -> Heatmap:
        """One image's map. Class maps explain ``class_index`` (its top-1 when None); with
        ``members`` a named category, ``class_index`` being the category's position, which the
        heatmap records. Raises ImageError."""
        if not options.class_specific:
            return self.rollout(source, options)
        n = self.card.num_classes
        if members is not None:
            if not members or not all(0 <= m < n for m in members):
                raise ValueError(f"category members must be base classes 0..{n - 1}")
        elif class_index is not None and not 0 <= class_index < n:
            raise ValueError(f"class index {class_index} out of range 0..{n - 1}")
        prepared = self._prepare_source(source)
        arr, size = prepared.pixels, prepared.size
        x = self._to_batch([arr])
        target: torch.Tensor | TopPicker
        if members is not None:
            target = torch.zeros(1, n, device=self.device)
            target[0, list(members)] = 1.0
        elif class_index is not None:
            target = class_targets(torch.tensor([class_index]), n).to(self.device)
        else:
            picked: list[int | None] = []
            target = TopPicker(None, picked)
        with self._autocast():
            _, targets, grids = class_relevance(self.module, x, target, refine=options.method == "refined")
        if class_index is None and members is None:
            class_index = int(targets[0].argmax())
        return self._heatmap(grids[0].float().cpu().numpy(), size, options, class_index)

    def rollout(self, source: ImageSource, options: ExplainOptions) -> Heatmap:
        """The class-agnostic attention rollout of one image. Raises ImageError."""
        prepared = self._prepare_source(source)
        options = replace(options, method="rollout")
        grids = self._forward(self._to_batch([prepared.pixels]), ClassifyOptions(top_k=1, explain=options)).grids
        assert grids is not None
        return self._heatmap(grids[0], prepared.size, options, None)

    def explain_class(self, source: ImageSource, class_index: int, *, members: Sequence[int] | None = None,
                      refine: bool = False) -> Heatmap:
        """The class map for ``class_index`` (see :meth:`explain`). Raises ImageError."""
        return self.explain(source, ExplainOptions(method="refined" if refine else "class"), class_index,
                            members=members)


class _Pass(NamedTuple):
    """One forward pass over a batch, on the CPU."""

    probs: torch.Tensor  # (n, classes)
    grids: np.ndarray | None  # (n, g, g) maps
    explained: list[int | None]  # per image, the class its map explains
    features: np.ndarray | None  # (n, hidden) pooled features, float32
    known: np.ndarray | None  # (n,) the model's own open-set score, when the pass computed it


class _Row(NamedTuple):
    """One image's share of a :class:`_Pass`."""

    probs: torch.Tensor
    grid: np.ndarray | None
    explained: int | None
    features: np.ndarray | None
    known: float | None
