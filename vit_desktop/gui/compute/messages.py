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
    from vit_desktop.core.library.prints import PhotoPrints

#: What the window says wherever it needs a model and has none.
NO_MODEL_TEXT = "No model loaded — choose one from the Model menu"

#: A task run on the compute thread: fn(engine or None, report, cancel token) -> value.
TaskFn = Callable[["Engine | None", Callable[[object], None], "CancelToken"], object]
#: What is made of gathered prints, on the compute thread: fn(prints, the first photo as listed or
#: None, report, cancel token) -> plain data for the GUI.
PrintsFn = Callable[["PhotoPrints", "str | None", Callable[[object], None], "CancelToken"], object]


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


@dataclass(frozen=True)
class PrintsRequest:
    """The prints of ``paths`` (:class:`~vit_desktop.core.inference.lookalikes.PrintsRun`): the model
    in use's features when ``features``, perceptual hashes when ``hashes``; read from the library where
    it holds them, computed (and stored) where not. ``then`` makes the job's value of them there."""

    paths: tuple[str, ...]
    features: bool
    hashes: bool
    then: PrintsFn
    #: The photo asked about (similar photos): listed first when it is not among ``paths``.
    first: str | None = None


Request = LoadRequest | UseModuleRequest | RunRequest | ExplainRequest | TaskRequest | PrintsRequest


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


@dataclass(frozen=True)
class PrintsReply:
    """What a :class:`PrintsRequest` made, and how its prints were had."""

    value: Any
    #: Photos whose prints were read from the library, and photos classified or hashed for them.
    from_library: int
    computed: int
    #: (path, why) of each photo that could not be read.
    unreadable: tuple[tuple[str, str], ...]


__all__ = [
    "NO_MODEL_TEXT",
    "ExplainRequest",
    "HeatmapReply",
    "LoadRequest",
    "LoadedModel",
    "PrintsFn",
    "PrintsReply",
    "PrintsRequest",
    "Request",
    "RunProgress",
    "RunRequest",
    "TaskFn",
    "TaskRequest",
    "UseModuleRequest",
]
