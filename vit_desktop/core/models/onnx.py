"""Models that leave the program: ONNX export, verified against the engine before it is kept.

The exported graph takes what the engine feeds its model, float32 ``(N, 3, H, W)`` normalised as
``(pixel * rescale - mean) / std`` after the model's resize and crop, with a dynamic batch, and
returns ``(N, classes)`` logits or probabilities, and ``known_score`` ``(N,)``: the score of the
model's open-set rule, which the metadata's ``open_set`` entry says how to read (a photo is none of
the model's classes, or the model is not sure of it, when ``known_score < threshold``). Labels,
preprocessing, architecture and that rule are in the file's metadata and in a JSON file beside it,
so another program can run it without this one.

After writing, the export runs in onnxruntime on sample photos and its top-5 and probabilities are
compared with the model's own fp32 forward; only an export that agrees is moved into place. The
exporter (``torch.onnx`` with ``onnxscript``), ``onnx`` and ``onnxruntime`` are the optional
``export`` extra: ``pip install 'vit-desktop[export]'``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vit_desktop.core.errors import CancelToken, ImageError, ModelError, VitDesktopError
from vit_desktop.core.files import atomic_paths, os_reason
from vit_desktop.core.io.images import load_image
from vit_desktop.core.types import ModelCard

from . import vit
from .open_set import KnownScore, model_rule
from .preprocess import normalized_tensor

#: The modules an export needs, and the extra that installs them.
EXPORT_MODULES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install 'vit-desktop[export]'"
OUTPUTS = ("logits", "probabilities")
#: The second output: the model's open-set score per input.
KNOWN_OUTPUT = "known_score"
#: An export whose probabilities differ from the model's by more than this is refused.
PROBABILITY_TOLERANCE = 1e-4

FORMAT = "vit-desktop-onnx/1"


class ExportError(VitDesktopError):
    """The export could not be made, or did not agree with the model (nothing was kept)."""


def missing_modules() -> list[str]:
    return [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class ExportReport:
    path: Path
    sidecar: Path
    #: Inputs checked: photos, and seeded noise pictures.
    photos: int
    noise: int
    #: Photos whose top-1 (and whose top-5, as a set) the export gives as the model does.
    top1_agree: int
    top5_agree: int
    max_probability_diff: float
    max_logit_diff: float
    seconds: float
    size_bytes: int

    def short(self) -> str:
        """For a status bar: "deit.onnx (23.4 MB): the model's top-1 on 8 of 8 inputs, ..."."""
        n = self.photos + self.noise
        return (f"{self.path.name} ({self.size_bytes / 1e6:.1f} MB): the model's top-1 on {self.top1_agree} of {n} "
                f"inputs in onnxruntime, probabilities within {self.max_probability_diff:.0e}")

    def summary(self) -> str:
        inputs = f"{self.noise} noise pictures"
        if self.photos:
            inputs = f"{self.photos} photos and {inputs}"
        return (f"{self.path} ({self.size_bytes / 1e6:.1f} MB, {self.seconds:.1f} s): checked in onnxruntime on "
                f"{inputs}: top-1 the same on {self.top1_agree}, top-5 on {self.top5_agree}, "
                f"probabilities within {self.max_probability_diff:.1e} (logits {self.max_logit_diff:.1e})")


class _Graph(nn.Module):
    """What is exported: the model's one forward, optionally with the softmax, and with ``known``
    the open-set score as a second output."""

    def __init__(self, module: vit.ViT, probabilities: bool, known: KnownScore | None = None) -> None:
        super().__init__()
        self.module = module
        self.probabilities = probabilities
        self.known = known

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled, logits = vit.forward_pooled(self.module, x)
        out = logits.softmax(dim=-1) if self.probabilities else logits
        if self.known is None:
            return out
        return out, self.known(pooled, logits)


def metadata(card: ModelCard, outputs: str) -> dict[str, str]:
    """The metadata written into the ONNX file and, as JSON, beside it."""
    pp = card.preprocess
    size = card.arch.image_size
    return {
        "format": FORMAT,
        "name": card.name,
        "description": card.description,
        "labels": json.dumps(list(card.labels), ensure_ascii=False),
        "preprocess": json.dumps(asdict(pp)),
        "architecture": json.dumps(asdict(card.arch)),
        "input": f"pixel_values: float32 (N, 3, {size}, {size}), (pixel * rescale - mean) / std after the resize "
                 f"and centre crop in 'preprocess' ({pp.describe()})",
        "output": f"{outputs}: float32 (N, {card.num_classes}); {KNOWN_OUTPUT}: float32 (N,), see 'open_set'",
        "open_set": json.dumps({**model_rule(card).to_json_dict(), "rule": f"uncertain when {KNOWN_OUTPUT} < threshold",
                                "means": model_rule(card).describe()}, ensure_ascii=False),
    }


def export_onnx(
    module: vit.ViT,
    card: ModelCard,
    dest: str | os.PathLike[str],
    *,
    outputs: str = "logits",
    photos: Sequence[str | os.PathLike[str] | Image.Image] = (),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    cancel: CancelToken | None = None,
) -> ExportReport:
    """Write ``module`` as ONNX to ``dest`` (and ``dest`` with ``.json``), verified on ``photos``.

    Raises ExportError (missing modules, an export that does not agree, a file that cannot be
    written) or FileExistsError; on every failure ``dest`` and its sidecar are as they were.
    """
    missing = missing_modules()
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {', '.join(OUTPUTS)}")
    dest = Path(dest)
    sidecar = dest.with_suffix(".json")
    for path in (dest, sidecar):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
    say = progress or (lambda _text: None)
    started = time.perf_counter()
    # A float32 CPU copy: what is exported does not depend on where or how the model runs here.
    copied = copy.deepcopy(module).float().cpu().eval()
    graph = _Graph(copied, outputs == "probabilities", KnownScore(copied, model_rule(card))).eval()
    size = card.arch.image_size
    inputs, n_photos = _sample_inputs(card, photos, say)
    # Both files are written in full before either is put in place, and then put in place together:
    # a kill or a failure never leaves a new model beside an old description (or the reverse).
    try:
        with atomic_paths(dest, sidecar, overwrite=overwrite) as (tmp, tmp_sidecar):
            say("exporting the graph")
            _export(graph, tmp, size, outputs)
            if cancel is not None:
                cancel.raise_if_cancelled()
            say("writing metadata")
            _add_metadata(tmp, metadata(card, outputs))
            say(f"checking it in onnxruntime on {len(inputs)} inputs")
            report = _verify(graph, tmp, inputs, outputs)
            result = ExportReport(dest, sidecar, n_photos, len(inputs) - n_photos, *report,
                                  seconds=time.perf_counter() - started, size_bytes=tmp.stat().st_size)
            tmp_sidecar.write_bytes(_sidecar_text(card, outputs, result).encode("utf-8"))
    except FileExistsError:
        raise
    except OSError as exc:
        raise ExportError(f"could not write {dest} and {sidecar.name}: {os_reason(exc)}; nothing kept") from None
    return result


def _sidecar_text(card: ModelCard, outputs: str, result: ExportReport) -> str:
    """The JSON beside the export: its metadata, readable, and how it was verified."""
    info = {key: (json.loads(value) if key in ("labels", "preprocess", "architecture", "open_set") else value)
            for key, value in metadata(card, outputs).items()}
    info["verification"] = {"photos": result.photos, "noise_pictures": result.noise, "top1_agree": result.top1_agree,
                            "top5_agree": result.top5_agree,
                            "max_probability_diff": result.max_probability_diff,
                            "max_logit_diff": result.max_logit_diff}
    return json.dumps(info, indent=2, ensure_ascii=False) + "\n"


def _sample_inputs(
    card: ModelCard, photos: Sequence[str | os.PathLike[str] | Image.Image], say: Callable[[str], None]
) -> tuple[torch.Tensor, int]:
    """(n, 3, h, w): the photos as the model sees them, plus seeded noise pictures (so that an
    export is checked on several inputs even with no photo at hand); and how many are photos.
    A photo that cannot be read is said and left out."""
    tensors = []
    for photo in photos:
        try:
            image = photo if isinstance(photo, Image.Image) else load_image(photo)
        except ImageError as exc:
            say(f"{photo}: not used: {exc}")
            continue
        tensors.append(normalized_tensor(image, card.preprocess))
    n_photos = len(tensors)
    rng = np.random.default_rng(0)
    size = card.arch.image_size
    for _ in range(max(2, 8 - n_photos)):
        noise = Image.fromarray(rng.integers(0, 256, (size + 17, size + 5, 3), dtype=np.uint8))
        tensors.append(normalized_tensor(noise, card.preprocess))
    return torch.stack(tensors), n_photos


def _export(graph: nn.Module, path: Path, size: int, outputs: str) -> None:
    # Batch 2: with a batch-1 example torch.export fixes the batch dimension to 1.
    example = torch.zeros(2, 3, size, size)
    names = [outputs] + ([KNOWN_OUTPUT] if getattr(graph, "known", None) is not None else [])
    try:
        torch.onnx.export(
            graph, (example,), str(path), dynamo=True, input_names=["pixel_values"], output_names=names,
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False, verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; all mean "could not export"
        from vit_desktop.core.errors import first_line

        raise ExportError(f"the exporter could not trace this model: {first_line(exc)}") from None


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = f"vit_desktop.{key}", value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _verify(graph: _Graph, path: Path, x: torch.Tensor, outputs: str) -> tuple[int, int, float, float]:
    """Run the export and the model on ``x``; ExportError beyond float noise."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Another batch size than the example's: the batch really is dynamic.
    runs = [session.run(None, {"pixel_values": x[i : i + 3].numpy()}) for i in range(0, len(x), 3)]
    got = np.concatenate([r[0] for r in runs])
    with torch.no_grad():
        pooled, logits = vit.forward_pooled(graph.module, x)
        ref_known = graph.known(pooled, logits).numpy() if graph.known is not None else None
    ref_p = logits.softmax(dim=-1).numpy()
    got_p = got if outputs == "probabilities" else torch.from_numpy(got).softmax(dim=-1).numpy()
    max_p = float(np.abs(got_p - ref_p).max())
    max_logit = float(np.abs(got - logits.numpy()).max()) if outputs == "logits" else max_p
    k = min(5, ref_p.shape[1])
    top1 = int((got_p.argmax(1) == ref_p.argmax(1)).sum())
    top5 = sum(set(np.argsort(-a)[:k]) == set(np.argsort(-b)[:k]) for a, b in zip(got_p, ref_p))
    if max_p > PROBABILITY_TOLERANCE or top1 != len(x):
        raise ExportError(f"the export disagrees with the model: top-1 the same on {top1} of {len(x)} inputs, "
                          f"probabilities differ by up to {max_p:.2e} (allowed {PROBABILITY_TOLERANCE:.0e}); not kept")
    if ref_known is not None:
        # The open-set score must agree as the probabilities do: it decides "none of these".
        if len(runs[0]) < 2:
            raise ExportError(f"the export has no {KNOWN_OUTPUT} output; not kept")
        known_diff = float(np.abs(np.concatenate([r[1] for r in runs]) - ref_known).max())
        if known_diff > PROBABILITY_TOLERANCE:
            raise ExportError(f"the export's {KNOWN_OUTPUT} differs from the model's by up to {known_diff:.2e}; "
                              "not kept")
    return top1, int(top5), max_p, max_logit


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``vit_desktop.*`` metadata of an exported file (keys without the prefix)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds; all mean "cannot read it"
        raise ModelError(f"{path}: not a readable ONNX file ({exc})") from None
    meta = session.get_modelmeta().custom_metadata_map
    return {k.removeprefix("vit_desktop."): v for k, v in meta.items() if k.startswith("vit_desktop.")}


__all__ = ["EXPORT_MODULES", "INSTALL_HINT", "KNOWN_OUTPUT", "OUTPUTS", "ExportError", "ExportReport", "export_onnx",
           "missing_modules", "read_onnx_metadata"]
