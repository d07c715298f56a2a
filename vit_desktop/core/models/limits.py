"""What a model file may declare: the limits, and the one check every loaded model passes first.

A model file is data from anywhere, and what it declares turns into work: sizes into allocations
(a 200000-pixel resize, 10^9 layers or classes), numbers into arithmetic (a NaN std scores every
photo NaN), labels into lines on the screen. :func:`check_model` refuses anything outside the
limits below with one line naming the value, before a module is built or an input allocated;
every loader goes through it (:func:`vit_desktop.core.models.checkpoints.load_checkpoint`).

The limits sit far above every published Vision Transformer (ViT-22B: 48 layers, width 6144;
ViT-H/14: 518 px, 1369 patches; ImageNet-21k: 21843 classes) and far below what would exhaust a
machine:

* input (crop) and resize sizes: 1 to :data:`MAX_IMAGE_SIZE` pixels; the patch size divides the
  input, and the patches are at most :data:`MAX_PATCHES` (attention grows with their square);
* layers: 1 to :data:`MAX_LAYERS`; widths (hidden, MLP, representation): 1 to :data:`MAX_WIDTH`;
  attention heads divide the hidden size; register tokens: 0 to :data:`MAX_REGISTER_TOKENS`;
* classes: 1 to :data:`MAX_CLASSES`, one label per row of the head;
* labels: strings of 1 to :data:`MAX_LABEL_LENGTH` characters, something visible, no control
  characters (a label is one line in every table); the project's own files also have no two labels
  alike (foreign configs may: the Hub's ImageNet ``id2label`` names two classes "crane");
* a name and a description: cut (not refused) to :data:`MAX_NAME_LENGTH` and
  :data:`MAX_DESCRIPTION_LENGTH` characters;
* numbers: finite; ``layer_norm_eps`` and a few-shot head's ``eps`` in (0, 1]; mean within
  +-:data:`MAX_NORMALISE`, std from :data:`MIN_STD` to :data:`MAX_NORMALISE`, rescale in (0, 1],
  a config's ``crop_pct`` from :data:`MIN_CROP_PCT` to :data:`MAX_CROP_PCT`;
* a few-shot head nests at most :data:`MAX_HEAD_DEPTH` base heads.

What a file is, rather than what it says, is checked where it is read
(:mod:`vit_desktop.core.models.checkpoints`): regular files only, zip entries that unpack to at most
4 times the file, config files of at most 16 MB.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence

from vit_desktop.core.errors import ModelError, shown
from vit_desktop.core.types import CROP_ROUNDINGS, INTERPOLATIONS, RESIZE_MODES, Architecture, HeadSpec, Preprocess

MAX_IMAGE_SIZE = 4096
MAX_PATCHES = 128 * 128
MAX_LAYERS = 256
MAX_WIDTH = 65536
MAX_REGISTER_TOKENS = 256
MAX_CLASSES = 100_000
MAX_LABEL_LENGTH = 1000
#: A model's name and description, as a file gives them, are cut to these many characters rather
#: than refused: they are only shown, but a 10 MB name took seconds to lay out in every label.
MAX_NAME_LENGTH = 1000
MAX_DESCRIPTION_LENGTH = 10_000
MAX_HEAD_DEPTH = 16
MAX_NORMALISE = 1000.0
MIN_STD = 1e-3
MIN_CROP_PCT = 0.01
MAX_CROP_PCT = 100.0


# --------------------------------------------------------------------------------------------
# Values read from JSON


def as_int(value: object, what: str) -> int:
    """``int(value)`` for a value read from a file; ModelError naming ``what`` for anything that is
    not a finite number (``1e400`` is infinity to JSON readers)."""
    try:
        number: int = int(value)  # type: ignore[call-overload]  # anything may come out of a JSON file
    except (TypeError, ValueError, OverflowError):
        raise ModelError(f"{what} {shown(value)} is not a number") from None
    return number


def as_size(value: object, what: str) -> int:
    """A side in pixels read from a file: a number from 1 to :data:`MAX_IMAGE_SIZE`, checked where
    it is read because what is computed from it next (a resize from a crop fraction) must stay finite."""
    side = as_int(value, what)
    if not 1 <= side <= MAX_IMAGE_SIZE:
        raise ModelError(f"{what} {shown(side)} is out of range (1 to {MAX_IMAGE_SIZE:,} pixels)")
    return side


def as_float(value: object, what: str) -> float:
    """``float(value)`` for a value read from a file; ModelError for NaN, infinity and non-numbers."""
    try:
        number = float(value)  # type: ignore[arg-type]  # anything may come out of a JSON file
    except (TypeError, ValueError, OverflowError):
        raise ModelError(f"{what} {shown(value)} is not a number") from None
    if not math.isfinite(number):
        raise ModelError(f"{what} {shown(value)} is not a finite number")
    return number


def as_crop_pct(value: object, what: str) -> float:
    """A crop fraction read from a file (the resize is the crop size divided by it): a number from
    :data:`MIN_CROP_PCT` to :data:`MAX_CROP_PCT`, so that the division stays finite."""
    pct = as_float(value, what)
    if not MIN_CROP_PCT <= pct <= MAX_CROP_PCT:
        raise ModelError(f"{what} {pct:g} is out of range ({MIN_CROP_PCT:g} to {MAX_CROP_PCT:g})")
    return pct


def _whole(value: object, what: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``: the type as well as the range (metadata is JSON)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{what} {shown(value)} is not a whole number")
    if not low <= value <= high:
        raise ModelError(f"{what} {shown(value)} is out of range ({low:,} to {high:,})")
    return value


def _flag(value: object, what: str) -> None:
    if not isinstance(value, bool):
        raise ModelError(f"{what} {shown(value)} is not true or false")


def _between(value: object, what: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{what} {shown(value)} is not a finite number")
    if value < low or value > high or (open_low and value == low):
        lower = f"above {low:g}" if open_low else f"{low:g}"
        raise ModelError(f"{what} {value:g} is out of range ({lower} to {high:g})")
    return float(value)


# --------------------------------------------------------------------------------------------
# The checks


def check_architecture(arch: Architecture) -> None:
    """ModelError when ``arch`` is not a ViT this program can build and run."""
    size = _whole(arch.image_size, "input size", 1, MAX_IMAGE_SIZE)
    patch = _whole(arch.patch_size, "patch size", 1, MAX_IMAGE_SIZE)
    if size % patch:
        raise ModelError(f"input size {size} is not a multiple of the patch size {patch}")
    if (size // patch) ** 2 > MAX_PATCHES:
        raise ModelError(f"input size {size} with patch size {patch} makes {(size // patch) ** 2:,} patches "
                         f"(at most {MAX_PATCHES:,})")
    _whole(arch.num_layers, "number of layers", 1, MAX_LAYERS)
    hidden = _whole(arch.hidden_dim, "hidden size", 1, MAX_WIDTH)
    heads = _whole(arch.num_heads, "number of attention heads", 1, hidden)
    if hidden % heads:
        raise ModelError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    _whole(arch.mlp_dim, "MLP size", 1, MAX_WIDTH)
    _whole(arch.num_classes, "number of classes", 1, MAX_CLASSES)
    if arch.representation_size is not None:
        _whole(arch.representation_size, "representation size", 1, MAX_WIDTH)
    _between(arch.layer_norm_eps, "layer_norm_eps", 0.0, 1.0, open_low=True)
    for name in ("class_token", "layer_scale", "pos_embed_prefix", "fc_norm"):
        _flag(getattr(arch, name), name)
    _whole(arch.reg_tokens, "number of register tokens", 0, MAX_REGISTER_TOKENS)
    if arch.pool not in ("token", "avg"):
        raise ModelError(f"unsupported pooling {shown(arch.pool)} (class token or average only)")
    if arch.pool == "token" and not arch.class_token:
        raise ModelError("class-token pooling needs a class token")


def check_head(head: HeadSpec | None) -> None:
    """ModelError when a few-shot head's description cannot be built."""
    depth = 0
    while head is not None:
        depth += 1
        if depth > MAX_HEAD_DEPTH:
            raise ModelError(f"the head nests more than {MAX_HEAD_DEPTH} base heads")
        _whole(head.base_classes, "number of base classes", 1, MAX_CLASSES)
        for name in ("mass", "logprob", "features"):
            _flag(getattr(head, name), f"head {name}")
        _between(head.eps, "head eps", 0.0, 1.0, open_low=True)
        if not isinstance(head.method, str) or len(head.method) > MAX_LABEL_LENGTH:
            raise ModelError(f"head method {shown(head.method)} is not a short string")
        head = head.base


