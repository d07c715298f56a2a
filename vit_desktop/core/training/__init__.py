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
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torchvision.models import VisionTransformer
from torchvision.transforms.v2 import functional as TF

from vit_desktop.core.data import LabelledSet
from vit_desktop.core.devices import resolve_device, resolve_precision
from vit_desktop.core.errors import CancelToken, VitDesktopError
from vit_desktop.core.types import ModelCard, Preprocess
from vit_desktop.core.vit import build_module

from .config import HEAD_INITS, MODES, ProgressFn, TrainConfig, TrainProgress
from .head import HeadFit, fit_head, match_base_labels
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
from .loop import Loop, param_groups
from .results import TrainResult, Validation, finish

if TYPE_CHECKING:
    from vit_desktop.core.engine import Engine


def _with_head(module: VisionTransformer, weight: torch.Tensor, bias: torch.Tensor) -> VisionTransformer:
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    module.heads.head = head.to(module.class_token.device)
    module.num_classes = weight.shape[0]
    return module


def finetune(
    base: Engine,
    data: LabelledSet,
    config: TrainConfig | None = None,
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
    config = config or TrainConfig()
    if config.mode == "scratch":
        return train_from_scratch(data, config, device=str(base.device), progress=progress, cancel=cancel)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = base.device
    precision = resolve_precision("auto", device, training=True)
    pp = base.card.preprocess

    # 1. Photos, split and decoded once.
    photos = read_photos(data, config, pp, progress, cancel, val_data)
    classes = photos.classes
    # A private float32 copy: the engine's model keeps classifying while this one trains.
    module: VisionTransformer = copy.deepcopy(base.module).to(device=device, dtype=torch.float32)
    module.eval()
    base_w = module.heads.head.weight.detach().float().cpu()
    base_b = module.heads.head.bias.detach().float().cpu()

    # 2. Features of every photo (and of a flipped copy of each training photo), cached.
    def cached(images: Sequence[Image.Image], what: str, flip: bool = False) -> torch.Tensor:
        tensors = (eval_tensor(TF.horizontal_flip(im) if flip else im, pp) for im in images)
        return features_of(module, tensors, len(images), device, precision, what, progress, cancel,
                           max(8, config.batch_size))

    x_tr = cached(photos.train_images, "features (train)")
    y_tr = torch.tensor(photos.train_y)
    if config.augment:
        # A flipped copy of each training photo doubles the few-shot set for the price of one pass.
        x_tr = torch.cat([x_tr, cached(photos.train_images, "features (flipped)", flip=True)])
        y_tr = torch.tensor(photos.train_y * 2)
    x_val = cached(photos.val_images, "features (validation)")
    y_val = torch.tensor(photos.val_y)

    # 3. The head, on cached features.
    fit = fit_head(
        x_tr, y_tr, x_val, y_val, len(classes), config,
        base_head=(base_w, base_b),
        name_match=match_base_labels(classes, base.card.labels),
        epochs=config.effective_epochs if config.mode == "head" else config.head_epochs,
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
    validation = Validation(classes, photos.val_y, fit.val_pred, photos.val_paths)
    if config.mode == "head" or fit.cancelled:
        return finish(module, card, config, validation, history=[fit.start_row, *fit.history],
                      best_epoch=fit.best_epoch, skipped=photos.skipped, cancelled=fit.cancelled,
                      started=started, n_train=len(photos.train_y))

    # 4. partial / full: the backbone too, from the fitted head, on augmented photos.
    loop = _backbone_training(module, device, precision, config, photos, pp, y_val, fit, progress, cancel)
    module.load_state_dict(loop.best_state)
    start = fit.history[fit.best_epoch - 1] if fit.best_epoch > 0 else fit.start_row
    # Epoch 0 of the backbone training is the head-only model it starts from.
    history = [dict(start, epoch=0), *loop.history]
    validation = replace(validation, y_pred=loop.best_pred)
    return finish(module, card, config, validation, history=history, best_epoch=loop.best_epoch,
                  skipped=photos.skipped, cancelled=loop.cancelled, started=started, n_train=len(photos.train_y))


def _backbone_training(
    module: VisionTransformer,
    device: torch.device,
    precision: str,
    config: TrainConfig,
    photos: Photos,
    pp: Preprocess,
    y_val: torch.Tensor,
    fit: HeadFit,
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
    loop.keep_if_best(0, fit.val_loss, fit.val_pred)  # the head-only model is the first "best"
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
    precision = resolve_precision("auto", dev, training=True)
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
    validation = Validation(classes, y_val.tolist(), pred, val_paths)
    return finish(module, card, config, validation, history=loop.history, best_epoch=loop.best_epoch,
                  skipped=skipped, cancelled=loop.cancelled, started=started, n_train=len(y_tr))


__all__ = [
    "HEAD_INITS",
    "MODES",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "decode_images",
    "eval_tensor",
    "finetune",
    "fit_head",
    "match_base_labels",
    "train_from_scratch",
    "train_tensor",
]
