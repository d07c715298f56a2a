"""What the fine-tune dialog runs on the compute thread: training from the base model, then the
mistakes' previews; and what it hands back to the GUI thread."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vit_desktop.core.errors import CancelToken, VitDesktopError
from vit_desktop.core.training.labelled_set import LabelledSet
from vit_desktop.gui.compute import LoadedModel

if TYPE_CHECKING:
    from vit_desktop.core.training import TrainConfig, TrainResult


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    """What the training task hands back to the GUI thread."""

    result: TrainResult
    #: path -> (h, w, 3) uint8 photo with its heatmap for the predicted class.
    previews: dict[str, np.ndarray]


def training_task(
    data: LabelledSet, config: TrainConfig, base: LoadedModel
) -> Callable[[Any, Callable[[object], None], CancelToken], TrainOutcome]:
    """The job run on the compute thread: train from ``base``, then render the mistakes' heatmaps."""

    def task(engine: Any, report: Callable[[object], None], cancel: CancelToken) -> TrainOutcome:
        from vit_desktop.core.training import finetune
        from vit_desktop.core.training.review import mistake_previews

        # Decoding thousands of photos (and copying the model) makes Python run full garbage
        # collections, which walk every object of the process while holding the GIL: the window
        # froze 0.3 s with DeiT-Tiny and 2,005 photos, seconds with a gallery of results. What
        # lives now (the window, the model, the results) is moved out of the collector's sight,
        # so collections during training walk only what training makes. Frozen objects are still
        # freed when their last reference goes; only cycles among them would outlive that.
        gc.freeze()
        if engine is None:
            raise VitDesktopError("load a model first: fine-tuning starts from the current model")
        if engine.model_id != base.model_id:
            # The window classifies with another model (this dialog's, after "Use now"): training
            # starts from the base all the same, loaded again for this run and freed with it.
            engine = load_base(base, report, cancel)
        result = finetune(engine, data, config, progress=report, cancel=cancel)
        return TrainOutcome(result, mistake_previews(result, engine.device))

    return task


def load_base(base: LoadedModel, report: Callable[[object], None], cancel: CancelToken) -> Any:
    from vit_desktop.core.inference.engine import Engine
    from vit_desktop.core.training import TrainProgress

    if not base.source:
        raise VitDesktopError(f"{base.card.name} is no longer loaded and has no file to load it from: choose the "
                              "model to start from in the Model menu")
    report(TrainProgress("decode", 0, 0, 0, 0, message=f"loading {base.card.name} to start from"))
    return Engine.load(base.source, device=base.device_key, precision=base.precision, cancel=cancel)


__all__ = ["TrainOutcome", "load_base", "training_task"]
