"""Plain immutable data shared by core, the command line and the GUI.

Everything here may cross threads: frozen dataclasses of Python numbers, strings and CPU numpy
arrays. No tensors, no Qt. The error family and CancelToken live in :mod:`.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing this module stays cheap
    import numpy as np
    from PIL.Image import Image as PILImage

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")
#: What training may compute in: "auto" is decided per machine
#: (:func:`vit_desktop.core.inference.devices.choose_precision`).
TRAINING_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
#: What classification may compute in: training's, and int8 on the CPU (the blocks' linears
#: dynamically quantised: faster, and less accurate; :mod:`vit_desktop.core.models.quantize`).
PRECISIONS: tuple[str, ...] = (*TRAINING_PRECISIONS, "int8")
#: The maps: attention rollout (where the model looked, whatever it answered), the class map
#: (what the answer rests on: gradient-weighted rollout) and the refined class map (two passes).
EXPLAIN_METHODS: tuple[str, ...] = ("rollout", "class", "refined")
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
RESIZE_MODES: tuple[str, ...] = ("shorter", "squash", "border", "none")
CROP_ROUNDINGS: tuple[str, ...] = ("round", "floor")
#: How much of a model training changes: see :mod:`vit_desktop.core.training`.
TRAINING_MODES: tuple[str, ...] = ("head", "partial", "full", "scratch")
#: The few-shot heads (:mod:`vit_desktop.core.training.fewshot`), most constrained first.
FEW_SHOT_HEADS: tuple[str, ...] = ("names", "hierarchy", "blend", "probabilities", "features")
#: What training may use: "auto" lets cross-validation choose among the few-shot heads.
HEAD_CHOICES: tuple[str, ...] = ("auto", *FEW_SHOT_HEADS)

#: Called with (done, total); total is 0 when unknown (a download without Content-Length).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Architecture:
    """Shape of a ViT (:class:`vit_desktop.core.models.vit.ViT`); enough to build one and load its weights.

    The defaults are torchvision's ``VisionTransformer``. The other fields are the variants timm
    and its checkpoints add: no class token, register tokens (``reg_token``), layer scale
    (DeiT III's ``ls1``/``ls2``), a position embedding over the patches only (``no_embed_class``),
    and average pooling over the patch tokens, normed after pooling (``fc_norm``) or before.
    """

    image_size: int
    patch_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int
    num_classes: int
    representation_size: int | None = None
    layer_norm_eps: float = 1e-6
    class_token: bool = True
    reg_tokens: int = 0
    layer_scale: bool = False
    #: The position embedding also covers the class and register tokens (timm's no_embed_class off).
    pos_embed_prefix: bool = True
    #: "token": the class token is classified; "avg": the mean of the patch tokens.
    pool: str = "token"
    #: Average pooling's LayerNorm comes after pooling (timm's fc_norm) instead of over all tokens.
    fc_norm: bool = False

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patches: the class token, then the register tokens."""
        return int(self.class_token) + self.reg_tokens

    @property
    def is_plain(self) -> bool:
        """torchvision's own ViT: none of the variants."""
        return (self.class_token and not self.reg_tokens and not self.layer_scale and self.pos_embed_prefix
                and self.pool == "token" and not self.fc_norm)

    def variants(self) -> list[str]:
        """The variants in words, for model lists ("4 register tokens", "layer scale")."""
        out = []
        if self.reg_tokens:
            out.append(f"{self.reg_tokens} register tokens")
        if self.layer_scale:
            out.append("layer scale")
        if self.pool == "avg":
            out.append("average pooling" + (" + fc_norm" if self.fc_norm else ""))
        if not self.class_token:
            out.append("no class token")
        return out

    @property
    def grid_size(self) -> int:
        """Patches per side: the rollout grid is grid_size x grid_size."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes the model's input: resize, centre-crop, rescale, normalise.

    The modes are those of the libraries checkpoints come from, step for step, so that a model sees
    what it was trained and evaluated on (:mod:`vit_desktop.core.models.preprocess` runs them):

    * ``resize_mode`` "shorter": the shorter side becomes ``resize_size`` and the longer
      ``int(resize_size * long / short)`` (torchvision's ``Resize(int)``, Hugging Face's
      ``shortest_edge``, timm's "center"); "squash": ``resize_size`` square, aspect not kept
      (Hugging Face's ``height``/``width``, timm's "squash"); "border": the longer side becomes
      ``resize_size``, aspect kept, and the crop pads with the mean colour (timm's "border");
      "none": no resize (Hugging Face's ``do_resize`` false).
    * ``crop_rounding``: where an odd margin's extra pixel goes: "round" (torchvision and timm,
      ``round((size - crop) / 2)``, half to even) or "floor" (Hugging Face, ``(size - crop) // 2``).
    * ``rescale``: pixel values (0-255) are multiplied by it before ``(x - mean) / std``.
    """

    crop_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    #: "RGB", or "L": converted to grayscale, then repeated to three channels.
    color_mode: str = "RGB"
    #: Invert intensities after the colour conversion (dark-background training data such as
    #: Fashion-MNIST versus product photos on white).
    invert: bool = False
    resize_mode: str = "shorter"
    crop_rounding: str = "round"
    rescale: float = 1.0 / 255.0

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width`` x ``height`` photo after the resize step."""
        s = self.resize_size
        if self.resize_mode == "squash":
            return (s, s)
        if self.resize_mode == "none":
            return (width, height)
        if self.resize_mode == "border":
            ratio = max(height / s, width / s)
            return (max(1, round(width / ratio)), max(1, round(height / ratio)))
        # "shorter": torchvision's and Hugging Face's rule, the long side truncated.
        if width <= height:
            return (s, int(s * height / width))
        return (int(s * width / height), s)

    def crop_offset(self, size: int) -> int:
        """Where the crop starts along a resized side of ``size`` pixels (negative: it pads)."""
        margin = size - self.crop_size
        if self.crop_rounding == "floor":
            return margin // 2
        if margin >= 0:
            return int(round(margin / 2.0))
        return -((-margin) // 2)  # torchvision pads (crop - size) // 2 before, the rest after

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region (left, top, right, bottom) of a ``width`` x ``height`` image the model sees,
        in the image's pixels; it extends past the image where the crop pads.

        This is exactly the region :func:`vit_desktop.core.models.preprocess.model_input` takes.
        """
        rw, rh = self.resized_size(width, height)
        sx, sy = width / rw, height / rh
        left, top = self.crop_offset(rw), self.crop_offset(rh)
        c = self.crop_size
        return (left * sx, top * sy, (left + c) * sx, (top + c) * sy)

    def describe(self) -> str:
        """One line for model lists: "resize 248 (shorter side), crop 224, bicubic"."""
        how = {"shorter": "shorter side", "squash": "squashed", "border": "longer side, padded"}
        resize = "no resize" if self.resize_mode == "none" else f"resize {self.resize_size} ({how[self.resize_mode]})"
        crop = "" if self.resize_mode == "squash" and self.resize_size == self.crop_size else f", crop {self.crop_size}"
        return f"{resize}{crop}, {self.interpolation}"


@dataclass(frozen=True)
class HeadSpec:
    """A classifier head that builds the user's classes from what a base head already knows.

    ``z_k = s·log(P·M_k + eps) + W_p·std(log P) + W_f·std(f) + b_k`` where ``f`` are the features
    before the classifier and ``P`` the base head's probabilities over its ``base_classes``
    (:class:`vit_desktop.core.models.vit.FewShotHead`); each term is there only when its flag is set. A
    model without a HeadSpec has torchvision's single linear layer.
    """

    #: Outputs of the base head (1000 for an ImageNet model).
    base_classes: int
    #: The mass term: probability summed over groups of base classes (a label hierarchy).
    mass: bool = False
    #: A linear term on the base head's log-probabilities.
    logprob: bool = False
    #: A linear term on the standardised features.
    features: bool = False
    eps: float = 1e-3
    #: How the head was chosen, for people ("hierarchy (names + photos)").
    method: str = ""
    #: The base head itself, when it is not a single linear layer (a model fine-tuned again).
    base: HeadSpec | None = None


#: What an open-set rule's score measures; higher always means "more like the model's classes".
#: ``max_probability``: the best class's probability (how sure the model is of its answer);
#: ``known_mass``: the base model's probability summed over the base classes the user's classes
#: cover (how much of the photo is any of them); ``nearest_photo``: the cosine similarity of the
#: photo's features to those of the nearest training photo.
OPEN_SET_SCORES: tuple[str, ...] = ("max_probability", "known_mass", "nearest_photo")

#: What an uncertain result is, by what its rule's score measures: outside the model's classes
#: (the score measures membership), or a low-confidence answer (it cannot tell that from a photo
#: of none of them).
NONE_OF_THESE = "none of these"
NOT_SURE = "not sure"


@dataclass(frozen=True)
class OpenSetRule:
    """When a result counts as uncertain: its ``score`` (one of :data:`OPEN_SET_SCORES`) is below
    ``threshold``. A fine-tuned model stores the rule it was calibrated with; the engine applies it
    to every result."""

    score: str
    threshold: float
    #: The share of held-out photos of the model's own classes the threshold keeps (None: a
    #: threshold given by hand).
    keeps: float | None = None
    #: What it was calibrated on, for people ("5-fold cross-validation on 56 photos").
    calibrated_on: str = ""
    #: ``nearest_photo`` only: float32 (photos, features) unit-length features of the training
    #: photos, in what the model's classifier reads (after any pre-logits layer).
    references: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.score not in OPEN_SET_SCORES:
            raise ValueError(f"unknown open-set score {self.score!r} (expected {', '.join(OPEN_SET_SCORES)})")
        if self.threshold != self.threshold:  # NaN would mark nothing uncertain, silently
            raise ValueError("an open-set threshold must be a number")
        if self.score == "nearest_photo" and (self.references is None or len(self.references) == 0):
            raise ValueError("a nearest_photo rule needs the training photos' features")

    @property
    def verdict(self) -> str:
        """:data:`NONE_OF_THESE` when the score measures belonging to the classes, else :data:`NOT_SURE`."""
        return NOT_SURE if self.score == "max_probability" else NONE_OF_THESE

    def measure(self, value: float) -> str:
        """What a score says in words: "12 % of the probability on the model's classes"."""
        if self.score == "max_probability":
            return f"best class at {value:.0%}"
        if self.score == "known_mass":
            return f"{value:.0%} of the probability on the model's classes"
        return f"similarity {value:.2f} to the nearest training photo"

    def describe(self) -> str:
        """"uncertain (none of these) when under 24% of the probability is on its classes, which
        keeps 97% of held-out photos of them (5-fold cross-validation on 56 photos)"."""
        t = self.threshold
        when = {"max_probability": f"when its best class is under {t:.0%}",
                "known_mass": f"when under {t:.0%} of the probability is on its classes",
                "nearest_photo": f"when its similarity to the nearest training photo is under {t:.2f}"}[self.score]
        kept = f", which keeps {self.keeps:.0%} of held-out photos of them" if self.keeps is not None else ""
        how = f" ({self.calibrated_on})" if self.calibrated_on else ""
        return f"uncertain ({self.verdict}) {when}{kept}{how}"

    def explain(self, value: float | None) -> str:
        """Why one result is or is not uncertain: "none of these: 12 % of the probability on the
        model's classes (24 % needed)"."""
        if value is None:
            return "no score (the photo could not be classified)"
        needed = f"{self.threshold:.2f}" if self.score == "nearest_photo" else f"{self.threshold:.0%}"
        if value < self.threshold:
            return f"{self.verdict}: {self.measure(value)}; {needed} needed"
        return f"one of the model's classes: {self.measure(value)}"

    def to_json_dict(self) -> dict[str, object]:
        """The model file's ``open_set`` entry (the references travel as a tensor beside it)."""
        return {"score": self.score, "threshold": self.threshold, "keeps": self.keeps,
                "calibrated_on": self.calibrated_on}

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any], references: np.ndarray | None = None) -> OpenSetRule:
        keeps = d.get("keeps")
        return cls(score=str(d["score"]), threshold=float(d["threshold"]),
                   keeps=float(keeps) if keeps is not None else None,
                   calibrated_on=str(d.get("calibrated_on", "")), references=references)


