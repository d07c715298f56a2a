"""Fine-tune a Vision Transformer on the user's own classes, or train a small one from scratch.

One long job with a progress callback and a CancelToken, as every long job in core. Strategies
(``TrainConfig.mode``):

* ``head``: the backbone is frozen; its features are computed once and cached, and only a linear
  head is trained on them (:mod:`.head`), which takes seconds for hundreds of photos on a CPU.
* ``partial``: the head is first fitted on cached features as above (a good start keeps the
  backbone from being wrecked by a random head's gradients), then the last N encoder blocks,
  the final norm and the head are trained on augmented photos (:mod:`.loop`).
* ``full``: as ``partial`` but every weight trains, with layer-wise learning-rate decay (blocks
  near the input move least).
* ``scratch``: a small ViT of the configured shape, from random weights (small grayscale sets).

The phases of a run, in order: read the photos (:mod:`.inputs`), cache features, fit the head,
train the backbone (partial/full), and collect the result (:mod:`.results`).
"""

from __future__ import annotations

import copy
import enum
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import torch
from PIL import Image

from vit_desktop.core.errors import CancelToken, VitDesktopError
from vit_desktop.core.inference.devices import choose_precision, resolve_device
from vit_desktop.core.inference.open_set import KEEP, NAMES_THRESHOLD, calibrate
from vit_desktop.core.labels.categories import hierarchy_for, resolve_some
from vit_desktop.core.labels.hierarchy import Hierarchy, ResolvedClass
from vit_desktop.core.models import vit
from vit_desktop.core.models.vit import ViT, build_module
from vit_desktop.core.types import ModelCard, OpenSetRule, Preprocess

from . import fewshot
from .config import HEADS, MODES, ProgressFn, TrainConfig, TrainProgress
from .fewshot import HeadData
from .inputs import (
    Photos,
    as_unit,
    decode_images,
    eval_tensor,
    features_of,
    read_photos,
    shift_flip,
    split_indices,
    train_tensor,
)
from .labelled_set import LabelledSet
from .loop import Loop, Row, param_groups
from .results import ClassBasis, HeadSelection, TrainMetrics, TrainResult, Validation, finish

if TYPE_CHECKING:
    from vit_desktop.core.inference.engine import Engine


class _Default(enum.Enum):
    """The type of :data:`FROM_BASE`: an enum member, so that a type checker tells it from None."""

    FROM_BASE = "the base model's own hierarchy"


#: ``finetune(hierarchy=...)``'s default: the base model's own label hierarchy (ImageNet's for an
#: ImageNet model, none for a model with classes of its own). It cannot be None, because None
#: already means something else there: no hierarchy at all, every class learnt from its photos.
FROM_BASE: Final = _Default.FROM_BASE


