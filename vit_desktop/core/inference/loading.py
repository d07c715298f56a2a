"""The model a run uses, loaded only when something has to be computed.

:func:`choose_model` asks the library first: a model file it has seen (same size and time) on a
machine it has seen (same processor, GPUs and torch) is known by its card and keys without reading
its weights or importing torch, so a run whose every photo is stored starts and ends in well under a
second. Otherwise the model is loaded, and the library remembers it for the next run.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.library.keys import ModelKeys, compute_key, machine_fingerprint, model_keys, source_stamp
from vit_desktop.core.library.store import KnownCompute, Library
from vit_desktop.core.types import ModelCard, ProgressCallback

if TYPE_CHECKING:  # the engine imports torch: a run answered from the library never does
    from .engine import Engine


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused, while torch is imported and a model built.

    They make some half a million objects that live as long as the process, and the collector
    walks all of them several times meanwhile: 0.13-0.16 s of a command's start on 2 cores, and
    400 photos classified 0.3 s sooner without it (the decoders that run during the load wait less
    for the GIL). Nothing is kept from collection afterwards.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class ModelChoice:
    """A model to run with: its card and keys now, its engine on first need."""

    def __init__(self, card: ModelCard, keys: ModelKeys | None, compute: KnownCompute,
                 load: Callable[[], Engine], engine: Engine | None = None, source_path: Path | None = None) -> None:
        self.card = card
        #: The file or folder the weights are in (a registry model's cached file); None in memory.
        self.source_path = source_path if engine is None else engine.source_path
        #: Where the library files this model's rows; None when no library is used.
        self.keys = keys
        self.device_name = compute.device_name
        self.precision = compute.precision
        self.precision_why = compute.why
        self._load = load
        self._engine = engine

    @classmethod
    def of(cls, engine: Engine, *, keys: bool = True) -> ModelChoice:
        """An engine already loaded (the window's)."""
        compute = KnownCompute(engine.device.type, engine.device_name, engine.precision, engine.precision_why)
        return cls(engine.card, engine.keys if keys else None, compute, lambda: engine, engine)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def model_id(self) -> str:
        """What results carry to say which model made them (the engine's own id once loaded)."""
        return self._engine.model_id if self._engine is not None else self.card.name

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._load()
        return self._engine


def choose_model(
    source: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    library: Library | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ModelChoice:
    """``source`` (a registry name, a saved model's name, a file or folder) as a :class:`ModelChoice`.

    Raises what :meth:`Engine.load` raises, when the model has to be loaded.
    """
    request = f"{device}|{precision}"

    def load() -> Engine:
        with collector_paused():
            from .engine import Engine

            return Engine.load(source, device=device, precision=precision, progress=progress, cancel=cancel)

    if library is not None:
        known = _known(library, source, request)
        if known is not None:
            card, tensors, compute, path = known
            return ModelChoice(card, model_keys(tensors, compute_key(compute.device_type, compute.precision)),
                               compute, load, source_path=path)
    engine = load()
    if library is None:
        return ModelChoice.of(engine, keys=False)
    remember_model(library, source, engine, device=device, precision=precision)
    return ModelChoice.of(engine)


def is_known(library: Library, source: str, *, device: str = "auto", precision: str = "auto") -> bool:
    """Whether ``source`` is a model the library can answer for without loading it, on this machine."""
    return _known(library, source, f"{device}|{precision}") is not None


def _known(library: Library, source: str,
           request: str) -> tuple[ModelCard, tuple[str, str], KnownCompute, Path] | None:
    path = Path(source).expanduser()
    if not path.exists():
        aliased = library.alias(source)
        if aliased is None:
            return None
        path = aliased
    stamp = source_stamp(path.resolve())
    if stamp is None:
        return None
    model = library.known_model(path.resolve(), stamp)
    compute = library.known_compute(request, machine_fingerprint()) if model is not None else None
    if model is None or compute is None:
        return None
    return model.card, model.tensors, compute, path.resolve()


def remember_model(library: Library, source: str, engine: Engine, *, device: str, precision: str) -> None:
    """What the next run needs to know this model and this machine without loading anything;
    the engine's tensor hashes are taken from the library when it knows the file already."""
    library.remember_compute(f"{device}|{precision}", machine_fingerprint(),
                             KnownCompute(engine.device.type, engine.device_name, engine.precision,
                                          engine.precision_why))
    path = engine.source_path
    if path is None:
        return
    stamp = source_stamp(path)
    if stamp is None:
        return
    known = library.known_model(path, stamp)
    if known is not None and known.card == engine.card:
        engine.tensors = known.tensors  # the file has not changed: no need to hash it again
    else:
        library.remember_model(path, stamp, engine.card, engine.tensors)
    if not Path(source).expanduser().exists():  # a name: the file it stood for
        library.set_alias(source, path)


__all__ = ["ModelChoice", "choose_model", "collector_paused", "is_known", "remember_model"]