@dataclass(frozen=True)
class ModelCard:
    """What a loaded model is: shown in the GUI, written into saved files."""

    name: str
    #: "registry" (torchvision name), "file" (a checkpoint), "bundled" (ships in models/).
    kind: str
    #: The registry name or the checkpoint path the model came from.
    source: str
    arch: Architecture
    labels: tuple[str, ...]
    preprocess: Preprocess
    description: str = ""
    #: Extra string metadata from the file (base model, training settings, metrics...).
    extra: tuple[tuple[str, str], ...] = ()
    #: None for torchvision's linear head.
    head: HeadSpec | None = None
    #: When a result is uncertain, as the model was calibrated; None: the program's default for
    #: models that carry no rule (:func:`vit_desktop.core.models.open_set.model_rule`).
    open_set: OpenSetRule | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)


#: The rule of a model that carries none (the ImageNet models, files from elsewhere): its best class
#: under this probability is "not sure". It keeps 95 % of the 187 labelled ImageNet photos of the
#: shared set with DeiT-Tiny (bench/bench_open_set.py), where it marks 6 of the 31 wrong answers.
BASE_THRESHOLD = 0.24
BASE_RULE = OpenSetRule("max_probability", BASE_THRESHOLD, keeps=0.95,
                        calibrated_on="the program's default, measured on 187 ImageNet photos with DeiT-Tiny")