def finetune(
    base: Engine,
    data: LabelledSet,
    config: TrainConfig | None = None,
    *,
    val_data: LabelledSet | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    hierarchy: Hierarchy | None | Literal[_Default.FROM_BASE] = FROM_BASE,
) -> TrainResult:
    """Teach ``base`` the classes of ``data``; returns the best model seen (also when cancelled).

    ``head`` mode fits the few-shot heads of :mod:`.fewshot` on every photo and keeps the one
    cross-validation prefers; the estimate reported is that cross-validation's (``val_data``, with
    the same classes, replaces it by an outside validation set). ``partial`` and ``full`` start from
    such a head, fitted on a stratified training split, and train the backbone on augmented photos,
    validated on the rest. ``hierarchy`` is the label hierarchy of the base's classes (default
    :data:`FROM_BASE`: the base's own, see :func:`vit_desktop.core.labels.categories.hierarchy_for`;
    None: none); class names that it knows are a prior, so a named class may have no photos at all
    in ``head`` mode.

    Raises VitDesktopError for unusable data (fewer than two classes, a class with too few
    readable photos and a name nobody knows) and Cancelled when cancelled while reading photos.
    """
    config = config or TrainConfig()
    if config.mode == "scratch":
        return train_from_scratch(data, config, device=str(base.device), progress=progress, cancel=cancel)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = base.device
    computing = choose_precision(config.precision, device, training=True)
    precision = computing.precision
    if progress is not None:
        progress(TrainProgress("decode", 0, config.effective_epochs, 0, 0,
                               message=f"training in {precision} ({computing.why})"))
    pp = base.card.preprocess
    tree = hierarchy_for(base.card) if hierarchy is FROM_BASE else hierarchy
    names = resolve_some(data.classes, tree) if tree is not None else [None] * len(data.classes)
    named = {c for c, r in zip(data.classes, names) if r is not None}

    # 1. Photos, decoded once: all of them for head mode, a stratified split for the backbone.
    if config.mode == "head":
        data.validate(named=named)
        photos = read_photos(data, config, pp, progress, cancel, val_data, split=False, named=named)
    else:
        photos = read_photos(data, config, pp, progress, cancel, val_data)
    classes = photos.classes
    # A private float32 copy: the engine's model keeps classifying while this one trains.
    module: ViT = copy.deepcopy(base.module).to(device=device, dtype=torch.float32)
    module.eval()

    # 2. Features and the base head's logits of every photo, cached.
    def cached(images: Sequence[Image.Image], what: str, y: Sequence[int]) -> HeadData:
        tensors = (eval_tensor(im, pp) for im in images)
        f = features_of(module, tensors, len(images), device, precision, what, progress, cancel,
                        max(8, config.batch_size))
        with torch.no_grad():
            logits = vit.classifier(module).cpu()(f) if len(f) else torch.zeros(0, base.card.num_classes)
        return HeadData(logits.double().numpy(), f.double().numpy(), np.asarray(y, dtype=int))

    train = cached(photos.train_images, "features (train)", photos.train_y)
    val = cached(photos.val_images, "features (validation)", photos.val_y) if photos.val_images else None

    # An ambiguous name means what its photos show (crane: the bird or the machine).
    if tree is not None and len(train):
        evidence = [np.exp(train.log_p[train.y == c]).mean(axis=0) if (train.y == c).any() else None
                    for c in range(len(classes))]
        names = resolve_some(classes, tree, evidence=evidence)

    # 3. The head, chosen by cross-validation on the training photos.
    def report(step: int, steps: int, message: str) -> None:
        if progress is not None:
            progress(TrainProgress("select", 0, 0, step, steps, message=message))

    heads = fewshot.candidates(len(classes), names, tree, allowed=_allowed_heads(config.head))
    choice = fewshot.select_head(train, len(classes), heads, seed=config.seed, progress=report, cancel=cancel)
    base_spec = vit.head_spec_of(module)
    method = _method_name(choice.name, names)
    head = choice.params.module(_base_classifier(module), base.card.num_classes, method, base_spec,
                                vit.feature_size(module))
    vit.set_head(module, head.to(device))
    spec = vit.head_spec_of(module)
    card = replace(
        base.card,
        name=f"{base.card.name} ({len(classes)} classes)",
        kind="file",
        source="",
        arch=replace(base.card.arch, num_classes=len(classes)),
        labels=classes,
        description=f"fine-tuned from {base.card.name} ({config.mode}, {method} head)",
        extra=(("base_model", base.card.source or base.card.name),),
        head=spec,
    )
    selection = _head_selection(choice, names, classes, photos)
    if config.mode == "head" or choice.cancelled:
        card = replace(card, open_set=calibrated_rule(choice, train, val))
        if val is not None:  # an outside validation set: how the chosen head does there
            log_p = choice.params.log_proba(val)
            validation = Validation(classes, photos.val_y, log_p.argmax(axis=1).tolist(), photos.val_paths,
                                    "validation photos", np.exp(log_p))
        elif choice.held_out is not None:
            validation = Validation(classes, photos.train_y, choice.held_out.tolist(), photos.train_paths,
                                    f"{choice.folds}-fold cross-validation", choice.held_out_proba)
        else:
            validation = Validation(classes, [], [], [], "none: no class has two photos")
        return finish(module, card, config, validation, history=[], best_epoch=0, skipped=photos.skipped,
                      cancelled=choice.cancelled, started=started, n_train=len(photos.train_y), selection=selection)

    # 4. partial / full: the backbone too, from the chosen head, on augmented photos.
    assert val is not None
    y_val = torch.tensor(photos.val_y)
    val_log_p = choice.params.log_proba(val)
    start_loss = float(-val_log_p[np.arange(len(y_val)), photos.val_y].mean())
    start_pred = val_log_p.argmax(axis=1)
    loop = _backbone_training(module, device, precision, config, photos, pp, y_val,
                              (start_loss, start_pred.tolist(), np.exp(val_log_p)), progress, cancel)
    module.load_state_dict(loop.best_state)
    # Not cancellable: a cancelled run still hands back its best model, and that needs its rule.
    card = replace(card, open_set=_rule_after_training(module, fewshot.known_kind(choice.params, train), photos, pp,
                                                       device, precision, config, progress))
    # Epoch 0 of the backbone training is the head-only model it starts from.
    start: Row = {"epoch": 0, "loss": None, "acc": None, "val_loss": start_loss,
                  "val_acc": float((start_pred == y_val.numpy()).mean())}
    validation = Validation(classes, photos.val_y, loop.best_pred, photos.val_paths, "validation photos",
                            loop.best_proba)
    return finish(module, card, config, validation, history=[start, *loop.history], best_epoch=loop.best_epoch,
                  skipped=photos.skipped, cancelled=loop.cancelled, started=started, n_train=len(photos.train_y),
                  selection=selection)


