"""The models a user can pick: torchvision's ViT family, models shipped in ``models/``, their own.

Registry models use torchvision's official ImageNet-1k weights. They live in torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``) under torchvision's own file names, so a file fetched by any
torchvision script on the machine is reused, and a file fetched here is what torchvision expects.
A cached file is trusted by its name and size, as ``torch.hub`` does: hashing 330 MB to 2.4 GB on
every start would cost seconds; the hash is checked once, right after the download.

Weights choice per model: ``IMAGENET1K_V1`` (the original ViT recipe trained by torchvision) where
it exists, because its 224 px input keeps rollout grids and CPU times modest. ``vit_h_14`` has
no such weights; it uses ``IMAGENET1K_SWAG_E2E_V1``, fine-tuned end to end at 518 px (bicubic
resize to 518, no extra crop margin), which is torchvision's default for that model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from vit_desktop.core.errors import CancelToken, DownloadError, ModelError
from vit_desktop.core.labels.imagenet import imagenet_classes
from vit_desktop.core.paths import bundled_models_dir, hub_checkpoints_dir, user_models_dir
from vit_desktop.core.types import Architecture, ModelCard, Preprocess, ProgressCallback
from vit_desktop.core.units import format_bytes

from .download import download_file
from .limits import as_size, check_preprocess
from .model_file import META_DESCRIPTION, META_LABELS, META_NAME, META_PREFIX, preprocess_from_json
from .vit import ViT

#: Points registry downloads at a mirror (a folder served over HTTP holding torchvision's files).
BASE_URL_ENV = "VIT_DESKTOP_WEIGHTS_BASE_URL"


# torchvision's weight files end in "-<first hex digits of the file's SHA-256>.pth".
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.[a-z]+$")

#: torchvision's ViT family and its weights, written by resources/make_registry.py: reading it
#: costs a millisecond, importing torchvision.models 1.7 s.
_TABLE: dict[str, Any] = json.loads((Path(__file__).with_name("registry.json")).read_text(encoding="utf-8"))


def _title(name: str, weights: str, num_params: int) -> str:
    """``vit_b_16`` -> ``ViT-B/16 (ImageNet-1k, 86 M params)``."""
    _, size, patch = name.split("_")
    data = "ImageNet-1k" if weights == "IMAGENET1K_V1" else "ImageNet-1k, SWAG"
    params = num_params // 1_000_000  # 86.6 M is "86 M", as papers say
    return f"ViT-{size.upper()}/{patch} ({data}, {params} M params)"


def sha256_prefix_of(filename: str) -> str:
    """The hash prefix torchvision puts in a weights file name; ModelError if there is none."""
    match = _HASH_IN_NAME.search(filename)
    if match is None:
        raise ModelError(f"{filename}: no hash in the file name")
    return match.group(1)


@dataclass(frozen=True)
class RegistryEntry:
    """One torchvision ViT with its official weights."""

    name: str
    title: str
    url: str
    filename: str
    sha256_prefix: str
    #: Approximate download size (torchvision records it in MiB to three decimals).
    size_bytes: int
    #: ImageNet-1k top-1 accuracy in percent, as torchvision reports it.
    acc1: float
    #: torchvision's name of the weights ("IMAGENET1K_V1").
    weights: str
    arch: Architecture
    preprocess: Preprocess

    @property
    def image_size(self) -> int:
        """Input side the weights were trained at (224, or 518 for the SWAG ViT-H/14)."""
        return self.arch.image_size

    @cached_property
    def labels(self) -> tuple[str, ...]:
        return imagenet_classes()


def _entry(name: str, row: dict[str, Any]) -> RegistryEntry:
    filename = row["url"].rsplit("/", 1)[-1]
    pp = row["preprocess"]
    return RegistryEntry(
        name=name,
        title=_title(name, row["weights"], row["num_params"]),
        url=row["url"],
        filename=filename,
        sha256_prefix=sha256_prefix_of(filename),
        size_bytes=int(row["size_bytes"]),
        acc1=float(row["acc1"]),
        weights=row["weights"],
        arch=Architecture(**row["arch"]),
        preprocess=Preprocess(crop_size=int(pp["crop_size"]), resize_size=int(pp["resize_size"]),
                              interpolation=str(pp["interpolation"]), mean=tuple(pp["mean"]), std=tuple(pp["std"])),
    )


REGISTRY: dict[str, RegistryEntry] = {name: _entry(name, row) for name, row in _TABLE["models"].items()}


def _build(entry: RegistryEntry) -> ViT:
    return ViT(entry.arch)


def get_entry(name: str) -> RegistryEntry:
    """The registry entry for ``name``; ModelError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise ModelError(f"unknown model {name!r}; registry models are {known}") from None


