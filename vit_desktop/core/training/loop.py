"""The epoch loop of partial, full and scratch training, in the shape of nanoGPT's ``train.py``.

AdamW, linear warm-up then cosine decay per step, one AMP path (autocast for the run's precision,
``GradScaler(enabled=precision == "fp16")``), evaluation once per epoch, and the best weights
(lowest validation loss) kept aside. Batches that do not fit in device memory are split by the
device layer's one back-off (:class:`vit_desktop.core.inference.devices.BatchLimit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.inference.devices import BatchLimit, autocast
from vit_desktop.core.models import vit
from vit_desktop.core.models.vit import ViT
from vit_desktop.core.units import Stopwatch

from .config import ProgressFn, TrainConfig, TrainProgress

#: Metrics of one epoch: epoch, loss, acc, val_loss, val_acc (loss and acc are None for epoch 0).
Row = dict[str, float | None]
#: (indices, training?, generator) -> a normalised (n, 3, h, w) batch on the CPU.
BatchMaker = Callable[[Sequence[int], bool, torch.Generator], torch.Tensor]


def cosine_schedule(total_steps: int, warmup: float) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` of the steps, then cosine to 0."""
    warm = max(1, int(round(total_steps * warmup))) if warmup > 0 else 0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def param_groups(module: ViT, config: TrainConfig, lr: float) -> list[dict[str, object]]:
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

    fc_norm = getattr(module, "fc_norm", None)
    top = [*module.heads.parameters(), *module.encoder.ln.parameters(),
           *(fc_norm.parameters() if fc_norm is not None else ())]
    if config.mode == "partial":
        n = max(0, min(config.partial_blocks, depth))
        add(top + [p for layer in layers[depth - n :] for p in layer.parameters()], 1.0)
    elif config.mode == "full":
        add(top, 1.0)
        for i, layer in enumerate(layers):
            add(list(layer.parameters()), config.layer_decay ** (depth - i))
        tokens = [t for t in (module.class_token, getattr(module, "reg_token", None)) if t is not None]
        embed = [*tokens, module.encoder.pos_embedding, *module.conv_proj.parameters()]
        add(embed, config.layer_decay ** (depth + 1))
    else:  # scratch: one rate for all
        add(list(module.parameters()), 1.0)
    return groups


