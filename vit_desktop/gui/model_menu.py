"""The Model menu: models to pick (registry, bundled, the user's), device and precision.

It shows what it is told (:meth:`ModelMenu.set_models`, :meth:`ModelMenu.set_current`) and says
what the user chose through signals; it never loads anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from vit_desktop.core.types import DeviceInfo
from vit_desktop.core.units import format_bytes
from vit_desktop.gui.plain_text import as_plain

if TYPE_CHECKING:  # the registry imports torch: the window must not wait for that at start-up
    from vit_desktop.core.models.registry import ModelInfo

PRECISIONS: tuple[tuple[str, str], ...] = (
    ("auto", "Automatic (half on GPUs; on the CPU bf16 where native, else fp32)"),
    ("fp32", "fp32"),
    ("fp16", "fp16 (GPU only)"),
    ("bf16", "bf16"),
    ("int8", "int8 (CPU only: faster where bf16 is not native, 1-2 points less accurate)"),
)

GROUPS: tuple[tuple[str, str], ...] = (
    ("registry", "torchvision ViT (ImageNet-1k)"),
    ("bundled", "Bundled models"),
    ("user", "Your models"),
)

_FALLBACK_DEVICES = (DeviceInfo("auto", "Automatic (best available)"), DeviceInfo("cpu", "CPU"))


def model_text(info: ModelInfo) -> str:
    """A menu entry: title, and for registry models whether they are cached or how big a download."""
    size = format_bytes(info.size_bytes)
    if info.kind == "registry":
        state = f"cached, {size}" if info.cached else f"download {size}"
        return f"{info.title}  ({state})"
    return f"{info.title}  ({size})"


class ModelMenu(QObject):
    """Owns the Model menu's contents; ``trailing`` actions (open a file, refresh) go at its end."""

    model_chosen = Signal(str)  # a source for Engine.load
    device_chosen = Signal(str)
    precision_chosen = Signal(str)

    def __init__(self, menu: QMenu, open_weights: QAction, refresh: QAction, parent: QWidget,
                 open_folder: QAction | None = None) -> None:
        super().__init__(parent)
        self.menu = menu
        self._open_weights = open_weights
        self._open_folder = open_folder
        self._refresh = refresh
        #: Models opened lately (files and folders too), newest first.
        self.recent: list[str] = []
        self.infos: list[ModelInfo] = []
        self.devices: list[DeviceInfo] = []
        self._current = ""
        self._device = "auto"
        self._precision = "auto"
        self.device_menu = QMenu("&Device", parent)
        self.precision_menu = QMenu("&Precision", parent)
        self.device_group = QActionGroup(self)
        self.precision_group = QActionGroup(self)
        for key, title in PRECISIONS:
            a = QAction(title, self)
            a.setCheckable(True)
            a.setData(key)
            self.precision_group.addAction(a)
            self.precision_menu.addAction(a)
        self.precision_group.triggered.connect(self._on_precision)
        self.device_group.triggered.connect(self._on_device)
        menu.aboutToShow.connect(self.rebuild)
        self.rebuild()

    def set_models(self, infos: Sequence[ModelInfo], devices: Sequence[DeviceInfo]) -> None:
        self.infos = list(infos)
        self.devices = list(devices)
        self.rebuild()

    def set_recent(self, sources: Sequence[str]) -> None:
        self.recent = list(sources)
        self.rebuild()

    def set_current(self, source: str, device: str, precision: str) -> None:
        self._current, self._device, self._precision = source, device, precision
        for a in self.precision_group.actions():
            a.setChecked(a.data() == precision)
        for a in self.device_group.actions():
            a.setChecked(a.data() == device)
        for a in self.menu.actions():
            if a.isCheckable() and a.data():
                a.setChecked(a.data() == source)

    @Slot()
    def rebuild(self) -> None:
        m = self.menu
        m.clear()
        if not self.infos:
            waiting = m.addAction("Looking for models…")
            waiting.setEnabled(False)
        for kind, title in GROUPS:
            infos = [i for i in self.infos if i.kind == kind]
            if not infos:
                continue
            m.addSection(title)
            for info in infos:
                a = m.addAction(model_text(info))
                a.setCheckable(True)
                a.setChecked(info.source == self._current)
                a.setData(info.source)
                a.setToolTip(as_plain(f"{info.description}\nInput {info.input}" if info.input else info.description))
                a.triggered.connect(self._on_model)
        listed = {i.source for i in self.infos}
        recent = [s for s in self.recent if s not in listed]
        if recent:  # files and folders opened lately: the lists above only hold the models folders
            m.addSection("Recently used")
            for source in recent:
                a = m.addAction(Path(source).name or source)
                a.setCheckable(True)
                a.setChecked(source == self._current)
                a.setData(source)
                a.setToolTip(source)
                a.triggered.connect(self._on_model)
        m.addSeparator()
        m.addAction(self._open_weights)
        if self._open_folder is not None:
            m.addAction(self._open_folder)
        m.addSeparator()
        self.device_menu.clear()
        for a in self.device_group.actions():
            self.device_group.removeAction(a)
        for d in self.devices or _FALLBACK_DEVICES:
            a = QAction(d.name if d.key in ("auto", "cpu") else f"{d.name} ({d.key})", self)
            a.setCheckable(True)
            a.setData(d.key)
            a.setChecked(d.key == self._device)
            self.device_group.addAction(a)
            self.device_menu.addAction(a)
        m.addMenu(self.device_menu)
        m.addMenu(self.precision_menu)
        m.addSeparator()
        m.addAction(self._refresh)

    @Slot()
    def _on_model(self) -> None:
        act = self.sender()
        if isinstance(act, QAction) and act.data():
            self.model_chosen.emit(str(act.data()))

    @Slot(QAction)
    def _on_device(self, act: QAction) -> None:
        self.device_chosen.emit(str(act.data()))

    @Slot(QAction)
    def _on_precision(self, act: QAction) -> None:
        self.precision_chosen.emit(str(act.data()))


__all__ = ["PRECISIONS", "ModelMenu", "model_text"]
