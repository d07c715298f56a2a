"""Typed access to what the window remembers between sessions.

Window geometry, device, precision, overlay and folders live in ``QSettings``; the model used last
lives in core's one store (:mod:`vit_desktop.core.state`), which the command line shares.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

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


# -- values that are objects -------------------------------------------------------------------
#
# Qt reads an INI value written as "@Variant(...)" by deserialising whatever type it names, and
# PySide registers one that unpickles (PySide::PyObjectWrapper): a settings file could run code as
# the window reads it, or when saving the settings makes Qt parse every section. Reading with a
# type (value(key, default, type=str)) does not help: the object is made first. The window writes
# only plain values (text, numbers, true/false, @ByteArray for its geometry), so every line that
# could hold a variant is removed from the file before Qt parses a value of it.

#: Escapes of Qt's INI values that stand for one character.
_INI_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"',
                "?": "?", "'": "'", "\\": "\\"}


def _ini_text(line: str) -> str | None:
    """``line`` of an INI file as Qt's reader decodes it (escapes decoded, quotes dropped), or None
    when it holds what this reader does not follow (an unknown escape, a value continued on the next
    line): such a line is not kept either."""
    out: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        i += 1
        if ch == '"':
            continue
        if ch != "\\":
            out.append(ch)
            continue
        if i == len(line):
            return None
        ch = line[i]
        i += 1
        if ch in _INI_ESCAPES:
            out.append(_INI_ESCAPES[ch])
            continue
        digits, base = ("0123456789abcdefABCDEF", 16) if ch == "x" else ("01234567", 8)
        if ch != "x":
            if ch not in digits:
                return None
            i -= 1
        start = i
        while i < len(line) and line[i] in digits:
            i += 1
        code = int(line[start:i] or "0", base)
        if code > sys.maxunicode:
            return None
        out.append(chr(code))
    return "".join(out)


def unsafe_settings_lines(data: bytes) -> list[int]:
    """The indexes of the lines of an INI settings file that could hold a value Qt would make an
    object of (``@Variant(...)``, written plainly, escaped or quoted)."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    unsafe = []
    for i, line in enumerate(lines):
        text = _ini_text(line.rstrip("\r"))
        if text is None or "@variant(" in text.casefold():
            unsafe.append(i)
    return unsafe


def _stand_in(name: str) -> QSettings:
    """Settings in a new temporary folder (removed at exit), for a file the window must not use."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="vit-desktop-settings-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return QSettings(str(Path(folder) / name), QSettings.Format.IniFormat)


def _usable(settings: QSettings) -> tuple[QSettings, str | None]:
    """``settings`` ready to read, and a note when something had to be set right first.

    The lines :func:`unsafe_settings_lines` finds are removed from its INI file (and the file read
    again); a file that cannot be cleaned is not read at all, and one under a home folder that does
    not exist is not written (Qt would create the home folder): settings in a temporary file stand
    in for both. Registry and property-list stores (Windows, macOS) are not files this can read.
    """
    from vit_desktop.core.files import atomic_write_bytes
    from vit_desktop.core.paths import display_path

    fmt = settings.format()
    if fmt != QSettings.Format.IniFormat and (fmt != QSettings.Format.NativeFormat or sys.platform in ("win32",
                                                                                                        "darwin")):
        return settings, None
    path = Path(settings.fileName())
    try:
        home: Path | None = Path.home()
    except RuntimeError:  # no HOME and no password entry
        home = None
    if home is not None and home in path.parents and not home.is_dir():
        return _stand_in(path.name), (f"the home folder {display_path(home)} does not exist: the window's settings "
                                      "are not kept")
    try:
        data = path.read_bytes()
    except OSError:
        return settings, None
    unsafe = set(unsafe_settings_lines(data))
    if not unsafe:
        return settings, None
    kept = b"\n".join(line for i, line in enumerate(data.split(b"\n")) if i not in unsafe)
    n = len(unsafe)
    what = f"{n} setting{'s' if n != 1 else ''} that {'were' if n != 1 else 'was'} not a plain value"
    try:
        atomic_write_bytes(path, kept, overwrite=True)
    except OSError as exc:
        return _stand_in(path.name), (f"{display_path(path)} holds {what} (Qt would have made a program object of "
                                      f"it) and cannot be cleaned ({(exc.strerror or str(exc)).lower()}): the "
                                      "window uses its default settings")
    settings.sync()  # read the cleaned file: no value was read from it yet
    return settings, (f"{display_path(path)}: {what} (Qt would have made a program object of it) was removed; "
                      "the defaults apply")


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
        #: What was wrong with the settings file and has been set right, for the window to say.
        self.problem: str | None
        self.qsettings, self.problem = _usable(settings if settings is not None else QSettings())

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