def model_rule(card: ModelCard) -> OpenSetRule:
    """The rule a model applies unless told otherwise: its own, else :data:`BASE_RULE`."""
    return card.open_set if card.open_set is not None else BASE_RULE


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True, eq=False)
class Heatmap:
    """A relevance map over the patch grid, placed on the original (EXIF-oriented) image."""

    #: float32 (grid rows, grid cols), scaled so its maximum is 1.
    grid: np.ndarray
    #: (left, top, right, bottom) in original image pixels: where the grid lies.
    crop_box: tuple[float, float, float, float]
    #: (width, height) of the original image after EXIF orientation.
    image_size: tuple[int, int]
    #: None for class-agnostic rollout, else the class the map explains (a named category's
    #: position when the results are sorted into categories).
    class_index: int | None = None
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    #: Which map this is: one of :data:`EXPLAIN_METHODS`.
    method: str = "rollout"


@dataclass(frozen=True)
class ExplainOptions:
    """Which map to compute: ``method`` is one of :data:`EXPLAIN_METHODS`; head fusion and discard
    ratio shape attention rollout only."""

    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    method: str = "rollout"

    @property
    def class_specific(self) -> bool:
        return self.method != "rollout"

    def __post_init__(self) -> None:
        if self.method not in EXPLAIN_METHODS:
            raise ValueError(f"explanation must be one of {', '.join(EXPLAIN_METHODS)}")
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head fusion must be one of {', '.join(HEAD_FUSIONS)}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError("discard ratio must be in [0, 1)")