def weights_path(name: str) -> Path:
    """Where torchvision keeps (or would keep) the weights of ``name``."""
    return hub_checkpoints_dir() / get_entry(name).filename


def is_cached(name: str) -> bool:
    """True when the weights file is present and not empty; nothing is read or hashed."""
    try:
        return weights_path(name).stat().st_size > 0
    except OSError:
        return False


def ensure_weights(
    name: str,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    base_url: str | None = None,
) -> Path:
    """The cached weights of ``name``, downloading them first if they are not there.

    A cached file is returned with no network access at all. Otherwise the file is fetched from
    ``base_url`` (or ``$VIT_DESKTOP_WEIGHTS_BASE_URL``, or torchvision's server), hash-checked and
    moved into place atomically.

    Raises:
        ModelError: unknown name.
        DownloadError: not cached and the download failed; the message says which file to put
            where to work offline.
        Cancelled: the download was cancelled; nothing is left behind.
    """
    entry = get_entry(name)
    path = weights_path(name)
    if is_cached(name):
        return path
    base = base_url or os.environ.get(BASE_URL_ENV)
    url = f"{base.rstrip('/')}/{entry.filename}" if base else entry.url
    try:
        return download_file(url, path, sha256_prefix=entry.sha256_prefix, progress=progress,
                             cancel=cancel)
    except DownloadError as error:
        raise DownloadError(
            f"{name}: weights not cached and the download failed ({error}). "
            f"Put {entry.filename} into {path.parent} and try again."
        ) from None


def _load_failure_reason(error: BaseException) -> str:
    """One short line from torch.load's error.

    With weights_only=True torch wraps every refusal in a paragraph advising weights_only=False,
    which is exactly the wrong advice for a file from the internet; keep only the actual cause.
    """
    text = str(error)
    if text.startswith("Weights only load failed"):
        # The real cause is the chained unpickler error ("Unsupported operand 103",
        # "Unsupported global: GLOBAL print ..."); keep its first sentence.
        inner = str(error.__context__ or "").strip()
        if not inner:
            match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
            inner = match.group(1) if match else ""
        first = inner.split(". ")[0].strip() or "unsupported content"
        reason = f"not plain tensor data: {first}"
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        reason = lines[0].split(". ")[0].strip() if lines else type(error).__name__
    reason = reason.rstrip(".")
    return reason if len(reason) <= 160 else reason[:157] + "..."


