"""What crosses between the GUI thread and the compute thread: frozen requests and plain replies.

Requests are frozen dataclasses the GUI never touches again after posting; replies hold Python
numbers, strings, cards, results and CPU numpy arrays only (never tensors, pixmaps or widgets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.inference.runs import RunProgress
from vit_desktop.core.types import ExplainOptions, Heatmap, ModelCard

if TYPE_CHECKING:  # the engine imports torch; the window must not wait for that at start-up
    from vit_desktop.core.errors import CancelToken
    from vit_desktop.core.inference.engine import Engine

#: What the window says wherever it needs a model and has none.
NO_MODEL_TEXT = "No model loaded — choose one from the Model menu"

#: A task run on the compute thread: fn(engine or None, report, cancel token) -> value.
TaskFn = Callable[["Engine | None", Callable[[object], None], "CancelToken"], object]


# ----------------------------------------------------------------------------------------------
# Requests (GUI thread -> compute thread)


@dataclass(frozen=True)
class LoadRequest:
    source: str
    device: str
    precision: str


@dataclass(frozen=True)
class UseModuleRequest:
    module: Any  # a ViT handed over for good: the GUI keeps no reference
    card: ModelCard
    device: str
    precision: str


@dataclass(frozen=True)
class RunRequest:
    paths: tuple[str, ...]
    options: ClassifyOptions


@dataclass(frozen=True)
class ExplainRequest:
    path: str
    options: ExplainOptions
    #: The class a class map explains (None: the photo's top-1); rollout ignores it.
    class_index: int | None
    #: A named category's base classes: the map of the category ``class_index`` stands for.
    members: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TaskRequest:
    fn: TaskFn


Request = LoadRequest | UseModuleRequest | RunRequest | ExplainRequest | TaskRequest


# ----------------------------------------------------------------------------------------------
# Replies (compute thread -> GUI thread)


@dataclass(frozen=True)
class LoadedModel:
    """What the window shows once a model is ready."""

    card: ModelCard
    device_name: str
    device_key: str
    precision: str
    source: str
    #: The engine's ``model_id``: results made by this model carry it.
    model_id: str = ""
    #: Why this precision ("this CPU computes bf16 natively (AVX512-BF16)").
    precision_why: str = ""


@dataclass(frozen=True)
class HeatmapReply:
    path: str
    heatmap: Heatmap


__all__ = [
    "NO_MODEL_TEXT",
    "ExplainRequest",
    "HeatmapReply",
    "LoadRequest",
    "LoadedModel",
    "Request",
    "RunProgress",
    "RunRequest",
    "TaskFn",
    "TaskRequest",
    "UseModuleRequest",
]
