"""Typed access to what the window remembers between sessions.

Window geometry, device, precision, overlay and folders live in ``QSettings``; the model used last
lives in core's one store (:mod:`vit_desktop.core.state`), which the command line shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QByteArray, QSettings


def _to_float(value: object, default: float) -> float:
    """A finite number from what the settings file holds, else ``default`` (inf and nan too)."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _to_bool(value: object, default: bool) -> bool:
    # INI files give strings back: "true"/"false".
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if value is None:
        return default
    return bool(value)


@dataclass(frozen=True)
class OverlaySettings:
    opacity: float = 0.5
    colormap: str = "inferno"
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    overlay: bool = True
    #: The map shown: "class", "refined" or "rollout".
    map_method: str = "class"


class AppSettings:
    """Wraps a ``QSettings`` so that keys and types live in one place."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings if settings is not None else QSettings()

    # -- model ---------------------------------------------------------------------------------

    @property
    def last_model(self) -> str:
        from vit_desktop.core import state

        return state.last_model() or ""

    @last_model.setter
    def last_model(self, source: str) -> None:
        from vit_desktop.core import state

        state.set_last_model(source)

    #: How many models the Model menu's "Recently used" remembers.
    RECENT = 8

    @property
    def recent_models(self) -> list[str]:
        """Models opened lately, newest first (plain strings only; anything else is dropped)."""
        value = self.qsettings.value("model/recent", [])
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v for v in items if isinstance(v, str) and v][: self.RECENT]

    def add_recent_model(self, source: str) -> list[str]:
        recent = [source] + [s for s in self.recent_models if s != source]
        self.qsettings.setValue("model/recent", recent[: self.RECENT])
        return recent[: self.RECENT]

    @property
    def device(self) -> str:
        return str(self.qsettings.value("model/device", "auto") or "auto")

    @device.setter
    def device(self, key: str) -> None:
        self.qsettings.setValue("model/device", key)

    @property
    def precision(self) -> str:
        return str(self.qsettings.value("model/precision", "auto") or "auto")

    @precision.setter
    def precision(self, value: str) -> None:
        self.qsettings.setValue("model/precision", value)

    # -- overlay -------------------------------------------------------------------------------

    def overlay(self) -> OverlaySettings:
        s = self.qsettings
        d = OverlaySettings()
        return OverlaySettings(
            opacity=_to_float(s.value("overlay/opacity", d.opacity), d.opacity),
            colormap=str(s.value("overlay/colormap", d.colormap)),
            head_fusion=str(s.value("overlay/head_fusion", d.head_fusion)),
            discard_ratio=_to_float(s.value("overlay/discard_ratio", d.discard_ratio), d.discard_ratio),
            overlay=_to_bool(s.value("overlay/visible", d.overlay), d.overlay),
            map_method=str(s.value("overlay/map", d.map_method)),
        )

    def set_overlay(self, o: OverlaySettings) -> None:
        s = self.qsettings
        s.setValue("overlay/opacity", o.opacity)
        s.setValue("overlay/colormap", o.colormap)
        s.setValue("overlay/head_fusion", o.head_fusion)
        s.setValue("overlay/discard_ratio", o.discard_ratio)
        s.setValue("overlay/visible", o.overlay)
        s.setValue("overlay/map", o.map_method)

    # -- classification ------------------------------------------------------------------------

    @property
    def threshold(self) -> float | None:
        """The "uncertain below" score the user set, or None: each model's own rule (the default).

        A new key: the old ``classify/threshold`` held 0.5 for everyone, from before models
        carried rules of their own, and would override them all."""
        value = _to_float(self.qsettings.value("classify/uncertain_below", -1.0), -1.0)
        return value if 0.0 < value <= 1.0 else None

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self.qsettings.setValue("classify/uncertain_below", -1.0 if value is None else value)

    @property
    def overlay_caption(self) -> bool:
        """Overlay PNGs carry a caption strip saying which map of which class they show."""
        return _to_bool(self.qsettings.value("export/overlay_caption", False), False)

    @overlay_caption.setter
    def overlay_caption(self, on: bool) -> None:
        self.qsettings.setValue("export/overlay_caption", on)

    @property
    def class_maps_in_runs(self) -> bool:
        return _to_bool(self.qsettings.value("classify/class_maps_in_runs", False), False)

    @class_maps_in_runs.setter
    def class_maps_in_runs(self, on: bool) -> None:
        self.qsettings.setValue("classify/class_maps_in_runs", on)

    # -- fine-tuning ---------------------------------------------------------------------------

    def training(self) -> tuple[str, int]:
        """The fine-tune dialog's training mode and epochs (0: automatic)."""
        mode = str(self.qsettings.value("finetune/mode", "head") or "head")
        try:
            epochs = max(0, int(str(self.qsettings.value("finetune/epochs", 0))))
        except ValueError:
            epochs = 0
        return mode, epochs

    def set_training(self, mode: str, epochs: int) -> None:
        self.qsettings.setValue("finetune/mode", mode)
        self.qsettings.setValue("finetune/epochs", epochs)

    # -- window and folders --------------------------------------------------------------------

    def geometry(self) -> QByteArray | None:
        v = self.qsettings.value("window/geometry")
        return v if isinstance(v, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        v = self.qsettings.value("window/state")
        return v if isinstance(v, QByteArray) else None

    def splitter_state(self) -> QByteArray | None:
        v = self.qsettings.value("window/splitter")
        return v if isinstance(v, QByteArray) else None

    def save_window(self, geometry: QByteArray, state: QByteArray, splitter: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)
        self.qsettings.setValue("window/splitter", splitter)

    def folder(self, purpose: str) -> str:
        return str(self.qsettings.value(f"folders/{purpose}", "") or "")

    def set_folder(self, purpose: str, path: str) -> None:
        self.qsettings.setValue(f"folders/{purpose}", path)

    def sync(self) -> None:
        self.qsettings.sync()


__all__ = ["AppSettings", "OverlaySettings"]