@dataclass(frozen=True)
class ClassifyResult:
    """One image's outcome: predictions best first, or an error string; never both."""

    path: str
    predictions: tuple[Prediction, ...] = ()
    error: str | None = None
    #: True when the run's open-set rule says the photo is none of the model's classes, or the
    #: model is not sure of it (see ``known_score``).
    uncertain: bool = False
    heatmap: Heatmap | None = None
    #: (width, height) of the oriented original, when it could be decoded.
    image_size: tuple[int, int] | None = None
    #: What was odd about the file but did not stop it ("damaged metadata: ..."), one line each.
    notes: tuple[str, ...] = ()
    #: Which loaded model produced this (``Engine.model_id``); "" for results of no model.
    model: str = ""
    #: float32 (classes,): the model's probabilities over all its classes, when the run kept them
    #: (the window does, to sort into named categories without classifying again).
    probabilities: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: The decoded photo, when the run kept it (to draw its overlay without decoding it again).
    image: PILImage | None = field(default=None, compare=False, repr=False)
    #: float32 (hidden,): the pooled features the model's head read, when the run kept them.
    features: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: The score the run's open-set rule (:class:`OpenSetRule`) judged ``uncertain`` by: uncertain
    #: when it is below the rule's threshold. None for errors.
    known_score: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> Prediction | None:
        return self.predictions[0] if self.predictions else None


@dataclass(frozen=True)
class DeviceInfo:
    """A device the engine can use, as offered in pickers."""

    key: str  # "cpu", "cuda:0", "mps"
    name: str  # human readable, e.g. "NVIDIA H100 80GB HBM3"


__all__ = [
    "Architecture",
    "ClassifyResult",
    "DeviceInfo",
    "ExplainOptions",
    "EXPLAIN_METHODS",
    "HEAD_FUSIONS",
    "PRECISIONS",
    "TRAINING_PRECISIONS",
    "FEW_SHOT_HEADS",
    "HEAD_CHOICES",
    "HeadSpec",
    "Heatmap",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCard",
    "BASE_RULE",
    "BASE_THRESHOLD",
    "model_rule",
    "NONE_OF_THESE",
    "NOT_SURE",
    "OPEN_SET_SCORES",
    "OpenSetRule",
    "Prediction",
    "Preprocess",
    "ProgressCallback",
    "TRAINING_MODES",
]