def load_registry_model(
    name: str,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[ViT, ModelCard]:
    """torchvision's ``name`` with its ImageNet weights (downloaded on first use), as a :class:`ViT`.

    ``progress`` reports download bytes; a cached model loads with no network access.

    Raises:
        ModelError: unknown name, or a cached file that is not the model's weights.
        DownloadError, Cancelled: as :func:`ensure_weights`.
    """
    entry = get_entry(name)
    path = ensure_weights(name, progress=progress, cancel=cancel)
    advice = "delete it so that it is downloaded again"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged zip/pickle stream
        size = path.stat().st_size if path.exists() else 0
        reason = _load_failure_reason(error)
        raise ModelError(
            f"{path}: cannot read the {name} weights ({format_bytes(size)}, expected about "
            f"{format_bytes(entry.size_bytes)}; {reason}); {advice}"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict of {name}; {advice}")
    # Built on the meta device and filled with assign=True: no random initialisation of 86-632 M
    # parameters only to overwrite them, and no second copy of the weights in memory.
    with torch.device("meta"):
        module = _build(entry)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[:2]
        raise ModelError(f"{path}: does not match {name} ({' '.join(first)}); {advice}") from None
    module.eval()
    card = ModelCard(
        name=name,
        kind="registry",
        source=name,
        arch=entry.arch,
        labels=entry.labels,
        preprocess=entry.preprocess,
        description=f"{entry.title}, torchvision {entry.name} {entry.weights}, ImageNet-1k top-1 {entry.acc1:.1f} %",
        extra=(
            ("weights", f"{entry.name} {entry.weights}"),
            ("url", entry.url),
            ("acc@1", f"{entry.acc1}"),
        ),
    )
    return module, card


@dataclass(frozen=True)
class ModelInfo:
    """One row of the model list (GUI picker, ``vit-desktop models``)."""

    name: str
    title: str
    #: "registry", "bundled" (ships in ``models/``) or "user" (trained or imported by the user).
    kind: str
    #: What to pass to ``Engine.load``: the registry name or the file path.
    source: str
    #: Registry: weights present locally. Files: always True.
    cached: bool
    #: On-disk size when present, else the approximate download size.
    size_bytes: int
    description: str
    #: False for a file whose header cannot be read (its description says why).
    readable: bool = True
    #: What the model is fed: "224 px: resize 256 (shorter side), crop 224, bilinear"; "" if unknown.
    input: str = ""


def _registry_info(entry: RegistryEntry) -> ModelInfo:
    path = hub_checkpoints_dir() / entry.filename
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return ModelInfo(
        name=entry.name,
        title=entry.title,
        kind="registry",
        source=entry.name,
        cached=size > 0,
        size_bytes=size if size > 0 else entry.size_bytes,
        description=(
            f"ImageNet-1k top-1 {entry.acc1:.1f} %, {entry.image_size} px, "
            f"torchvision {entry.weights}"
        ),
        input=input_summary(entry.image_size, entry.preprocess),
    )


def input_summary(image_size: int, pp: Preprocess) -> str:
    """"224 px: resize 256 (shorter side), crop 224, bilinear": what a model is fed."""
    return f"{image_size} px: {pp.describe()}"


#: Longest name or description a file's metadata shows in a menu or a table cell.
_SHOWN_TEXT = 120


def _one_line(text: str) -> str:
    """Metadata text for a menu or a table cell: one line, cut to :data:`_SHOWN_TEXT` characters."""
    line = " ".join(text.split())
    return line if len(line) <= _SHOWN_TEXT else line[: _SHOWN_TEXT - 1] + "…"


def _file_input(meta: dict[str, str]) -> str:
    """What a project file's model is fed; "" when its metadata cannot say (it is refused on loading)."""
    try:
        arch = json.loads(meta[META_PREFIX + "arch"])
        pp = preprocess_from_json(meta[META_PREFIX + "preprocess"])
        check_preprocess(pp)
        return input_summary(as_size(arch["image_size"], "image_size"), pp)
    except (ModelError, KeyError, ValueError, TypeError, RecursionError):  # RecursionError: JSON nested deep
        return ""


def _file_info(path: Path, kind: str) -> ModelInfo:
    """The row for a model file.

    Reads only the safetensors header (a few KB), never the tensors.
    """
    from safetensors import safe_open  # imported here: the registry itself does not need it

    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        return ModelInfo(path.stem, path.stem, kind, str(path), True, size,
                         f"unreadable: {reason}", readable=False)
    # One short line each: they end up in menus and table cells.
    name = _one_line(meta.get(META_NAME, "")) or path.stem
    description = meta.get(META_DESCRIPTION, "") or _labels_summary(meta.get(META_LABELS))
    return ModelInfo(
        name=name,
        title=name,
        kind=kind,
        source=str(path),
        cached=True,
        size_bytes=size,
        description=_one_line(description),
        input=_file_input(meta),
    )


def _labels_summary(labels_json: str | None) -> str:
    """``3 classes: cat, dog, fox`` from the project's JSON label list; "" when absent or bad."""
    if not labels_json:
        return ""
    try:
        labels = json.loads(labels_json)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(labels, list) or not labels:
        return ""
    shown = ", ".join(_one_line(str(label))[:40] for label in labels[:4])
    more = ", ..." if len(labels) > 4 else ""
    return f"{len(labels)} classes: {shown}{more}"


def _safetensors_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    except OSError:
        return []


def list_models() -> list[ModelInfo]:
    """Registry models (cached or not), then bundled models, then the user's models.

    Fast enough to call when a menu opens: file headers only, no tensors, no network.
    """
    infos = [_registry_info(entry) for entry in REGISTRY.values()]
    infos += [_file_info(p, "bundled") for p in _safetensors_in(bundled_models_dir())]
    infos += [_file_info(p, "user") for p in _safetensors_in(user_models_dir(create=False))]
    return infos


def find_model_file(name: str) -> Path | None:
    """The file of the user's or a bundled model called ``name`` (its saved name or file stem).

    Lets ``--model cats`` stand for a model the user saved as "cats". The user's own models win
    over bundled ones of the same name; unreadable files are never chosen.
    """
    files = [(p, "user") for p in _safetensors_in(user_models_dir(create=False))]
    files += [(p, "bundled") for p in _safetensors_in(bundled_models_dir())]
    for path, kind in files:
        info = _file_info(path, kind)
        if info.readable and name in (info.name, path.stem):
            return path
    return None


def default_model() -> tuple[str, str] | None:
    """(source, why) of the model to use when none is named, or None when there is none.

    The one rule for the window and the command line: the model used last (here or there) if it
    still loads offline, else a cached ImageNet model, else the bundled demo model. When the model
    used last was passed over, ``why`` says so first (:func:`last_model_problem`).
    """
    from vit_desktop.core import state

    last = state.last_model()
    problem = last_model_problem()
    if last and problem is None:
        return last, "the model used last"
    passed = f"{problem}; so " if problem else ""
    infos = list_models()
    for info in infos:
        if info.kind == "registry" and info.cached:
            return info.source, f"{passed}a cached ImageNet model"
    for info in infos:
        if info.kind == "bundled" and info.readable:
            return info.source, f"{passed}the bundled demo model"
    return None


def last_model_problem() -> str | None:
    """Why the model used last cannot be used now ("the last model, cats.safetensors, is no longer there"),
    or None when it can (or none was used)."""
    from vit_desktop.core import state

    last = state.last_model()
    if not last:
        return None
    if last in REGISTRY:
        return None if is_cached(last) else f"the last model, {last}, is not downloaded (offline it cannot be)"
    if Path(last).is_file() or Path(last).is_dir():
        return None
    return f"the last model, {last}, is no longer there"


def format_models_table(infos: Iterable[ModelInfo]) -> str:
    """A plain-text table for ``vit-desktop models``: name, kind, status, size, input, description."""
    header = ("NAME", "KIND", "STATUS", "SIZE", "INPUT", "DESCRIPTION")
    rows = [header]
    for info in infos:
        if info.kind == "registry":
            status = "cached" if info.cached else "download"
        else:
            status = "file"
        rows.append((info.name, info.kind, status, format_bytes(info.size_bytes), info.input or "-",
                     info.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


__all__ = [
    "BASE_URL_ENV",
    "REGISTRY",
    "default_model",
    "ModelInfo",
    "RegistryEntry",
    "ensure_weights",
    "find_model_file",
    "format_models_table",
    "get_entry",
    "is_cached",
    "list_models",
    "load_registry_model",
    "sha256_prefix_of",
    "weights_path",
]