def check_preprocess(pp: Preprocess) -> None:
    """ModelError when a preprocessing description cannot be followed, or would allocate absurdly."""
    if pp.interpolation not in INTERPOLATIONS:
        raise ModelError(f"unknown interpolation {shown(pp.interpolation)} in metadata")
    if pp.color_mode not in ("RGB", "L"):
        raise ModelError(f"unknown colour mode {shown(pp.color_mode)} in metadata")
    if pp.resize_mode not in RESIZE_MODES:
        raise ModelError(f"unknown resize mode {shown(pp.resize_mode)} (expected {', '.join(RESIZE_MODES)})")
    if pp.crop_rounding not in CROP_ROUNDINGS:
        raise ModelError(f"unknown crop rounding {shown(pp.crop_rounding)}")
    _flag(pp.invert, "invert")
    _whole(pp.crop_size, "crop size", 1, MAX_IMAGE_SIZE)
    _whole(pp.resize_size, "resize size", 1, MAX_IMAGE_SIZE)
    if len(pp.mean) != 3 or len(pp.std) != 3:
        raise ModelError("preprocessing mean and std need three values each (RGB)")
    for m in pp.mean:
        _between(m, "preprocessing mean", -MAX_NORMALISE, MAX_NORMALISE)
    for s in pp.std:
        _between(s, "preprocessing std", MIN_STD, MAX_NORMALISE)
    _between(pp.rescale, "rescale factor", 0.0, 1.0, open_low=True)


