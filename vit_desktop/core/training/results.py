"""What a training run hands back: the model, its card, and how good it is on validation.

The figures are typed (:class:`TrainMetrics`, :class:`HeadSelection`) for the program's own readers
and written into the model file as JSON by :meth:`TrainMetrics.to_json_dict`, whose keys other
programs parse; :func:`describe` says in words what they mean, once for the command line and the window.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vit_desktop.core.models.vit import ViT
from vit_desktop.core.types import ModelCard

from .config import TrainConfig
from .fewshot import HeadScore
from .loop import Row
from .nodes import ChosenNode


@dataclass(frozen=True)
class ClassBasis:
    """What the chosen head rests on for one class."""

    name: str
    #: What the base model takes the name to mean ("dog.n.01 (118 classes)"); None: a name it does not know.
    meaning: str | None
    #: The hierarchy's nodes the class's photos chose ("dog.n.01"); empty for heads without a hierarchy.
    nodes: tuple[str, ...]
    #: Training photos of the class (0 for a class known by its name alone).
    photos: int
    #: The same nodes with what each rests on: how many of the class's photos point there, what it gained.
    chosen: tuple[ChosenNode, ...] = ()


@dataclass(frozen=True)
class HeadSelection:
    """How cross-validation chose the few-shot head, for the saved file and for people."""

    #: The head chosen: "names", "hierarchy", "blend", "probabilities" or "features".
    head: str
    #: "hierarchy head: CV accuracy 95% vs features 71%".
    summary: str
    #: Cross-validation folds; 0 when no class had two photos to hold one out.
    folds: int
    #: Every head scored, in the order tried, rounded to four places as saved.
    scores: tuple[HeadScore, ...]
    #: Per class, in the model's class order.
    classes: tuple[ClassBasis, ...]

    @property
    def method(self) -> str | None:
        """"5-fold cross-validation": how the head was chosen (None: nothing was held out). Not the
        validation of the result, which may be outside photos or a split the backbone trained against."""
        return f"{self.folds}-fold cross-validation" if self.folds else None

    def to_json_dict(self) -> dict[str, object]:
        """The ``selection`` entry of the saved metrics, keys and order as older files have them."""
        return {
            "head": self.head,
            "summary": self.summary,
            "folds": self.folds,
            "heads": {s.name: {"cv_loss": s.loss, "cv_accuracy": s.accuracy} for s in self.scores},
            "names": {c.name: c.meaning for c in self.classes},
            "nodes": {c.name: list(c.nodes) for c in self.classes if c.nodes},
            "photos_per_class": {c.name: c.photos for c in self.classes},
        }


@dataclass(frozen=True)
class TrainMetrics:
    """How good the trained model is on the photos held out from it, and what the run cost."""

    #: Accuracy of the kept weights on the held-out photos (0.0 when none were held out).
    val_acc: float
    #: Validation loss of the best epoch; None without epochs (head mode).
    val_loss: float | None
    #: Training accuracy of the best epoch; None without epochs or when the head-only start stayed best.
    train_acc: float | None
    best_epoch: int
    #: Epochs of backbone training that finished (0 in head mode).
    epochs_run: int
    train_images: int
    val_images: int
    skipped_images: int
    seconds: float
    #: How the photos were held out: "5-fold cross-validation", "validation photos", or why none were.
    validation: str
    #: (class, accuracy on its held-out photos), in the model's class order.
    per_class_accuracy: tuple[tuple[str, float], ...]
    #: How the head was chosen; None for a model trained from scratch.
    selection: HeadSelection | None = None

    def to_json_dict(self) -> dict[str, object]:
        """The model file's ``metrics``: these keys, in this order, are what other programs read."""
        out: dict[str, object] = {
            "val_acc": self.val_acc,
            "val_loss": self.val_loss,
            "train_acc": self.train_acc,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "skipped_images": self.skipped_images,
            "seconds": self.seconds,
            "validation": self.validation,
        }
        if self.selection is not None:
            out["selection"] = self.selection.to_json_dict()
        out["per_class_accuracy"] = dict(self.per_class_accuracy)
        return out


