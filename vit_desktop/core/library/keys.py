"""What makes a stored row valid: stamps of photo files, keys of models, a fingerprint of the machine.

A photo's stamp is its size, modification time (ns) and a quick content hash (the first and last
64 KiB): an edit that keeps the size and the time (a coarse file system, a tool that restores the
time) still changes the hash. A model's keys hash its tensors, labels and preprocessing, and the
device type, precision and torch version that computed with it: the backbone key is what the
pooled features depend on (every tensor but the head's), the model key what the answers depend on.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import platform
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vit_desktop.core.types import Architecture, HeadSpec, ModelCard, OpenSetRule, Preprocess

if TYPE_CHECKING:  # keys of a loaded model need torch; stamps and cards do not
    from vit_desktop.core.models.vit import ViT

#: Bytes read from each end of a photo for its quick hash.
QUICK_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileStamp:
    """One photo file as it is now: stored rows are valid for it while every field matches."""

    path: str
    size: int
    mtime_ns: int
    quick: bytes

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileStamp | None:
        """The stamp of a regular file, or None when it cannot be read (the run reports it)."""
        text = os.fspath(path)
        try:
            st = os.stat(text)
            if not stat.S_ISREG(st.st_mode):
                return None
            return cls(text, st.st_size, st.st_mtime_ns, quick_hash(text, st.st_size))
        except OSError:
            return None


def quick_hash(path: str | os.PathLike[str], size: int) -> bytes:
    """16 bytes of BLAKE2b over the size and the first and last :data:`QUICK_BYTES` of the file."""
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(QUICK_BYTES))
        if size > 2 * QUICK_BYTES:
            f.seek(size - QUICK_BYTES)
            h.update(f.read(QUICK_BYTES))
        elif size > QUICK_BYTES:
            h.update(f.read())
    return h.digest()


def source_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a model file, or for a model folder (timm, Hugging Face) the total size
    and newest time of the files directly in it; None when it cannot be read."""
    try:
        st = path.stat()
        if stat.S_ISREG(st.st_mode):
            return st.st_size, st.st_mtime_ns
        if not stat.S_ISDIR(st.st_mode):
            return None
        size, newest = 0, st.st_mtime_ns
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file():
                    est = entry.stat()
                    size += est.st_size
                    newest = max(newest, est.st_mtime_ns)
        return size, newest
    except OSError:
        return None


@dataclass(frozen=True)
class ModelKeys:
    """The keys a model's stored rows are filed under (see the module's docstring)."""

    #: The answers: every tensor, the labels, the preprocessing, and how it computed.
    model: str
    #: The pooled features: every tensor but the head's, the preprocessing, and how it computed.
    backbone: str


def compute_key(device_type: str, precision: str) -> str:
    """How a model computed, as far as its numbers go: "cpu-bf16 torch 2.14.1"."""
    return f"{device_type}-{precision} torch {_torch_version()}"


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # a source build: torch knows its own version
        import torch

        return str(torch.__version__)


def tensor_keys(module: ViT, card: ModelCard) -> tuple[str, str]:
    """(all tensors, backbone tensors) hashes of a loaded model, with its labels and preprocessing.

    About 1 s per GB of weights, once per model file (the library remembers it by the file's stamp).
    """
    import torch

    whole = hashlib.blake2b(digest_size=16)
    backbone = hashlib.blake2b(digest_size=16)
    pre = json.dumps(asdict(card.preprocess), sort_keys=True).encode()
    backbone.update(pre)
    whole.update(pre)
    whole.update(json.dumps(list(card.labels), ensure_ascii=False).encode())
    for name, tensor in sorted(module.state_dict().items()):
        # The bytes as stored, whatever the device: a copy to the CPU where needed.
        data = tensor.detach().to("cpu").contiguous()
        header = f"{name} {data.dtype} {tuple(data.shape)}".encode()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        for h in (whole,) if name.startswith("heads.") else (whole, backbone):
            h.update(header)
            h.update(raw)
    return whole.hexdigest(), backbone.hexdigest()


def model_keys(tensors: tuple[str, str], compute: str) -> ModelKeys:
    return ModelKeys(model=f"{tensors[0]} {compute}", backbone=f"{tensors[1]} {compute}")


def machine_fingerprint() -> str:
    """What decides the device and precision "auto" picks here, hashed: the processor, its features,
    the GPUs the process can see, and torch's version. Read without importing torch."""
    parts = [platform.system(), platform.machine(), platform.processor(), _torch_version(),
             os.environ.get("CUDA_VISIBLE_DEVICES", "-")]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("model name", "flags", "Features", "CPU part")):
            parts.append(line.split(":", 1)[-1].strip())
            if line.startswith("flags"):
                break  # every core repeats them
    try:
        parts.append(",".join(sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*"))))
    except OSError:
        pass
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


# --------------------------------------------------------------------------------------------
# Model cards as JSON: the library answers for a model it knows without loading it.


def card_to_json(card: ModelCard) -> str:
    d = asdict(replace(card, open_set=None))
    rule = card.open_set
    if rule is not None:
        refs = rule.references
        # The training photos' features of a nearest-photo rule, as float32 bytes: exact, and compact.
        packed = None if refs is None else {
            "shape": list(refs.shape),
            "float32": base64.b64encode(np.ascontiguousarray(refs, np.float32).tobytes()).decode(),
        }
        d["open_set"] = {**rule.to_json_dict(), "references": packed}
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


def card_from_json(text: str) -> ModelCard:
    """The card :func:`card_to_json` wrote; ValueError (or KeyError, TypeError) when it is not one."""
    d = json.loads(text)
    pp = dict(d["preprocess"])
    pp["mean"], pp["std"] = tuple(pp["mean"]), tuple(pp["std"])
    return ModelCard(
        name=str(d["name"]), kind=str(d["kind"]), source=str(d["source"]), arch=Architecture(**d["arch"]),
        labels=tuple(str(label) for label in d["labels"]), preprocess=Preprocess(**pp),
        description=str(d["description"]), extra=tuple((str(k), str(v)) for k, v in d["extra"]),
        head=_head_from(d["head"]),
        open_set=_rule_from(d.get("open_set")),
    )


def _rule_from(d: dict[str, Any] | None) -> OpenSetRule | None:
    if d is None:
        return None
    refs = d.get("references")
    array = None
    if refs is not None:
        array = np.frombuffer(base64.b64decode(refs["float32"]), dtype=np.float32).reshape(refs["shape"]).copy()
    return OpenSetRule.from_json_dict(d, array)


def _head_from(d: dict[str, Any] | None) -> HeadSpec | None:
    if d is None:
        return None
    return HeadSpec(**{**d, "base": _head_from(d.get("base"))})


__all__ = [
    "FileStamp",
    "ModelKeys",
    "card_from_json",
    "card_to_json",
    "compute_key",
    "machine_fingerprint",
    "model_keys",
    "quick_hash",
    "source_stamp",
    "tensor_keys",
]
