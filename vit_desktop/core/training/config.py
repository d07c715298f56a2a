"""What one training run is asked to do (:class:`TrainConfig`) and what it reports (:class:`TrainProgress`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.types import HEAD_CHOICES, TRAINING_PRECISIONS, Architecture
from vit_desktop.core.types import TRAINING_MODES as MODES

HEADS = HEAD_CHOICES


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
    #: ``None``: automatic split (see :func:`vit_desktop.core.training.labelled_set.stratified_split`).
    val_fraction: float | None = None
    #: The head: "auto" (cross-validation chooses) or one of ``FEW_SHOT_HEADS``.
    head: str = "auto"
    #: Autocast precision: "auto" is decided per machine (bf16 on GPUs that have it and on CPUs
    #: that compute it natively), see :func:`vit_desktop.core.inference.devices.choose_precision`.
    precision: str = "auto"
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
        if self.precision not in TRAINING_PRECISIONS:
            raise VitDesktopError(f"unknown precision {self.precision!r} for training (choose "
                                  f"{', '.join(TRAINING_PRECISIONS)})")
        if self.head not in HEAD_CHOICES:
            raise VitDesktopError(f"unknown head {self.head!r} (choose {', '.join(HEAD_CHOICES)})")
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
        # Head mode has no epochs: its heads are fitted by LBFGS to convergence.
        return {"head": 1, "partial": 8, "full": 8, "scratch": 30}[self.mode]

    @property
    def effective_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"head": 0.0, "partial": 1e-4, "full": 5e-5, "scratch": 1e-3}[self.mode]

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

    phase: str  # "decode" | "features" | "select" | "train" | "val"
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


ProgressFn = Callable[[TrainProgress], None]

__all__ = ["HEADS", "MODES", "ProgressFn", "TrainConfig", "TrainProgress"]
