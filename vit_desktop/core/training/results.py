"""What a training run hands back: the model, its card, and how good it is on validation."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vit_desktop.core.models.vit import ViT
from vit_desktop.core.types import ModelCard

from .config import TrainConfig
from .loop import Row


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model (on the CPU, in eval mode) and what is known about how good it is."""

    module: ViT
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
    history: tuple[Row, ...] = ()

    @property
    def val_accuracy(self) -> float:
        value = self.metrics.get("val_acc", 0.0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the project's safetensors file (labels, preprocessing, settings, metrics)."""
        from vit_desktop.core.models.model_file import save_model

        return save_model(path, self.module, self.card, overwrite=overwrite)


@dataclass(frozen=True)
class Validation:
    """The best model's predictions on the validation photos."""

    classes: tuple[str, ...]
    y_true: Sequence[int]
    y_pred: Sequence[int]
    paths: Sequence[str]
    #: How the predictions were held out ("5-fold cross-validation", "validation photos").
    method: str = "validation photos"


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> tuple[tuple[int, ...], ...]:
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        m[t, p] += 1
    return tuple(tuple(int(v) for v in row) for row in m)


def per_class_accuracy(conf: tuple[tuple[int, ...], ...]) -> tuple[float, ...]:
    return tuple((row[i] / sum(row)) if sum(row) else 0.0 for i, row in enumerate(conf))


#: Settings of the scratch architecture: written only for models trained from scratch.
_SCRATCH_KEYS = ("image_size", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim", "grayscale")


def finish(
    module: ViT,
    card: ModelCard,
    config: TrainConfig,
    validation: Validation,
    *,
    history: list[Row],
    best_epoch: int,
    skipped: Sequence[tuple[str, str]],
    cancelled: bool,
    started: float,
    n_train: int,
    selection: dict[str, object] | None = None,
) -> TrainResult:
    """The result of a run: the module on the CPU, metrics in the card's metadata."""
    module = module.to("cpu").float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    classes, y_true, y_pred = validation.classes, validation.y_true, validation.y_pred
    conf = confusion_matrix(y_true, y_pred, len(classes))
    per_class = per_class_accuracy(conf)
    val_acc = sum(int(t == p) for t, p in zip(y_true, y_pred)) / max(1, len(y_true))
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    metrics: dict[str, object] = {
        "val_acc": val_acc,
        "val_loss": best["val_loss"] if best else None,
        "train_acc": best["acc"] if best else None,
        "best_epoch": best_epoch,
        "epochs_run": sum(1 for h in history if (h["epoch"] or 0) > 0),
        "train_images": n_train,
        "val_images": len(y_true),
        "skipped_images": len(skipped),
        "seconds": round(time.perf_counter() - started, 2),
        "validation": validation.method,
    }
    if selection is not None:
        metrics["selection"] = selection
    settings: dict[str, object] = {
        k: v for k, v in asdict(config).items() if config.mode == "scratch" or k not in _SCRATCH_KEYS
    }
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
        (path, classes[t], classes[p]) for path, t, p in zip(validation.paths, y_true, y_pred) if t != p
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


__all__ = ["TrainResult", "Validation", "confusion_matrix", "finish", "per_class_accuracy"]