class Loop:
    """Trains ``module`` on batches from ``make_batch``; keeps the best weights by validation loss."""

    def __init__(
        self,
        module: ViT,
        device: torch.device,
        precision: str,
        config: TrainConfig,
        make_batch: BatchMaker,
        train_y: torch.Tensor,
        val_y: torch.Tensor,
        progress: ProgressFn | None,
        cancel: CancelToken | None,
    ) -> None:
        self.module = module
        self.device = device
        self.precision = precision
        self.config = config
        self.make_batch = make_batch
        self.train_y = train_y
        self.val_y = val_y
        self.progress = progress
        self.cancel = cancel
        self.train_limit = BatchLimit(device, config.batch_size)
        self.eval_limit = BatchLimit(device, max(1, config.batch_size))
        self.history: list[Row] = []
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_pred: list[int] = []
        #: (n_val, classes) probabilities of the validation photos under the best weights.
        self.best_proba: np.ndarray | None = None
        self.cancelled = False

    def _cancelled(self) -> bool:
        if self.cancel is not None and self.cancel.cancelled:
            self.cancelled = True
        return self.cancelled

    def keep_if_best(self, epoch: int, val_loss: float, val_pred: list[int],
                     val_proba: np.ndarray | None = None) -> bool:
        if val_loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.best_pred = val_loss, epoch, val_pred
            self.best_proba = val_proba
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
            return True
        return False

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, list[int], np.ndarray]:
        """(validation loss, accuracy, predictions, (n, classes) probabilities) of the weights as they are."""
        self.module.eval()
        n = len(self.val_y)
        losses = torch.zeros(n)
        preds: list[int] = []
        probas: list[torch.Tensor] = []
        gen = torch.Generator().manual_seed(0)

        def batch(start: int, stop: int) -> torch.Tensor:
            x = self.make_batch(list(range(start, stop)), False, gen).to(self.device)
            with autocast(self.device, self.precision):
                return vit.forward(self.module, x).float()

        for start, stop, out in self.eval_limit.run(n, batch):
            y = self.val_y[start:stop].to(self.device)
            losses[start:stop] = F.cross_entropy(out, y, reduction="none").cpu()
            preds.extend(out.argmax(1).tolist())
            probas.append(out.softmax(1).cpu())
        acc = float((torch.tensor(preds) == self.val_y).float().mean()) if n else 0.0
        proba = torch.cat(probas).numpy() if probas else np.zeros((0, 0), dtype=np.float32)
        return float(losses.mean()), acc, preds, proba

    def run(self, groups: list[dict[str, object]], epochs: int) -> None:
        """Train for up to ``epochs`` epochs (early stop after ``patience`` without a better loss)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(self.train_y)
        opt = torch.optim.AdamW(groups, lr=cfg.effective_lr)
        total_steps = epochs * math.ceil(n / cfg.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(total_steps, cfg.warmup))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        clock = Stopwatch(total_steps)
        trainable = [p for g in groups for p in g["params"]]  # type: ignore[attr-defined]  # each group holds a list
        stale = 0
        for epoch in range(1, epochs + 1):
            if self._cancelled():
                return
            perm = torch.randperm(n, generator=gen).tolist()
            loss, acc, step = self._train_epoch(
                _Epoch(epoch, epochs, perm), gen, opt, sched, scaler, trainable, clock)
            if self._cancelled():
                return
            v_loss, v_acc, v_pred, v_proba = self.evaluate()
            row: Row = {"epoch": epoch, "loss": loss, "acc": acc, "val_loss": v_loss, "val_acc": v_acc}
            self.history.append(row)
            stale = 0 if self.keep_if_best(epoch, v_loss, v_pred, v_proba) else stale + 1
            if self.progress is not None:
                self.progress(TrainProgress("val", epoch, epochs, step, step, loss, acc, v_loss, v_acc, clock.tick(0),
                                            f"epoch {epoch}/{epochs}: val acc {v_acc:.1%}"))
            if stale >= cfg.patience:
                return

    def _train_epoch(
        self,
        ep: _Epoch,
        gen: torch.Generator,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        trainable: list[torch.Tensor],
        clock: Stopwatch,
    ) -> tuple[float, float, int]:
        """One pass over the training photos in ``ep.order``; returns (loss, accuracy, steps)."""
        cfg = self.config
        n = len(ep.order)
        self.module.train()
        seen = correct = step = 0
        tot_loss = 0.0

        def train_step(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            idx = ep.order[start:stop]
            x = self.make_batch(idx, True, gen).to(self.device)
            y = self.train_y[idx].to(self.device)
            with autocast(self.device, self.precision):
                out = vit.forward(self.module, x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            scaler.step(opt)
            scaler.update()
            return out, y, loss

        def smaller(size: int) -> None:
            # Out of memory: the same photos again in smaller batches; no half-step is kept.
            opt.zero_grad(set_to_none=True)
            if self.progress is not None:
                self.progress(TrainProgress("train", ep.epoch, ep.epochs, step, math.ceil(n / size),
                                            message=f"out of memory: batch size now {size}"))

        for start, stop, (out, y, loss) in self.train_limit.run(n, train_step, on_smaller=smaller):
            sched.step()
            step += 1
            seen += stop - start
            tot_loss += float(loss.detach()) * (stop - start)
            correct += int((out.argmax(1) == y).sum())
            eta = clock.tick()
            if self.progress is not None:
                size = self.train_limit.size or cfg.batch_size
                self.progress(TrainProgress("train", ep.epoch, ep.epochs, step, math.ceil(n / size),
                                            tot_loss / seen, correct / seen, eta_s=eta,
                                            message=f"epoch {ep.epoch}/{ep.epochs}, step {step}"))
            if self._cancelled():
                break
        return tot_loss / max(1, seen), correct / max(1, seen), step


@dataclass(frozen=True)
class _Epoch:
    epoch: int
    epochs: int
    #: The training photos' indices in this epoch's order.
    order: list[int]


__all__ = ["BatchMaker", "Loop", "Row", "cosine_schedule", "param_groups"]