class Mistake(NamedTuple):
    """A validation photo the model gets wrong, and how sure it was."""

    path: str
    true: str
    predicted: str
    #: The probability the model gave the class it predicted, and the photo's true class (None: not known).
    predicted_p: float | None = None
    true_p: float | None = None


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model (on the CPU, in eval mode) and what is known about how good it is."""

    module: ViT
    card: ModelCard
    metrics: TrainMetrics
    #: rows = true class, columns = predicted class, on the validation set with the best weights.
    confusion: tuple[tuple[int, ...], ...]
    #: The validation photos the model gets wrong.
    misclassified: tuple[Mistake, ...]
    best_epoch: int
    #: Photos that could not be used: (path, reason).
    skipped: tuple[tuple[str, str], ...]
    cancelled: bool
    #: One dict per finished epoch: epoch, loss, acc, val_loss, val_acc.
    history: tuple[Row, ...] = ()

    @property
    def val_accuracy(self) -> float:
        return self.metrics.val_acc

    @property
    def per_class_accuracy(self) -> tuple[float, ...]:
        """Validation accuracy per class, in the order of ``card.labels``."""
        return tuple(acc for _, acc in self.metrics.per_class_accuracy)

    def save(self, path: str | os.PathLike[str], *, name: str | None = None, overwrite: bool = False) -> Path:
        """Write the project's safetensors file (labels, preprocessing, settings, metrics), atomically.

        ``name`` is the name the model picker shows (default: the card's). Raises FileExistsError
        when ``path`` exists and ``overwrite`` is False: a user's file is never replaced unasked.
        """
        from vit_desktop.core.models.model_file import save_model

        card = self.card if name is None else replace(self.card, name=name)
        return save_model(path, self.module, card, overwrite=overwrite)


#: Why a validation estimate flatters the model, said wherever the estimate is shown.
CAVEAT = ("photos of the same sub-types as the training ones (the same breeds, the same objects) flatter this "
          "estimate; test on kinds of photos the model has not seen")


@dataclass(frozen=True)
class Description:
    """What a person should know about a trained model, in words: how the head was chosen, how good
    it is, and how far to trust that. The command line prints :meth:`lines`; the fine-tune window
    shows :meth:`status` on one line."""

    #: How the head was chosen ("hierarchy head: CV accuracy 95% vs features 71%"); None from scratch.
    head: str | None
    #: (class, what its name means to the base model) for the names it knows.
    meanings: tuple[tuple[str, str], ...]
    #: Accuracy on the held-out photos; None when none were held out.
    accuracy: float | None
    photos: int
    #: How they were held out ("5-fold cross-validation", "validation photos", or why none were).
    method: str
    #: The epoch whose weights were kept; None without epochs (head mode).
    best_epoch: int | None
    cancelled: bool
    per_class: tuple[tuple[str, float], ...]
    #: Per class with chosen nodes: "'clothing': the photos chose garment.n.01 (9 of 12 photos point there, +3.1 nats)".
    chosen: tuple[str, ...] = ()
    #: When a result of the model is uncertain (its open-set rule in words); None: the program's default.
    uncertain: str | None = None
    #: Partial and full training: whether the trained backbone was kept or the head-only start ("kept: the
    #: weights after epoch 3 ..."); None when no backbone trained (head mode) or all of it did (scratch).
    backbone: str | None = None

    def details(self) -> list[str]:
        """What the head rests on beyond the names, which backbone the model has, and when a result is
        uncertain: the lines the command line prints after :meth:`lines`."""
        return [*self.chosen, *([f"backbone: {self.backbone}"] if self.backbone else []),
                *([f"results: {self.uncertain}"] if self.uncertain else [])]

    @property
    def how(self) -> str:
        """"validation photos, best epoch 3"."""
        return self.method + (f", best epoch {self.best_epoch}" if self.best_epoch is not None else "")

    def lines(self) -> list[str]:
        """The command line's summary after training, one line per entry."""
        lines = []
        if self.head is not None:
            lines.append(f"head: {self.head}")
            lines += [f"  {name!r} = {meaning}" for name, meaning in self.meanings]
        state = " (cancelled)" if self.cancelled else ""
        if self.accuracy is None:
            lines.append(f"validation accuracy: not measured ({self.method}){state}")
            return lines
        lines.append(f"validation accuracy: {self.accuracy:.1%} on {self.photos} photos ({self.how}){state}")
        lines.append("per class: " + "  ".join(f"{c} {a:.0%}" for c, a in self.per_class))
        lines.append(f"note: {CAVEAT}")
        return lines

    def status(self) -> str:
        """"validation accuracy 95% on 40 photos (5-fold cross-validation) — hierarchy head: ..."."""
        estimate = (f"validation accuracy {self.accuracy:.0%} on {self.photos} photos ({self.how})"
                    if self.accuracy is not None else "not validated (no photos)")
        return (estimate + (f" — {self.head}" if self.head is not None else "")
                + (f"; backbone {self.backbone}" if self.backbone is not None else ""))


def describe(result: TrainResult) -> Description:
    """The words for ``result``; see :class:`Description`."""
    m = result.metrics
    selection = m.selection
    return Description(
        head=selection.summary if selection is not None else None,
        meanings=tuple((c.name, c.meaning) for c in selection.classes if c.meaning) if selection is not None else (),
        accuracy=m.val_acc if m.val_images else None,
        photos=m.val_images,
        method=m.validation,
        best_epoch=result.best_epoch if result.history else None,
        cancelled=result.cancelled,
        per_class=m.per_class_accuracy,
        chosen=tuple(f"  {c.name!r}: the photos chose " + "; ".join(str(n) for n in c.chosen)
                     for c in (selection.classes if selection is not None else ()) if c.chosen),
        uncertain=result.card.open_set.describe() if result.card.open_set is not None else None,
        backbone=_backbone(result),
    )


def _backbone(result: TrainResult) -> str | None:
    """Whether partial or full training kept the backbone it trained. The weights kept are those of
    the lowest validation loss, the head-only start (epoch 0) included: a run whose epochs never beat
    that start hands back the base's backbone with the new head, however long it trained."""
    history = result.history
    if not history or history[0].get("epoch") != 0:
        return None  # head mode (no epochs) or a model from scratch (nothing but trained weights)
    start = history[0].get("val_loss")
    run = len(history) - 1
    epochs = f"{run} epoch{'s' if run != 1 else ''}"
    best = next((h for h in history if h.get("epoch") == result.best_epoch), None)
    if result.best_epoch > 0 and best is not None and best.get("val_loss") is not None and start is not None:
        return (f"kept: the weights after epoch {result.best_epoch} of the {epochs} run (validation loss "
                f"{best['val_loss']:.3f}; {start:.3f} with the new head alone)")
    if run == 0:
        return "discarded: no epoch of training finished, so the model is the base's backbone with the new head"
    loss = f" ({start:.3f})" if start is not None else ""
    return (f"discarded: {epochs} of training never lowered the validation loss below the new head alone's{loss}, "
            "so the model is the base's backbone with the new head (epoch 0)")


@dataclass(frozen=True)
class Validation:
    """The best model's predictions on the validation photos."""

    classes: tuple[str, ...]
    y_true: Sequence[int]
    y_pred: Sequence[int]
    paths: Sequence[str]
    #: How the predictions were held out ("5-fold cross-validation", "validation photos").
    method: str = "validation photos"
    #: (photos, classes): the probability of each class for each photo, as the predictions had them.
    proba: np.ndarray | None = None


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
    selection: HeadSelection | None = None,
) -> TrainResult:
    """The result of a run: the module on the CPU, metrics in the card's metadata."""
    module = module.to("cpu").float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    classes, y_true, y_pred = validation.classes, validation.y_true, validation.y_pred
    conf = confusion_matrix(y_true, y_pred, len(classes))
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    metrics = TrainMetrics(
        val_acc=sum(int(t == p) for t, p in zip(y_true, y_pred)) / max(1, len(y_true)),
        val_loss=best["val_loss"] if best else None,
        train_acc=best["acc"] if best else None,
        best_epoch=best_epoch,
        epochs_run=sum(1 for h in history if (h["epoch"] or 0) > 0),
        train_images=n_train,
        val_images=len(y_true),
        skipped_images=len(skipped),
        seconds=round(time.perf_counter() - started, 2),
        validation=validation.method,
        per_class_accuracy=tuple(zip(classes, per_class_accuracy(conf))),
        selection=selection,
    )
    settings: dict[str, object] = {
        k: v for k, v in asdict(config).items() if config.mode == "scratch" or k not in _SCRATCH_KEYS
    }
    settings["epochs"] = config.effective_epochs
    settings["lr"] = config.effective_lr
    extra = dict(card.extra)
    extra.update({"training": json.dumps(settings), "metrics": json.dumps(metrics.to_json_dict())})
    card = replace(card, extra=tuple(extra.items()))
    proba = validation.proba if validation.proba is not None and len(validation.proba) == len(y_true) else None
    misclassified = tuple(
        Mistake(path, classes[t], classes[p], *((float(proba[i, p]), float(proba[i, t])) if proba is not None else ()))
        for i, (path, t, p) in enumerate(zip(validation.paths, y_true, y_pred)) if t != p
    )
    return TrainResult(
        module=module,
        card=card,
        metrics=metrics,
        confusion=conf,
        misclassified=misclassified,
        best_epoch=best_epoch,
        skipped=tuple(skipped),
        cancelled=cancelled,
        history=tuple(history),
    )


__all__ = [
    "CAVEAT",
    "ClassBasis",
    "Description",
    "HeadSelection",
    "Mistake",
    "TrainMetrics",
    "TrainResult",
    "Validation",
    "confusion_matrix",
    "describe",
    "finish",
    "per_class_accuracy",
]