def calibrated_rule(choice: fewshot.Choice, train: HeadData, val: HeadData | None) -> OpenSetRule | None:
    """The open-set rule of a head fitted on ``train``: its score's threshold keeps :data:`KEEP`
    of the held-out photos (outside validation photos when given, else cross-validation's)."""
    kind = fewshot.known_kind(choice.params, train)
    references = fewshot.unit(train.features).astype(np.float32) if kind == "nearest_photo" else None
    if val is not None and len(val):
        scores = fewshot.known_scores(choice.params, train, val, kind)
        how = f"{len(val)} validation photos"
    elif choice.held_out_known is not None:
        scores = choice.held_out_known[kind]
        how = f"{choice.folds}-fold cross-validation on {len(scores)} photos"
    elif kind == "known_mass":  # names alone: the same measure as named categories, uncalibrated
        return OpenSetRule("known_mass", NAMES_THRESHOLD, calibrated_on="no photos to hold out: the default for "
                                                                        "named categories")
    else:
        return None  # nothing to calibrate a distance on: the program's default applies
    return _rule(kind, scores, how, references)


def _rule(kind: str, scores: np.ndarray, how: str, references: np.ndarray | None) -> OpenSetRule:
    threshold = calibrate(scores, KEEP)
    # What it really keeps of these photos (a few photos cannot keep exactly KEEP).
    keeps = float((np.asarray(scores) >= threshold).mean())
    return OpenSetRule(kind, round(threshold, 6), keeps=round(keeps, 4), calibrated_on=how, references=references)


