"""Fine-tune a Vision Transformer on the user's own classes, or train a small one from scratch.

One long job with a progress callback and a CancelToken, as every long job in core. The shape of
the loop follows nanoGPT's ``train.py``: AdamW, linear warm-up then cosine decay per step,
evaluation once per epoch, the best weights (lowest validation loss) kept aside.

Strategies (``TrainConfig.mode``):

* ``head``: the backbone is frozen; its CLS features are computed once and cached, and only a
  linear head is trained on them, which takes seconds for hundreds of photos on a CPU.
* ``partial``: the head is first fitted on cached features as above (a good start keeps the
  backbone from being wrecked by a random head's gradients), then the last N encoder blocks,
  the final norm and the head are trained on augmented photos.
* ``full``: as ``partial`` but every weight trains, with layer-wise learning-rate decay (blocks
  near the input move least).
* ``scratch``: a small ViT of the configured shape, from random weights (small grayscale sets).

Few-shot heads: with 5-30 photos per class a linear head on raw features overfits. The head can
also use what the base model already knows: its own logits are a linear function of the same
features (``z = W_base x + b_base``), so a head ``A x + a + B z`` collapses exactly into one
``Linear`` layer (``W = A + B W_base``) and the result stays a plain torchvision ViT whose
heatmaps work. ``B`` starts from the base classes whose names match the user's class names, or
else from each class's mean base-class probabilities. See ``HEAD_INITS``; the default was chosen
by ``bench/bench_finetune.py``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .data import LabelledSet
from .engine import free_cached_memory, is_out_of_memory
from .types import (
    Architecture,
    CancelToken,
    ImageError,
    ModelCard,
    Preprocess,
    VitDesktopError,
)

if TYPE_CHECKING:
    from .engine import Engine

MODES: tuple[str, ...] = ("head", "partial", "full", "scratch")
#: How the head-only strategy starts and what it may use (see module docstring).
#: "linear": a zero head on the features; "prototype": class-mean (cosine) init;
#: "base": features plus the base model's logits, initialised from the base head.
HEAD_INITS: tuple[str, ...] = ("linear", "prototype", "base")
#: Learning rate of the cached-feature head. Low on purpose: with a handful of photos per class
#: the head should stay near what it starts from (see bench/bench_finetune.py).
HEAD_LR = 3e-3

_INTERP = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; ``None`` means "pick a sensible value for this mode"."""

    mode: str = "head"
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.05
    #: Fraction of all steps spent warming the learning rate up from zero.
    warmup: float = 0.1
    label_smoothing: float = 0.1
    #: ``partial``: how many of the last encoder blocks train.
    partial_blocks: int = 2
    #: ``full``: each block nearer the input gets this factor times the next block's rate.
    layer_decay: float = 0.75
    #: Random resized crop and horizontal flip while training (``partial``/``full``/``scratch``).
    augment: bool = True
    #: Flip horizontally when augmenting (off for digits and text).
    hflip: bool = True
    #: Stop after this many epochs without a lower validation loss.
    patience: int = 5
    seed: int = 0
    #: ``None``: automatic split (see :meth:`LabelledSet.split`).
    val_fraction: float | None = None
    #: Head strategy, one of ``HEAD_INITS``.
    head_init: str = "base"
    #: Epochs of the cached-feature head stage (head mode, and the start of partial/full).
    head_epochs: int = 60
    # Scratch architecture.
    image_size: int = 28
    patch_size: int = 7
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 64
    mlp_dim: int = 128
    grayscale: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise VitDesktopError(f"unknown training mode {self.mode!r} (choose {', '.join(MODES)})")
        if self.head_init not in HEAD_INITS:
            raise VitDesktopError(f"unknown head strategy {self.head_init!r} (choose {', '.join(HEAD_INITS)})")
        if self.epochs is not None and self.epochs < 1:
            raise VitDesktopError("epochs must be at least 1")
        if self.batch_size < 1:
            raise VitDesktopError("batch size must be at least 1")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise VitDesktopError(f"validation fraction must be between 0 and 1 (got {self.val_fraction})")
        if self.mode == "scratch" and self.image_size % self.patch_size:
            raise VitDesktopError("image size must be a multiple of the patch size")
        if self.mode == "scratch" and self.hidden_dim % self.num_heads:
            raise VitDesktopError("width must be a multiple of the number of heads")

    @property
    def effective_epochs(self) -> int:
        if self.epochs is not None:
            return self.epochs
        return {"head": self.head_epochs, "partial": 8, "full": 8, "scratch": 30}[self.mode]

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"head": HEAD_LR, "partial": 1e-4, "full": 5e-5, "scratch": 1e-3}[self.mode]

    def scratch_architecture(self, num_classes: int) -> Architecture:
        return Architecture(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            mlp_dim=self.mlp_dim,
            num_classes=num_classes,
        )


