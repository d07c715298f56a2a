"""A new classifier head on cached features, with what the base model already knows.

With 5-30 photos per class a linear head on raw features overfits. The head can also use the base
model's own logits, which are a linear function of the same features (``z = W_base x + b_base``),
so a head ``A x + a + B z`` collapses exactly into one ``Linear`` layer (``W = A + B W_base``) and
the result stays a plain ViT whose heatmaps work. ``B`` starts from the base classes whose names
match the user's class names, or else from each class's mean base-class probabilities
(``TrainConfig.head_init``; the default was chosen by ``bench/bench_finetune.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.units import Stopwatch

from .config import HEAD_LR, ProgressFn, TrainConfig, TrainProgress
from .loop import Row, cosine_schedule


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


@dataclass
class HeadFit:
    """The fitted head as one Linear on raw features, and how it scored on validation."""

    weight: torch.Tensor  # (classes, hidden)
    bias: torch.Tensor  # (classes,)
    history: list[Row] = field(default_factory=list)
    best_epoch: int = 0
    val_loss: float = math.inf
    val_pred: list[int] = field(default_factory=list)
    cancelled: bool = False
    #: Validation metrics of the head it started from (epoch 0).
    start_row: Row = field(default_factory=dict)


class _Head:
    """logits = standardise(x) Aᵀ + a (+ scale(z) Bᵀ with z the base logits), trained on features."""

    def __init__(self, x_tr: torch.Tensor, num_classes: int) -> None:
        # Standardising features keeps one learning rate good for every backbone; it folds back
        # into the head's weights at the end.
        self.mu = x_tr.mean(0)
        self.sd = x_tr.std(0, unbiased=False).clamp_min(1e-6)
        self.A = torch.zeros(num_classes, x_tr.shape[1])
        self.a = torch.zeros(num_classes)
        self.B: torch.Tensor | None = None
        self.z_mu = torch.zeros(0)
        self.z_sd = torch.ones(())

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.A, self.a] + ([self.B] if self.B is not None else [])

    def init_prototypes(self, x_tr: torch.Tensor, y_tr: torch.Tensor) -> None:
        """Each class's row points at its mean standardised feature (cosine prototypes)."""
        xs = (x_tr - self.mu) / self.sd
        for c in range(self.A.shape[0]):
            sel = xs[y_tr == c]
            if len(sel):
                proto = sel.mean(0)
                self.A[c] = proto / proto.norm().clamp_min(1e-6) * 2.0

    def init_from_base(
        self, z_tr: torch.Tensor, y_tr: torch.Tensor, w_base: torch.Tensor, name_match: dict[int, list[int]]
    ) -> None:
        """B starts from what the base model sees in each class's photos (and its name, if it matches)."""
        num_classes = self.A.shape[0]
        self.z_mu = torch.zeros(z_tr.shape[1])  # no centring: a per-class offset would favour some classes
        self.z_sd = z_tr.std(0, unbiased=False).mean().clamp_min(1e-6)  # one scale keeps logits comparable
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
            candidates = name_match.get(c)
            if candidates:
                # A base class with the same name: trust it, choosing by the photos when ambiguous.
                best = max(candidates, key=lambda j: float(B[c, j]))
                B[c] /= B[c].norm().clamp_min(1e-6)
                B[c, best] += 1.0
        # Scale so the initial logits have a useful spread.
        B *= 2.0 / B.norm(dim=1, keepdim=True).clamp_min(1e-6)
        self.B = B

    def logits(
        self, x: torch.Tensor, z: torch.Tensor | None, params: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        A, a, *rest = params if params is not None else self.params
        out = ((x - self.mu) / self.sd) @ A.T + a
        if rest and z is not None:
            out = out + ((z - self.z_mu) / self.z_sd) @ rest[0].T
        return out

    def folded(
        self, params: Sequence[torch.Tensor], base_head: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardisation (and the base logits) folded into one Linear on raw features."""
        with torch.no_grad():
            A, a, *rest = params
            W = A / self.sd
            b = a - (A * (self.mu / self.sd)).sum(1)
            if rest and base_head is not None:
                B = rest[0] / self.z_sd
                W = W + B @ base_head[0]
                b = b + B @ base_head[1] - (B * self.z_mu).sum(1)
            return W.detach().clone(), b.detach().clone()


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
) -> HeadFit:
    """Train a linear head on cached features (CPU, float32); returns the collapsed best head.

    ``base_head`` (W_base, b_base) enables the "base" strategy: logits = A x + a + B (W_base x + b_base).
    """
    gen = torch.Generator().manual_seed(config.seed)
    epochs = epochs or config.head_epochs
    head = _Head(x_tr, num_classes)
    use_base = config.head_init == "base" and base_head is not None
    if config.head_init == "prototype" or (config.head_init == "base" and not use_base):
        head.init_prototypes(x_tr, y_tr)
    z_tr = z_val = None
    if use_base:
        assert base_head is not None
        w_base, b_base = base_head
        z_tr = x_tr @ w_base.T + b_base  # (n, base classes)
        z_val = x_val @ w_base.T + b_base
        head.init_from_base(z_tr, y_tr, w_base, name_match or {})
    params = head.params
    for p in params:
        p.requires_grad_(True)

    lr = config.lr if (config.lr is not None and config.mode == "head") else HEAD_LR
    opt = torch.optim.AdamW(
        [{"params": [head.A] + ([head.B] if head.B is not None else []), "weight_decay": config.weight_decay * 10},
         {"params": [head.a], "weight_decay": 0.0}],
        lr=lr,
    )
    n = x_tr.shape[0]
    bs = min(max(config.batch_size, 64), n)
    steps_per_epoch = math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(epochs * steps_per_epoch, config.warmup))
    fit = HeadFit(weight=torch.zeros(num_classes, x_tr.shape[1]), bias=torch.zeros(num_classes))
    clock = Stopwatch(epochs)

    def evaluate() -> tuple[float, float, list[int]]:
        with torch.no_grad():
            lv = head.logits(x_val, z_val)
            loss = float(F.cross_entropy(lv, y_val))
            pred = lv.argmax(1)
            return loss, float((pred == y_val).float().mean()), pred.tolist()

    # Epoch 0: the initial head is a valid model too (what Cancel keeps if pressed at once).
    v_loss, v_acc, v_pred = evaluate()
    fit.val_loss, fit.val_pred, fit.best_epoch = v_loss, v_pred, 0
    fit.start_row = {"epoch": 0, "loss": None, "acc": None, "val_loss": v_loss, "val_acc": v_acc}
    best_state = tuple(p.detach().clone() for p in params)
    patience = max(config.patience, 10)  # epochs are tiny here: noisy losses need more rope
    stale = 0
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
                xb = xb + 0.1 * head.sd * torch.randn(xb.shape, generator=gen)
            out = head.logits(xb, z_tr[idx] if z_tr is not None else None)
            loss = F.cross_entropy(out, y_tr[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y_tr[idx]).sum())
        v_loss, v_acc, v_pred = evaluate()
        row: Row = {"epoch": epoch, "loss": tot_loss / n, "acc": correct / n, "val_loss": v_loss, "val_acc": v_acc}
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
                    "val", epoch, epochs, epoch, epochs, tot_loss / n, correct / n, v_loss, v_acc, clock.tick(),
                    f"head epoch {epoch}/{epochs}",
                )
            )
        if stale >= patience:
            break
    fit.weight, fit.bias = head.folded(best_state, base_head if use_base else None)
    return fit


__all__ = ["HeadFit", "fit_head", "match_base_labels", "related_classes"]