def _rule_after_training(module: ViT, kind: str, photos: Photos, pp: Preprocess, device: torch.device,
                         precision: str, config: TrainConfig, progress: ProgressFn | None) -> OpenSetRule:
    """The open-set rule of a model whose backbone trained: its features and probabilities moved,
    so the scores are those of the final weights, calibrated on the validation photos."""

    def feats(images: Sequence[Image.Image], what: str) -> torch.Tensor:
        return features_of(module, (eval_tensor(im, pp) for im in images), len(images), device, precision, what,
                           progress, None, max(8, config.batch_size))

    f_val = feats(photos.val_images, "open-set scores (validation)")
    how = f"{len(photos.val_images)} validation photos"
    if kind == "known_mass":
        head = module.heads
        assert isinstance(head, vit.FewShotHead)
        with torch.no_grad():
            scores = head.known(f_val.to(device)).double().cpu().numpy()
        return _rule(kind, scores, how, None)
    refs = fewshot.unit(feats(photos.train_images, "open-set scores (training)").double().numpy())
    scores = (fewshot.unit(f_val.double().numpy()) @ refs.T).max(axis=1)
    return _rule(kind, scores, how, refs.astype(np.float32))


def _allowed_heads(head: str) -> tuple[str, ...]:
    return fewshot.HEADS if head == "auto" else (head,)


def _method_name(head: str, names: Sequence[object | None]) -> str:
    """"hierarchy (names + photos)": which head, and what it learnt from."""
    if head == "names":
        return "names"
    if head in ("hierarchy", "blend"):
        return f"{head} ({'names + photos' if any(n is not None for n in names) else 'photos'})"
    return head


def _base_classifier(module: ViT) -> torch.nn.Module:
    """A copy of the base model's own classifier on the features, for a few-shot head to sit on."""
    heads = module.heads
    if isinstance(heads, vit.FewShotHead):
        inner = copy.deepcopy(heads)
        inner.pre = torch.nn.Identity()  # the features are taken after the pre-logits layers
        return inner
    linear: torch.nn.Module = copy.deepcopy(heads.head)
    return linear


def _head_selection(choice: fewshot.Choice, names: Sequence[ResolvedClass | None], classes: Sequence[str],
                    photos: Photos) -> HeadSelection:
    """How the head was chosen, for the saved file and for people."""
    counts = np.bincount(np.asarray(photos.train_y, dtype=int), minlength=len(classes)).tolist()
    nodes = choice.params.nodes or [[] for _ in classes]  # only hierarchy heads choose nodes
    chosen = choice.params.chosen or [[] for _ in classes]
    return HeadSelection(
        head=choice.name,
        summary=choice.summary(),
        folds=choice.folds,
        # Rounded here, not when written: what the window shows is what the file says.
        scores=tuple(fewshot.HeadScore(s.name, round(s.loss, 4), round(s.accuracy, 4)) for s in choice.scores),
        classes=tuple(
            ClassBasis(c, f"{r.display} ({len(r.classes)} classes)" if r is not None else None, tuple(n), int(k),
                       tuple(why))
            for c, r, n, k, why in zip(classes, names, nodes, counts, chosen)
        ),
    )