@dataclass(frozen=True)
class TrainProgress:
    """One progress report. ``phase`` "val" closes an epoch and carries its metrics."""

    phase: str  # "decode" | "features" | "train" | "val"
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    eta_s: float | None = None
    message: str = ""


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model (on the CPU, in eval mode) and what is known about how good it is."""

    module: VisionTransformer
    card: ModelCard
    metrics: dict[str, object]
    #: rows = true class, columns = predicted class, on the validation set with the best weights.
    confusion: tuple[tuple[int, ...], ...]
    per_class_accuracy: tuple[float, ...]
    #: (path, true label, predicted label) for validation photos the model gets wrong.
    misclassified: tuple[tuple[str, str, str], ...]
    best_epoch: int
    #: Photos that could not be used: (path, reason).
    skipped: tuple[tuple[str, str], ...]
    cancelled: bool
    #: One dict per finished epoch: epoch, loss, acc, val_loss, val_acc.
    history: tuple[dict[str, float], ...] = ()

    @property
    def val_accuracy(self) -> float:
        return float(self.metrics.get("val_acc", 0.0))  # type: ignore[arg-type]

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the project's safetensors file (labels, preprocessing, settings, metrics)."""
        from .checkpoints import save_model

        return save_model(path, self.module, self.card, overwrite=overwrite)


ProgressFn = Callable[[TrainProgress], None]


# --------------------------------------------------------------------------------------------
# Images


def _prepare(img: Image.Image, pp: Preprocess) -> Image.Image:
    """Colour handling shared by training and evaluation: the engine's own, then RGB."""
    from .engine import apply_colour

    return apply_colour(img.convert("RGB"), pp).convert("RGB")


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """Keep decoded photos small: training never looks at more than the resize size."""
    w, h = img.size
    short = min(w, h)
    if short <= side:
        return img
    scale = side / short
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR)