def cut_text(text: str, limit: int) -> str:
    """``text`` (a name or description read from a file) cut to ``limit`` characters, with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labels_from(values: object, what: str, *, unique: bool) -> tuple[str, ...]:
    """The labels ``values`` (read from ``what``) as a tuple, or ModelError naming the first bad one.

    ``unique``: no two alike (the project's own files; see the module's notes for foreign ones).
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ModelError(f"{what}: the labels are not a list")
    if len(values) > MAX_CLASSES:
        raise ModelError(f"{what}: {len(values):,} labels (at most {MAX_CLASSES:,} classes)")
    seen: dict[str, int] = {}
    for i, label in enumerate(values):
        if not isinstance(label, str):
            raise ModelError(f"{what}: label {i} is {shown(label)}, not a string")
        if len(label) > MAX_LABEL_LENGTH:
            raise ModelError(f"{what}: label {i} is {len(label):,} characters long (at most {MAX_LABEL_LENGTH:,})")
        if not label.strip():
            raise ModelError(f"{what}: label {i} is empty")
        if any(unicodedata.category(ch) == "Cc" for ch in label):
            raise ModelError(f"{what}: label {i} {shown(label)} contains a control character (a line break, a tab)")
        if unique and label in seen:
            raise ModelError(f"{what}: label {i} {shown(label)} repeats label {seen[label]}")
        seen.setdefault(label, i)
    return tuple(values)


def labels_by_id(mapping: Mapping[object, object], what: str) -> dict[int, object] | None:
    """``{"0": "cat", ...}`` (Hugging Face's ``id2label``, timm's label map) by integer id; None
    when an id is not a whole number. ModelError when there are more entries than classes can be."""
    if len(mapping) > MAX_CLASSES:
        raise ModelError(f"{what}: {len(mapping):,} labels (at most {MAX_CLASSES:,} classes)")
    try:
        return {int(k): v for k, v in mapping.items()}  # type: ignore[call-overload]  # JSON keys
    except (TypeError, ValueError, OverflowError):
        return None


def check_model(arch: Architecture, head: HeadSpec | None, pp: Preprocess, labels: Sequence[str]) -> None:
    """Everything a model file declared, before anything is built: ModelError with one line otherwise."""
    check_architecture(arch)
    check_head(head)
    check_preprocess(pp)
    if len(labels) != arch.num_classes:
        raise ModelError(f"{len(labels)} labels for a {arch.num_classes}-class head")
    if pp.crop_size != arch.image_size:
        raise ModelError(f"crop size {pp.crop_size} differs from the model's {arch.image_size}")


__all__ = [
    "MAX_CLASSES",
    "MAX_HEAD_DEPTH",
    "MAX_IMAGE_SIZE",
    "MAX_LABEL_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_LAYERS",
    "MAX_NAME_LENGTH",
    "MAX_NORMALISE",
    "MAX_PATCHES",
    "MAX_REGISTER_TOKENS",
    "MAX_CROP_PCT",
    "MAX_WIDTH",
    "MIN_CROP_PCT",
    "MIN_STD",
    "as_crop_pct",
    "as_float",
    "as_int",
    "as_size",
    "check_architecture",
    "check_head",
    "check_model",
    "check_preprocess",
    "cut_text",
    "labels_by_id",
    "labels_from",
]