def _backbone_training(
    module: ViT,
    device: torch.device,
    precision: str,
    config: TrainConfig,
    photos: Photos,
    pp: Preprocess,
    y_val: torch.Tensor,
    start: tuple[float, list[int], np.ndarray],
    progress: ProgressFn | None,
    cancel: CancelToken | None,
) -> Loop:
    """Train the backbone's last blocks (or all of it) and keep the best weights, the head-only
    model included. Crops are made in a thread pool (Pillow releases the GIL) so that a GPU is not
    kept waiting; each photo gets its own seed drawn in order, so runs stay reproducible whatever
    the thread timing."""
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="augment")

    def augmented(job: tuple[Image.Image, int]) -> torch.Tensor:
        return train_tensor(job[0], pp, torch.Generator().manual_seed(job[1]), hflip=config.hflip)

    def make_batch(idx: Sequence[int], train: bool, gen: torch.Generator) -> torch.Tensor:
        if train:
            ims = [photos.train_images[i] for i in idx]
            if config.augment:
                seeds = torch.randint(0, 2**31 - 1, (len(ims),), generator=gen).tolist()
                return torch.stack(list(pool.map(augmented, zip(ims, seeds))))
            return torch.stack(list(pool.map(lambda im: eval_tensor(im, pp), ims)))
        return torch.stack(list(pool.map(lambda i: eval_tensor(photos.val_images[i], pp), idx)))

    loop = Loop(module, device, precision, config, make_batch, torch.tensor(photos.train_y), y_val, progress, cancel)
    loop.keep_if_best(0, *start)  # the head-only model is the first "best"
    try:
        loop.run(param_groups(module, config, config.effective_lr), config.effective_epochs)
    finally:
        pool.shutdown(wait=True)
    return loop


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
    dev = resolve_device(device)
    precision = choose_precision(config.precision, dev, training=True).precision
    size = config.image_size
    channels_mean = (0.5, 0.5, 0.5)
    pp = Preprocess(crop_size=size, resize_size=size, interpolation="bilinear", mean=channels_mean,
                    std=channels_mean, color_mode="L" if config.grayscale else "RGB")
    skipped: list[tuple[str, str]] = []
    if isinstance(data, LabelledSet):
        photos = read_photos(data, config, pp, progress, cancel)
        classes = photos.classes
        unnorm = replace(pp, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        x_tr = torch.stack([eval_tensor(im, unnorm) for im in photos.train_images])
        x_val = torch.stack([eval_tensor(im, unnorm) for im in photos.val_images])
        y_tr, y_val = torch.tensor(photos.train_y), torch.tensor(photos.val_y)
        val_paths = photos.val_paths
        skipped = photos.skipped
    else:
        images, targets, labels = data
        classes = tuple(str(c) for c in labels)
        if len(classes) < 2:
            raise VitDesktopError(f"need at least two classes to train (found {len(classes)})")
        x_all = as_unit(images, size, config.grayscale)
        y_all = torch.as_tensor(targets, dtype=torch.long)
        if val_data is not None:
            x_tr, y_tr = x_all, y_all
            x_val, y_val = as_unit(val_data[0], size, config.grayscale), torch.as_tensor(val_data[1])
        else:
            tr_idx, val_idx = split_indices(y_all.tolist(), len(classes), config.val_fraction, config.seed)
            x_tr, y_tr, x_val, y_val = x_all[tr_idx], y_all[tr_idx], x_all[val_idx], y_all[val_idx]
        val_paths = [f"#{i}" for i in range(len(y_val))]

    arch = config.scratch_architecture(len(classes))
    module = build_module(arch).to(dev)
    mean = torch.tensor(channels_mean).view(1, 3, 1, 1)

    def make_batch(idx: Sequence[int], train: bool, gen: torch.Generator) -> torch.Tensor:
        x = (x_tr if train else x_val)[list(idx)]
        if train and config.augment:
            x = shift_flip(x, gen, hflip=config.hflip)
        if x.shape[1] == 1:  # (n, 1, h, w) -> (n, 3, h, w)
            x = x.expand(-1, 3, -1, -1)
        return (x - mean) / mean

    loop = Loop(module, dev, precision, config, make_batch, y_tr, y_val.long(), progress, cancel)
    loop.run(param_groups(module, config, config.effective_lr), config.effective_epochs)
    if loop.best_state:
        module.load_state_dict(loop.best_state)
        pred, proba = loop.best_pred, loop.best_proba
    else:  # cancelled before the first epoch ended: the untrained model is all there is
        _, _, pred, proba = loop.evaluate()
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
    validation = Validation(classes, y_val.tolist(), pred, val_paths, "validation photos", proba)
    return finish(module, card, config, validation, history=loop.history, best_epoch=loop.best_epoch,
                  skipped=skipped, cancelled=loop.cancelled, started=started, n_train=len(y_tr))


__all__ = [
    "FROM_BASE",
    "HEADS",
    "MODES",
    "HeadSelection",
    "TrainConfig",
    "calibrated_rule",
    "TrainMetrics",
    "TrainProgress",
    "TrainResult",
    "decode_images",
    "eval_tensor",
    "finetune",
    "train_from_scratch",
    "train_tensor",
]