def _to_normalized(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    t = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
    return TF.normalize(t, list(pp.mean), list(pp.std))


def eval_tensor(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    """(3, crop, crop) float tensor, exactly as the engine prepares a photo for classification."""
    from .engine import normalized_tensor

    return normalized_tensor(img, pp)


def train_tensor(img: Image.Image, pp: Preprocess, gen: torch.Generator, *, hflip: bool = True) -> torch.Tensor:
    """Light augmentation: random resized crop (35-100 % of the area) and a horizontal flip."""
    img = _prepare(img, pp)
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(0.35, 1.0, generator=gen))
        ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            break
    else:  # fall back to the centre square
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    img = TF.resized_crop(
        img, top, left, ch, cw, [pp.crop_size, pp.crop_size], interpolation=_INTERP[pp.interpolation], antialias=True
    )
    if hflip and bool(torch.rand(1, generator=gen) < 0.5):
        img = TF.horizontal_flip(img)
    return _to_normalized(img, pp)


def decode_images(
    data: LabelledSet,
    pp: Preprocess,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[list[Image.Image | None], list[tuple[str, str]]]:
    """Decode every photo of ``data`` in a thread pool (Pillow releases the GIL while decoding).

    Unreadable photos come back as None and are listed with their one-line reason.
    """
    from .images import load_image

    keep = max(pp.resize_size, pp.crop_size)

    def one(path: os.PathLike[str]) -> Image.Image | str:
        try:
            return _shrink(load_image(path, draft_size=keep), keep)
        except ImageError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:  # anything a broken file throws that images.py missed
            return f"{os.fspath(path)}: {exc}"

    images: list[Image.Image | None] = []
    skipped: list[tuple[str, str]] = []
    total = len(data.items)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, out in enumerate(pool.map(one, (p for p, _ in data.items))):
            if isinstance(out, str):
                images.append(None)
                skipped.append((str(data.items[i][0]), out))
            else:
                images.append(out)
            if progress is not None:
                progress(i + 1, total)
            if cancel is not None and cancel.cancelled:
                pool.shutdown(wait=False, cancel_futures=True)
                break
    return images, skipped


# --------------------------------------------------------------------------------------------
# Model pieces


def backbone_features(module: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """CLS features right before ``heads.head`` (after ``pre_logits`` when the model has one)."""
    # (n, c, h, w) -> (n, seq, hidden), the same steps as VisionTransformer.forward
    x = module._process_input(x)
    cls = module.class_token.expand(x.shape[0], -1, -1)
    x = module.encoder(torch.cat([cls, x], dim=1))
    x = x[:, 0]
    for name, layer in module.heads.named_children():
        if name != "head":
            x = layer(x)
    return x


def _with_head(module: VisionTransformer, weight: torch.Tensor, bias: torch.Tensor) -> VisionTransformer:
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    module.heads.head = head.to(module.class_token.device)
    module.num_classes = weight.shape[0]
    return module


def _normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def match_base_labels(classes: Sequence[str], base_labels: Sequence[str]) -> dict[int, list[int]]:
    """User class index -> base class indices whose names agree ("border_collie" ~ "Border collie").

    A name can match several base classes (ImageNet has a bird and a machine called "crane"); the
    head picks among them with the user's photos.
    """
    lookup: dict[str, list[int]] = {}
    for j, label in enumerate(base_labels):
        lookup.setdefault(_normalize_name(label), []).append(j)
    out: dict[int, list[int]] = {}
    for i, name in enumerate(classes):
        found = lookup.get(_normalize_name(name))
        if found:
            out[i] = found
    return out


def related_classes(w_base: torch.Tensor) -> torch.Tensor:
    """(base, base) non-negative relatedness of the base classes, 1 on the diagonal.

    Two classes are related when their head rows point the same way (cosine similarity).
    """
    w_unit = F.normalize(w_base.float(), dim=1)
    return (w_unit @ w_unit.T).clamp_min(0.0)


def _amp_context(device: torch.device) -> tuple[object, bool]:
    """Autocast on CUDA (bf16 where supported, else fp16 with a grad scaler); nothing elsewhere."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False), False
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), False
    return torch.autocast("cuda", dtype=torch.float16), True


def _cosine_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    warm = max(1, int(round(total_steps * warmup))) if warmup > 0 else 0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


# --------------------------------------------------------------------------------------------
# Metrics


def _confusion(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> tuple[tuple[int, ...], ...]:
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        m[t, p] += 1
    return tuple(tuple(int(v) for v in row) for row in m)


def _per_class(conf: tuple[tuple[int, ...], ...]) -> tuple[float, ...]:
    return tuple((row[i] / sum(row)) if sum(row) else 0.0 for i, row in enumerate(conf))


class _Clock:
    """Estimates time left from the average duration of the work units done so far."""

    def __init__(self, total_units: int) -> None:
        self.total = max(1, total_units)
        self.done = 0
        self.start = time.perf_counter()

    def tick(self, units: int = 1) -> float:
        self.done += units
        elapsed = time.perf_counter() - self.start
        return elapsed / self.done * max(0, self.total - self.done)


# --------------------------------------------------------------------------------------------
# Head on cached features


@dataclass
class _HeadFit:
    weight: torch.Tensor  # (classes, hidden)
    bias: torch.Tensor  # (classes,)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_loss: float = math.inf
    val_pred: list[int] = field(default_factory=list)
    cancelled: bool = False
    #: Validation metrics of the head it started from (epoch 0).
    start_row: dict[str, float] = field(default_factory=dict)


def fit_head(
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
    config: TrainConfig,
    *,
    base_head: tuple[torch.Tensor, torch.Tensor] | None = None,
    name_match: dict[int, list[int]] | None = None,
    epochs: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> _HeadFit:
    """Train a linear head on cached features (CPU, float32); returns the collapsed best head.

    ``base_head`` (W_base, b_base) enables the "base" strategy: logits = A x + a + B (W_base x + b_base).
    """
    gen = torch.Generator().manual_seed(config.seed)
    d = x_tr.shape[1]
    epochs = epochs or config.head_epochs
    # Standardising features keeps one learning rate good for every backbone; it folds back
    # into the head's weights at the end.
    mu = x_tr.mean(0)
    sd = x_tr.std(0, unbiased=False).clamp_min(1e-6)
    use_base = config.head_init == "base" and base_head is not None
    A = torch.zeros(num_classes, d)
    a = torch.zeros(num_classes)
    if config.head_init == "prototype" or (config.head_init == "base" and not use_base):
        xs = (x_tr - mu) / sd
        for c in range(num_classes):
            sel = xs[y_tr == c]
            if len(sel):
                proto = sel.mean(0)
                A[c] = proto / proto.norm().clamp_min(1e-6) * 2.0
    params: list[torch.Tensor] = [A, a]
    z_tr = z_val = None
    B = None
    if use_base:
        w_base, b_base = base_head
        z_tr = x_tr @ w_base.T + b_base  # (n, base classes)
        z_val = x_val @ w_base.T + b_base
        z_mu = torch.zeros(z_tr.shape[1])  # no centring: a per-class offset would favour some classes
        z_sd = z_tr.std(0, unbiased=False).mean().clamp_min(1e-6)  # one scale keeps logits comparable
        B = torch.zeros(num_classes, w_base.shape[0])
        probs = torch.softmax(z_tr, dim=1)
        # Base classes whose head rows point the same way are related (dog breeds, say): sharing
        # evidence between them lets a "dog" class learnt from three breeds recognise a fourth.
        related = related_classes(w_base)
        for c in range(num_classes):
            sel = probs[y_tr == c]
            if not len(sel):
                continue
            # What the base model sees in this class's photos: a soft prototype over its classes.
            B[c] = sel.mean(0) @ related
            candidates = (name_match or {}).get(c)
            if candidates:
                # A base class with the same name: trust it, choosing by the photos when ambiguous.
                best = max(candidates, key=lambda j: float(B[c, j]))
                B[c] /= B[c].norm().clamp_min(1e-6)
                B[c, best] += 1.0
        # Scale so the initial logits have a useful spread.
        B *= 2.0 / B.norm(dim=1, keepdim=True).clamp_min(1e-6)
        params.append(B)
    for p in params:
        p.requires_grad_(True)

    def logits(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        out = ((x - mu) / sd) @ A.T + a
        if B is not None and z is not None:
            out = out + ((z - z_mu) / z_sd) @ B.T
        return out

    lr = config.lr if (config.lr is not None and config.mode == "head") else HEAD_LR
    opt = torch.optim.AdamW(
        [{"params": [A] + ([B] if B is not None else []), "weight_decay": config.weight_decay * 10},
         {"params": [a], "weight_decay": 0.0}],
        lr=lr,
    )
    n = x_tr.shape[0]
    bs = min(max(config.batch_size, 64), n)
    steps_per_epoch = math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_lambda(epochs * steps_per_epoch, config.warmup))
    fit = _HeadFit(weight=torch.zeros(num_classes, d), bias=torch.zeros(num_classes))
    clock = _Clock(epochs)
    best_state: tuple[torch.Tensor, ...] | None = None
    stale = 0

    def evaluate() -> tuple[float, float, list[int]]:
        with torch.no_grad():
            lv = logits(x_val, z_val)
            loss = float(F.cross_entropy(lv, y_val))
            pred = lv.argmax(1)
            return loss, float((pred == y_val).float().mean()), pred.tolist()

    # Epoch 0: the initial head is a valid model too (what Cancel keeps if pressed at once).
    v_loss, v_acc, v_pred = evaluate()
    fit.val_loss, fit.val_pred, fit.best_epoch = v_loss, v_pred, 0
    fit.start_row = {"epoch": 0, "loss": None, "acc": None, "val_loss": v_loss, "val_acc": v_acc}  # type: ignore[dict-item]
    best_state = tuple(p.detach().clone() for p in params)
    patience = max(config.patience, 10)  # epochs are tiny here: noisy losses need more rope
    for epoch in range(1, epochs + 1):
        if cancel is not None and cancel.cancelled:
            fit.cancelled = True
            break
        perm = torch.randperm(n, generator=gen)
        tot_loss = 0.0
        correct = 0
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            xb = x_tr[idx]
            if config.augment:  # feature noise: a cheap stand-in for image augmentation
                xb = xb + 0.1 * sd * torch.randn(xb.shape, generator=gen)
            out = logits(xb, z_tr[idx] if z_tr is not None else None)
            loss = F.cross_entropy(out, y_tr[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y_tr[idx]).sum())
        v_loss, v_acc, v_pred = evaluate()
        row = {"epoch": epoch, "loss": tot_loss / n, "acc": correct / n, "val_loss": v_loss, "val_acc": v_acc}
        fit.history.append(row)
        if v_loss < fit.val_loss - 1e-6:
            fit.val_loss, fit.val_pred, fit.best_epoch = v_loss, v_pred, epoch
            best_state = tuple(p.detach().clone() for p in params)
            stale = 0
        else:
            stale += 1
        if progress is not None:
            progress(
                TrainProgress(
                    "val", epoch, epochs, epoch, epochs, row["loss"], row["acc"], v_loss, v_acc, clock.tick(),
                    f"head epoch {epoch}/{epochs}",
                )
            )
        if stale >= patience:
            break
    with torch.no_grad():
        A_b, a_b = best_state[0], best_state[1]
        # Fold the standardisation (and the base logits) into one Linear on raw features.
        W = A_b / sd
        b = a_b - (A_b * (mu / sd)).sum(1)
        if B is not None and base_head is not None:
            B_b = best_state[2] / z_sd
            W = W + B_b @ base_head[0]
            b = b + B_b @ base_head[1] - (B_b * z_mu).sum(1)
        fit.weight, fit.bias = W.detach().clone(), b.detach().clone()
    return fit


# --------------------------------------------------------------------------------------------
# The job


@dataclass
class _Prepared:
    classes: tuple[str, ...]
    train_images: list[Image.Image]
    train_y: list[int]
    train_paths: list[str]
    val_images: list[Image.Image]
    val_y: list[int]
    val_paths: list[str]
    skipped: list[tuple[str, str]]


def _prepare_data(
    data: LabelledSet,
    config: TrainConfig,
    pp: Preprocess,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    val_data: LabelledSet | None = None,
) -> _Prepared:
    data.validate()
    if val_data is None:
        train, val = data.split(config.val_fraction, config.seed)
    else:
        if tuple(val_data.classes) != tuple(data.classes):
            raise VitDesktopError("the validation set must have the same classes as the training set")
        train, val = data, val_data

    def report(done: int, total: int) -> None:
        if progress is not None and (done == total or done % 8 == 0):
            progress(TrainProgress("decode", 0, 0, done, total, message=f"reading photos {done}/{total}"))

    both = LabelledSet(data.classes, (*train.items, *val.items))
    images, skipped = decode_images(both, pp, progress=report, cancel=cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    index = {c: i for i, c in enumerate(data.classes)}
    prep = _Prepared(data.classes, [], [], [], [], [], [], skipped)
    for k, ((path, name), img) in enumerate(zip(both.items, images)):
        if img is None:
            continue
        if k < len(train.items):
            prep.train_images.append(img)
            prep.train_y.append(index[name])
            prep.train_paths.append(str(path))
        else:
            prep.val_images.append(img)
            prep.val_y.append(index[name])
            prep.val_paths.append(str(path))
    for c, name in enumerate(data.classes):
        n_tr = prep.train_y.count(c)
        n_val = prep.val_y.count(c)
        if n_tr == 0 or n_val == 0:
            bad = len(skipped)
            raise VitDesktopError(
                f"class {name!r} has too few readable images ({n_tr + n_val}) after skipping {bad} unreadable"
                f" {'file' if bad == 1 else 'files'}; each class needs at least 2"
            )
    return prep


@torch.no_grad()
def _features_of(
    module: VisionTransformer,
    tensors: Iterator[torch.Tensor],
    total: int,
    device: torch.device,
    phase_msg: str,
    progress: ProgressFn | None,
    cancel: CancelToken | None,
    batch_size: int,
) -> torch.Tensor:
    """Backbone features of a stream of preprocessed images, batched; float32 on the CPU."""
    module.eval()
    out: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    done = 0
    amp, _ = _amp_context(device)

    def flush() -> None:
        nonlocal done
        x = torch.stack(batch).to(device)
        with amp:  # type: ignore[attr-defined]
            out.append(backbone_features(module, x).float().cpu())
        done += len(batch)
        batch.clear()
        if progress is not None:
            progress(TrainProgress("features", 0, 0, done, total, message=f"{phase_msg} {done}/{total}"))

    for t in tensors:
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch.append(t)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(out) if out else torch.zeros(0, module.hidden_dim)


def _param_groups(module: VisionTransformer, config: TrainConfig, lr: float) -> list[dict[str, object]]:
    """Which weights train, and at what rate, for ``partial`` / ``full`` / ``scratch``."""
    layers = list(module.encoder.layers)
    depth = len(layers)
    for p in module.parameters():
        p.requires_grad_(config.mode in ("full", "scratch"))
    groups: list[dict[str, object]] = []

    def add(params: Sequence[nn.Parameter], scale: float) -> None:
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for p in params:
            p.requires_grad_(True)
        if decay:
            groups.append({"params": decay, "lr": lr * scale, "weight_decay": config.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr * scale, "weight_decay": 0.0})

    top = list(module.heads.parameters()) + list(module.encoder.ln.parameters())
    if config.mode == "partial":
        n = max(0, min(config.partial_blocks, depth))
        add(top + [p for layer in layers[depth - n :] for p in layer.parameters()], 1.0)
    elif config.mode == "full":
        add(top, 1.0)
        for i, layer in enumerate(layers):
            add(list(layer.parameters()), config.layer_decay ** (depth - i))
        embed = [module.class_token, module.encoder.pos_embedding, *module.conv_proj.parameters()]
        add(embed, config.layer_decay ** (depth + 1))
    else:  # scratch: one rate for all
        add(list(module.parameters()), 1.0)
    return groups


class _Loop:
    """The epoch loop shared by partial, full and scratch: batches come from ``make_batch``."""

    def __init__(
        self,
        module: VisionTransformer,
        device: torch.device,
        config: TrainConfig,
        make_batch: Callable[[Sequence[int], bool, torch.Generator], torch.Tensor],
        train_y: torch.Tensor,
        val_y: torch.Tensor,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
    ) -> None:
        self.module = module
        self.device = device
        self.config = config
        self.make_batch = make_batch
        self.train_y = train_y
        self.val_y = val_y
        self.progress = progress
        self.cancel = cancel
        self.batch_size = config.batch_size
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_pred: list[int] = []
        self.cancelled = False

    def _cancelled(self) -> bool:
        if self.cancel is not None and self.cancel.cancelled:
            self.cancelled = True
        return self.cancelled

    def keep_if_best(self, epoch: int, val_loss: float, val_pred: list[int]) -> bool:
        if val_loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.best_pred = val_loss, epoch, val_pred
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
            return True
        return False

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, list[int]]:
        self.module.eval()
        amp, _ = _amp_context(self.device)
        n = len(self.val_y)
        losses = torch.zeros(n)
        preds: list[int] = []
        bs = max(1, self.batch_size)
        i = 0
        gen = torch.Generator().manual_seed(0)
        while i < n:
            idx = list(range(i, min(n, i + bs)))
            try:
                x = self.make_batch(idx, False, gen).to(self.device)
                with amp:  # type: ignore[attr-defined]
                    out = self.module(x).float()
            except RuntimeError as exc:
                if is_out_of_memory(exc, self.device) and bs > 1:
                    bs //= 2
                    free_cached_memory(self.device)
                    continue
                raise
            y = self.val_y[idx[0] : idx[-1] + 1].to(self.device)
            losses[idx[0] : idx[-1] + 1] = F.cross_entropy(out, y, reduction="none").cpu()
            preds.extend(out.argmax(1).tolist())
            i += len(idx)
        acc = float((torch.tensor(preds) == self.val_y).float().mean()) if n else 0.0
        return float(losses.mean()), acc, preds

    def run(self, groups: list[dict[str, object]], epochs: int) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(self.train_y)
        opt = torch.optim.AdamW(groups, lr=cfg.effective_lr)  # type: ignore[arg-type]
        steps_per_epoch = math.ceil(n / self.batch_size)
        total_steps = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_lambda(total_steps, cfg.warmup))
        amp, use_scaler = _amp_context(self.device)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        clock = _Clock(total_steps)
        trainable = [p for g in groups for p in g["params"]]  # type: ignore[union-attr]
        stale = 0
        for epoch in range(1, epochs + 1):
            if self._cancelled():
                return
            self.module.train()
            perm = torch.randperm(n, generator=gen).tolist()
            seen = correct = 0
            tot_loss = 0.0
            i = 0
            step = 0
            while i < n:
                if self._cancelled():
                    return
                idx = perm[i : i + self.batch_size]
                try:
                    x = self.make_batch(idx, True, gen).to(self.device)
                    y = self.train_y[idx].to(self.device)
                    with amp:  # type: ignore[attr-defined]
                        out = self.module(x)
                        loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                        opt.step()
                except RuntimeError as exc:
                    if is_out_of_memory(exc, self.device) and self.batch_size > 1:
                        # Out of memory: halve the batch and go on with the same photos.
                        opt.zero_grad(set_to_none=True)
                        self.batch_size //= 2
                        free_cached_memory(self.device)
                        if self.progress is not None:
                            self.progress(
                                TrainProgress("train", epoch, epochs, step, steps_per_epoch,
                                              message=f"out of memory: batch size now {self.batch_size}")
                            )
                        continue
                    raise
                sched.step()
                i += len(idx)
                step += 1
                seen += len(idx)
                tot_loss += float(loss.detach()) * len(idx)
                correct += int((out.argmax(1) == y).sum())
                eta = clock.tick()
                if self.progress is not None:
                    self.progress(
                        TrainProgress("train", epoch, epochs, step, math.ceil(n / self.batch_size),
                                      tot_loss / seen, correct / seen, eta_s=eta,
                                      message=f"epoch {epoch}/{epochs}, step {step}")
                    )
            v_loss, v_acc, v_pred = self.evaluate()
            row = {"epoch": epoch, "loss": tot_loss / max(1, seen), "acc": correct / max(1, seen),
                   "val_loss": v_loss, "val_acc": v_acc}
            self.history.append(row)
            stale = 0 if self.keep_if_best(epoch, v_loss, v_pred) else stale + 1
            if self.progress is not None:
                self.progress(
                    TrainProgress("val", epoch, epochs, step, step, row["loss"], row["acc"], v_loss, v_acc,
                                  clock.tick(0), f"epoch {epoch}/{epochs}: val acc {v_acc:.1%}")
                )
            if stale >= cfg.patience:
                return


def _finish(
    module: VisionTransformer,
    card: ModelCard,
    config: TrainConfig,
    classes: tuple[str, ...],
    val_y: Sequence[int],
    val_pred: Sequence[int],
    val_paths: Sequence[str],
    history: list[dict[str, float]],
    best_epoch: int,
    skipped: list[tuple[str, str]],
    cancelled: bool,
    seconds: float,
    n_train: int,
) -> TrainResult:
    module = module.to("cpu").float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    conf = _confusion(val_y, val_pred, len(classes))
    per_class = _per_class(conf)
    val_acc = sum(int(t == p) for t, p in zip(val_y, val_pred)) / max(1, len(val_y))
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    metrics: dict[str, object] = {
        "val_acc": val_acc,
        "val_loss": best["val_loss"] if best else None,
        "train_acc": best["acc"] if best else None,
        "best_epoch": best_epoch,
        "epochs_run": sum(1 for h in history if h["epoch"] > 0),
        "train_images": n_train,
        "val_images": len(val_y),
        "skipped_images": len(skipped),
        "seconds": round(seconds, 2),
    }
    settings = {k: v for k, v in asdict(config).items()
                if config.mode == "scratch" or k not in ("image_size", "patch_size", "num_layers", "num_heads",
                                                         "hidden_dim", "mlp_dim", "grayscale")}
    settings["epochs"] = config.effective_epochs
    settings["lr"] = config.effective_lr
    extra = dict(card.extra)
    extra.update(
        {
            "training": json.dumps(settings),
            "metrics": json.dumps({**metrics, "per_class_accuracy": dict(zip(classes, per_class))}),
        }
    )
    card = replace(card, extra=tuple(extra.items()))
    misclassified = tuple(
        (path, classes[t], classes[p]) for path, t, p in zip(val_paths, val_y, val_pred) if t != p
    )
    return TrainResult(
        module=module,
        card=card,
        metrics=metrics,
        confusion=conf,
        per_class_accuracy=per_class,
        misclassified=misclassified,
        best_epoch=best_epoch,
        skipped=tuple(skipped),
        cancelled=cancelled,
        history=tuple(history),
    )


def finetune(
    base: Engine,
    data: LabelledSet,
    config: TrainConfig = TrainConfig(),
    *,
    val_data: LabelledSet | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Teach ``base`` the classes of ``data``; returns the best model seen (also when cancelled).

    ``val_data`` (same classes) replaces the automatic stratified split of ``data``.
    To resume, pass a previous result as the base (``Engine.from_module(result.module,
    result.card)``): its head rows are matched to the same class names and training goes on from
    them.

    Raises VitDesktopError for unusable data (fewer than two classes, a class with fewer than two
    readable photos) and Cancelled when cancelled before any model exists (while reading photos).
    """
    if config.mode == "scratch":
        return train_from_scratch(data, config, device=str(base.device), progress=progress, cancel=cancel)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = base.device
    pp = base.card.preprocess
    prep = _prepare_data(data, config, pp, progress, cancel, val_data)
    classes = prep.classes
    # A private float32 copy: the engine's model keeps classifying while this one trains.
    module: VisionTransformer = copy.deepcopy(base.module).to(device=device, dtype=torch.float32)
    module.eval()
    base_w = module.heads.head.weight.detach().float().cpu()
    base_b = module.heads.head.bias.detach().float().cpu()

    fbs = max(8, config.batch_size)
    x_tr = _features_of(module, (eval_tensor(im, pp) for im in prep.train_images), len(prep.train_images), device,
                        "features (train)", progress, cancel, fbs)
    if config.augment:
        # A flipped copy of each training photo doubles the few-shot set for the price of one pass.
        x_flip = _features_of(module, (eval_tensor(TF.horizontal_flip(im), pp) for im in prep.train_images),
                              len(prep.train_images), device, "features (flipped)", progress, cancel, fbs)
        x_tr = torch.cat([x_tr, x_flip])
        y_tr = torch.tensor(prep.train_y * 2)
    else:
        y_tr = torch.tensor(prep.train_y)
    x_val = _features_of(module, (eval_tensor(im, pp) for im in prep.val_images), len(prep.val_images), device,
                         "features (validation)", progress, cancel, fbs)
    y_val = torch.tensor(prep.val_y)
    head_epochs = config.effective_epochs if config.mode == "head" else config.head_epochs
    fit = fit_head(
        x_tr, y_tr, x_val, y_val, len(classes), config,
        base_head=(base_w, base_b),
        name_match=match_base_labels(classes, base.card.labels),
        epochs=head_epochs,
        progress=progress if config.mode == "head" else None,
        cancel=cancel,
    )
    _with_head(module, fit.weight.to(device), fit.bias.to(device))
    card = replace(
        base.card,
        name=f"{base.card.name} ({len(classes)} classes)",
        kind="file",
        source="",
        arch=replace(base.card.arch, num_classes=len(classes)),
        labels=classes,
        description=f"fine-tuned from {base.card.name} ({config.mode})",
        extra=(("base_model", base.card.source or base.card.name),),
    )
    if config.mode == "head" or fit.cancelled:
        return _finish(module, card, config, classes, prep.val_y, fit.val_pred, prep.val_paths,
                       [fit.start_row, *fit.history],
                       fit.best_epoch, prep.skipped, fit.cancelled, time.perf_counter() - started,
                       len(prep.train_y))

    # partial / full: fine-tune the backbone from the fitted head, on augmented photos. Crops are
    # made in a thread pool (Pillow releases the GIL) so that a GPU is not kept waiting; each photo
    # gets its own seed drawn in order, so runs stay reproducible whatever the thread timing.
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="augment")

    def augmented(job: tuple[Image.Image, int]) -> torch.Tensor:
        return train_tensor(job[0], pp, torch.Generator().manual_seed(job[1]), hflip=config.hflip)

    def make_batch(idx: Sequence[int], train: bool, gen: torch.Generator) -> torch.Tensor:
        if train:
            ims = [prep.train_images[i] for i in idx]
            if config.augment:
                seeds = torch.randint(0, 2**31 - 1, (len(ims),), generator=gen).tolist()
                return torch.stack(list(pool.map(augmented, zip(ims, seeds))))
            return torch.stack(list(pool.map(lambda im: eval_tensor(im, pp), ims)))
        return torch.stack(list(pool.map(lambda i: eval_tensor(prep.val_images[i], pp), idx)))

    loop = _Loop(module, device, config, make_batch, torch.tensor(prep.train_y), y_val, progress, cancel)
    loop.keep_if_best(0, fit.val_loss, fit.val_pred)  # the head-only model is the first "best"
    # Epoch 0 of the backbone training is the head-only model it starts from.
    start = fit.history[fit.best_epoch - 1] if fit.best_epoch > 0 else fit.start_row
    history = [dict(start, epoch=0)]
    groups = _param_groups(module, config, config.effective_lr)
    try:
        loop.run(groups, config.effective_epochs)
    finally:
        pool.shutdown(wait=True)
    module.load_state_dict(loop.best_state)
    return _finish(module, card, config, classes, prep.val_y, loop.best_pred, prep.val_paths,
                   history + loop.history, loop.best_epoch, prep.skipped, loop.cancelled,
                   time.perf_counter() - started, len(prep.train_y))


def train_from_scratch(
    data: LabelledSet | tuple[torch.Tensor, torch.Tensor, Sequence[str]],
    config: TrainConfig,
    *,
    device: str = "auto",
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train a small ViT (``config``'s image size, patch size, depth, width) from random weights.

    ``data`` is a LabelledSet of photos, or ``(images, targets, labels)`` tensors: images
    (n, 1 or 3, h, w) uint8 or float in [0, 1]. With tensors, ``val_data`` gives a fixed
    validation set; otherwise a stratified split of ``data`` is used.
    """
    started = time.perf_counter()
    config = replace(config, mode="scratch")
    torch.manual_seed(config.seed)
    dev = _resolve(device)
    size = config.image_size
    channels_mean = (0.5, 0.5, 0.5)
    pp = Preprocess(crop_size=size, resize_size=size, interpolation="bilinear", mean=channels_mean,
                    std=channels_mean, color_mode="L" if config.grayscale else "RGB")
    skipped: list[tuple[str, str]] = []
    if isinstance(data, LabelledSet):
        prep = _prepare_data(data, config, pp, progress, cancel)
        classes = prep.classes
        unnorm = replace(pp, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        x_tr = torch.stack([eval_tensor(im, unnorm) for im in prep.train_images])
        x_val = torch.stack([eval_tensor(im, unnorm) for im in prep.val_images])
        y_tr, y_val = torch.tensor(prep.train_y), torch.tensor(prep.val_y)
        val_paths = prep.val_paths
        skipped = prep.skipped
    else:
        images, targets, labels = data
        classes = tuple(str(c) for c in labels)
        if len(classes) < 2:
            raise VitDesktopError(f"need at least two classes to train (found {len(classes)})")
        x_all = _as_unit(images, size, config.grayscale)
        y_all = torch.as_tensor(targets, dtype=torch.long)
        if val_data is not None:
            x_tr, y_tr = x_all, y_all
            x_val, y_val = _as_unit(val_data[0], size, config.grayscale), torch.as_tensor(val_data[1])
        else:
            tr_idx, val_idx = _stratified_indices(y_all.tolist(), len(classes), config.val_fraction, config.seed)
            x_tr, y_tr, x_val, y_val = x_all[tr_idx], y_all[tr_idx], x_all[val_idx], y_all[val_idx]
        val_paths = [f"#{i}" for i in range(len(y_val))]
    from .checkpoints import build_module

    arch = config.scratch_architecture(len(classes))
    module = build_module(arch).to(dev)
    mean = torch.tensor(channels_mean).view(1, 3, 1, 1)

    def make_batch(idx: Sequence[int], train: bool, gen: torch.Generator) -> torch.Tensor:
        x = (x_tr if train else x_val)[list(idx)]
        if train and config.augment:
            x = _shift_flip(x, gen, hflip=config.hflip)
        if x.shape[1] == 1:  # (n, 1, h, w) -> (n, 3, h, w)
            x = x.expand(-1, 3, -1, -1)
        return (x - mean) / mean

    loop = _Loop(module, dev, config, make_batch, y_tr, y_val.long(), progress, cancel)
    loop.run(_param_groups(module, config, config.effective_lr), config.effective_epochs)
    if loop.best_state:
        module.load_state_dict(loop.best_state)
        pred = loop.best_pred
    else:  # cancelled before the first epoch ended: the untrained model is all there is
        _, _, pred = loop.evaluate()
    card = ModelCard(
        name=f"ViT from scratch ({len(classes)} classes)",
        kind="file",
        source="",
        arch=arch,
        labels=classes,
        preprocess=pp,
        description=f"small ViT trained from scratch: {size}px, patch {config.patch_size}, depth {config.num_layers},"
        f" width {config.hidden_dim}",
        extra=(("base_model", "scratch"),),
    )
    return _finish(module, card, config, classes, y_val.tolist(), pred, val_paths, loop.history, loop.best_epoch,
                   skipped, loop.cancelled, time.perf_counter() - started, len(y_tr))


def _resolve(device: str) -> torch.device:
    try:
        from .engine import resolve_device
    except ImportError:  # engine not importable (should not happen in a full install)
        return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    return resolve_device(device)


def _as_unit(images: torch.Tensor, size: int, grayscale: bool) -> torch.Tensor:
    """(n, 1|3, h, w) uint8 or float -> (n, 1 or 3, size, size) float in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if grayscale and x.shape[1] == 3:
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    # Grayscale stays one channel here (a third of the memory for 60k images); batches are
    # repeated to three channels as they are made.
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous()


def _shift_flip(x: torch.Tensor, gen: torch.Generator, *, hflip: bool) -> torch.Tensor:
    """Small-image augmentation: random shift by up to 1/8 of the side (padding by edge), flip."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if hflip and flip[i] else crop
    return out


def _stratified_indices(
    targets: Sequence[int], num_classes: int, val_fraction: float | None, seed: int
) -> tuple[list[int], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    tr: list[int] = []
    val: list[int] = []
    frac = 0.2 if val_fraction is None else val_fraction
    for c in range(num_classes):
        members = [i for i, t in enumerate(targets) if t == c]
        if len(members) < 2:
            raise VitDesktopError(f"class {c} has {len(members)} images; each class needs at least 2")
        order = torch.randperm(len(members), generator=gen).tolist()
        n_val = min(len(members) - 1, max(1, round(len(members) * frac)))
        val.extend(members[j] for j in order[:n_val])
        tr.extend(members[j] for j in order[n_val:])
    return tr, val


__all__ = [
    "HEAD_INITS",
    "MODES",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "backbone_features",
    "decode_images",
    "eval_tensor",
    "finetune",
    "fit_head",
    "match_base_labels",
    "train_from_scratch",
    "train_tensor",
]
