"""The main window: gallery on the left, the selected image and its heatmap on the right.

The window never computes: it turns user actions into controller requests and paints what comes
back. It is usable as soon as it is shown; the model loads on the compute thread meanwhile, and
images dropped before a model is ready wait in a queue.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QMimeData, QModelIndex, QPoint, QSettings, Qt, QThreadPool, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDragMoveEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.types import ClassifyResult, DeviceInfo
from vit_desktop.gui.background import Job
from vit_desktop.gui.controller import Controller, LoadedModel
from vit_desktop.gui.detail_panel import DetailPanel
from vit_desktop.gui.gallery import GalleryView
from vit_desktop.gui.results_model import FILTER_TITLES, SORT_KEYS, FilterMode, ResultsFilter, ResultsModel, Roles
from vit_desktop.gui.settings import AppSettings, OverlaySettings
from vit_desktop.gui.thumbnails import ImageLoader

log = logging.getLogger(__name__)

PRECISIONS: tuple[tuple[str, str], ...] = (
    ("auto", "Automatic (half on GPUs, fp32 on CPU)"),
    ("fp32", "fp32"),
    ("fp16", "fp16 (GPU only)"),
    ("bf16", "bf16"),
)

WEIGHT_FILTER = "Model weights (*.safetensors *.pth *.pt *.bin *.ckpt);;All files (*)"
IMAGE_FILTER = (
    "Images (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm *.heic);;All files (*)"
)
NO_MODEL_TEXT = "No model loaded — choose one from Model menu"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def paths_from_mime(mime: QMimeData) -> list[str]:
    """Local files and folders named by dropped/pasted URLs, or by lines of plain text."""
    paths: list[str] = []
    if mime.hasUrls():
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]
    if not paths and mime.hasText():
        for line in mime.text().splitlines():
            line = line.strip().strip('"')
            if not line:
                continue
            if line.startswith("file:"):
                line = QUrl(line).toLocalFile()
            if line and os.path.exists(line):
                paths.append(line)
    return paths


class MessageBar(QFrame):
    """A dismissable strip above the gallery for errors and hints, each saying what to do."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton(self)
        self.action_button.hide()
        close = QToolButton(self)
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(close)
        self._action: QAction | None = None
        self.action_button.clicked.connect(self._on_action)
        self.hide()

    def show_message(self, text: str, kind: str = "error", action: QAction | None = None) -> None:
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self._action = action
        if action is not None:
            self.action_button.setText(action.text().replace("&", "").rstrip("…."))
            self.action_button.show()
        else:
            self.action_button.hide()
        self.show()

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    @Slot()
    def _on_action(self) -> None:
        if self._action is not None:
            self._action.trigger()


class MainWindow(QMainWindow):
    """The application window. ``settings`` may be injected (tests use a temporary INI file)."""

    #: A background save or copy ended: the overlay's path, the number of files copied, or why not.
    overlay_saved = Signal(str)
    files_copied = Signal(int)
    job_failed = Signal(str)

    def __init__(self, settings: QSettings | None = None, controller: Controller | None = None) -> None:
        super().__init__()
        self.setWindowTitle("vit-desktop")
        self.setAcceptDrops(True)
        self.settings = AppSettings(settings)
        self.controller = controller if controller is not None else Controller(self)
        self.loader = ImageLoader(parent=self)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.results_model = ResultsModel(self)
        self.proxy = ResultsFilter(self)
        self.proxy.setSourceModel(self.results_model)

        self.model_infos: list[object] = []
        self.devices: list[DeviceInfo] = []
        self.pending_paths: list[str] = []
        self._runs: dict[int, tuple[int, int]] = {}
        self._run_started_at = 0.0
        self._load_started_at = 0.0
        # Runs that ended while others of the same busy spell go on still count in its totals.
        self._finished_done = 0
        self._finished_total = 0
        self._closing = False
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._paste_count = 0
        self._jobs: set[Job] = set()
        self._startup_done = False
        self._progress_timer = QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(100)
        self._progress_timer.timeout.connect(self._show_run_progress)
        #: Images per forward pass, and predictions kept per image.
        self.batch_size = 16
        self.top_k = 5

        self._build_widgets()
        self._build_actions()
        self._build_menus()
        self._connect()
        self._restore_settings()
        self._update_empty_text()
        self._update_model_label()

    # ------------------------------------------------------------------------------------------
    # Construction

    def _build_widgets(self) -> None:
        self.message_bar = MessageBar(self)

        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter by label or file name")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_mode = QComboBox(self)
        for mode, title in FILTER_TITLES.items():
            self.filter_mode.addItem(title, int(mode))
        self.sort_combo = QComboBox(self)
        for title, _role, _order in SORT_KEYS:
            self.sort_combo.addItem(title)
        self.threshold_spin = QDoubleSpinBox(self)
        self.threshold_spin.setRange(0, 100)
        self.threshold_spin.setDecimals(0)
        self.threshold_spin.setSuffix(" %")
        self.threshold_spin.setPrefix("Uncertain below ")
        self.threshold_spin.setToolTip("Images whose best score is below this are marked uncertain")

        # Text fields would swallow dropped files as text: drops belong to the window.
        self.filter_edit.setAcceptDrops(False)
        self.threshold_spin.setAcceptDrops(False)
        self.threshold_spin.lineEdit().setAcceptDrops(False)

        self.gallery = GalleryView(self.loader, self)
        self.gallery.setModel(self.proxy)
        self.gallery.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.summary = QLabel("", self)
        self.summary.setObjectName("summary")

        left = QWidget(self)
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 2)
        bar.addWidget(self.filter_mode)
        bar.addWidget(self.sort_combo)
        bar.addWidget(self.threshold_spin)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(6, 6, 0, 6)
        lv.addLayout(bar)
        lv.addWidget(self.gallery, 1)
        lv.addWidget(self.summary)

        self.detail = DetailPanel(self.controller, self.loader, self)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        central = QWidget(self)
        cv = QVBoxLayout(central)
        cv.setContentsMargins(0, 0, 0, 0)
        cv.setSpacing(0)
        cv.addWidget(self.message_bar)
        cv.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        sb = self.statusBar()
        self.status_label = QLabel("", self)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the folder run or the model download (Esc)")
        self.cancel_button.hide()
        self.model_label = QLabel("", self)
        self.model_label.setObjectName("modelLabel")
        sb.addWidget(self.status_label, 1)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        sb.addPermanentWidget(self.model_label)
        self.resize(1280, 800)

    def _action(self, text: str, slot: object, shortcut: QKeySequence | str | None = None,
                tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        self.addAction(act)  # shortcuts work even while menus are closed
        return act

    def _build_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.act_open = self._action("&Open images…", self.open_images_dialog, K.Open)
        self.act_open_folder = self._action("Open &folder…", self.open_folder_dialog, "Ctrl+Shift+O")
        self.act_paste = self._action("&Paste image or paths", self.paste, K.Paste)
        self.act_export = self._action("&Export results…", self.export_results_dialog, "Ctrl+E")
        self.act_export_overlay = self._action("Export &overlay PNG…", self.export_overlay_dialog, "Ctrl+Shift+E")
        self.act_copy_classes = self._action("Copy images into class &folders…", self.copy_into_folders_dialog)
        self.act_clear = self._action("C&lear results", self.clear_results, "Ctrl+Shift+Backspace")
        self.act_quit = self._action("&Quit", self.close, K.Quit)
        self.act_copy = self._action("&Copy result", self.copy_selected, K.Copy)
        self.act_select_all = self._action("Select &all", self.gallery.selectAll, K.SelectAll)
        self.act_cancel = self._action("&Cancel", self.cancel_current, "Esc")
        self.act_overlay = self._action("Toggle &overlay", self.detail.toggle_overlay, "H")
        self.act_fit = self._action("&Fit photo", self.detail.view.fit, "0")
        self.act_zoom_in = self._action("Zoom &in", self._zoom_in, K.ZoomIn)
        self.act_zoom_out = self._action("Zoom &out", self._zoom_out, K.ZoomOut)
        self.act_open_weights = self._action("Open &weights file…", self.open_weights_dialog, "Ctrl+Shift+M")
        self.act_reload_models = self._action("&Refresh model list", self.refresh_models)
        self.act_finetune = self._action("&Fine-tune…", self.open_finetune, "Ctrl+T")
        self.act_about = self._action("&About vit-desktop", self.show_about)
        self.act_samples = self._action("Open &sample photos", self.open_samples)
        self.act_download_default = self._action("Download ViT-B/16", self.download_default_model)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for a in (self.act_open, self.act_open_folder, self.act_paste, self.act_samples):
            m.addAction(a)
        m.addSeparator()
        for a in (self.act_export, self.act_export_overlay, self.act_copy_classes):
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_clear)
        m.addAction(self.act_quit)
        m = mb.addMenu("&Edit")
        m.addAction(self.act_copy)
        m.addAction(self.act_paste)
        m.addAction(self.act_select_all)
        m.addSeparator()
        m.addAction(self.act_cancel)
        m = mb.addMenu("&View")
        for a in (self.act_overlay, self.act_fit, self.act_zoom_in, self.act_zoom_out):
            m.addAction(a)
        self.model_menu = mb.addMenu("&Model")
        self.model_menu.aboutToShow.connect(self._populate_model_menu)
        self.device_menu = QMenu("&Device", self)
        self.precision_menu = QMenu("&Precision", self)
        self.precision_group = QActionGroup(self)
        for key, title in PRECISIONS:
            a = QAction(title, self)
            a.setCheckable(True)
            a.setData(key)
            self.precision_group.addAction(a)
            self.precision_menu.addAction(a)
        self.precision_group.triggered.connect(self._on_precision_chosen)
        self.device_group = QActionGroup(self)
        self.device_group.triggered.connect(self._on_device_chosen)
        self._populate_model_menu()
        m = mb.addMenu("&Tools")
        m.addAction(self.act_finetune)
        m = mb.addMenu("&Help")
        m.addAction(self.act_about)

    def _connect(self) -> None:
        c = self.controller
        c.model_loading.connect(self._on_model_loading)
        c.model_progress.connect(self._on_model_progress)
        c.model_loaded.connect(self._on_model_loaded)
        c.model_failed.connect(self._on_model_failed)
        c.run_started.connect(self._on_run_started)
        c.results_ready.connect(self._on_results_ready)
        c.run_progress.connect(self._on_run_progress)
        c.run_finished.connect(self._on_run_finished)
        c.failed.connect(self._on_failed)
        c.models_changed.connect(self.refresh_models)
        self.cancel_button.clicked.connect(self.cancel_current)
        self.filter_edit.textChanged.connect(self.proxy.set_text)
        self.filter_mode.currentIndexChanged.connect(self._on_filter_mode)
        self.sort_combo.currentIndexChanged.connect(self.proxy.set_sort_key)
        self.threshold_spin.valueChanged.connect(self._on_threshold)
        self.gallery.selectionModel().currentChanged.connect(self._on_current_changed)
        self.gallery.customContextMenuRequested.connect(self._on_gallery_menu)
        self.results_model.dataChanged.connect(self._on_data_changed)
        self.results_model.rowsInserted.connect(self._update_summary)
        self.results_model.modelReset.connect(self._update_summary)
        self.proxy.layoutChanged.connect(self._update_empty_text)
        self.gallery.sample_button.clicked.connect(self.open_samples)
        self.detail.settings_changed.connect(self._save_overlay_settings)

    def _restore_settings(self) -> None:
        s = self.settings
        geo = s.geometry()
        if geo is not None:
            self.restoreGeometry(geo)
        state = s.window_state()
        if state is not None:
            self.restoreState(state)
        split = s.splitter_state()
        if split is not None:
            self.splitter.restoreState(split)
        o = s.overlay()
        self.detail.apply_settings(opacity=o.opacity, colormap=o.colormap, head_fusion=o.head_fusion,
                                   discard_ratio=o.discard_ratio, overlay=o.overlay)
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setValue(round(s.threshold * 100))
        self.threshold_spin.blockSignals(False)
        for a in self.precision_group.actions():
            a.setChecked(a.data() == s.precision)

    # ------------------------------------------------------------------------------------------
    # Start-up

    def start(self) -> None:
        """Deferred start-up work; call once the window is shown (``QTimer.singleShot(0, ...)``)."""
        if self._startup_done:
            return
        self._startup_done = True
        last = self.settings.last_model
        if last:
            self.load_model(last)
        else:
            self.status_label.setText("Looking for models…")
        self.refresh_models(choose_default=not last)

    def refresh_models(self, choose_default: bool = False) -> None:
        """List models and devices on the pool (the first call imports torch: keep it off the GUI)."""

        def work(_job: Job) -> object:
            from vit_desktop.core import registry
            from vit_desktop.core.engine import available_devices

            return registry.list_models(), available_devices()

        job = Job(work, self)
        job.setProperty("choose_default", bool(choose_default))
        job.finished.connect(self._on_models_listed)
        job.failed.connect(self._on_models_list_failed)
        self._start_job(job)

    def _start_job(self, job: Job) -> None:
        self._jobs.add(job)
        job.finished.connect(self._forget_job)
        job.failed.connect(self._forget_job)
        job.start(self.pool)

    @Slot(object)
    def _forget_job(self, _value: object = None) -> None:
        job = self.sender()
        if isinstance(job, Job):
            self._jobs.discard(job)
            job.deleteLater()

    @Slot(object)
    def _on_models_listed(self, value: object) -> None:
        infos, devices = value  # type: ignore[misc]
        self.model_infos = list(infos)
        self.devices = list(devices)
        self._populate_model_menu()
        job = self.sender()
        if job is not None and job.property("choose_default") and self.controller.current_card is None \
                and not self.controller.loading:
            source = self.default_model_source()
            if source:
                self.load_model(source)
            else:
                self.status_label.setText("")
                self._update_model_label()
                self.message_bar.show_message(
                    f"{NO_MODEL_TEXT}: pick a torchvision ViT (downloaded once) or open a weights file.",
                    kind="info", action=self.act_open_weights)

    @Slot(str)
    def _on_models_list_failed(self, message: str) -> None:
        self.message_bar.show_message(f"Could not list the models: {message}. "
                                      "Use Model ▸ Open weights file… to load one directly.")

    def default_model_source(self) -> str:
        """First cached registry model, else the first bundled one, else nothing."""
        for info in self.model_infos:
            if getattr(info, "kind", "") == "registry" and getattr(info, "cached", False):
                return str(info.source)  # type: ignore[attr-defined]
        for info in self.model_infos:
            if getattr(info, "kind", "") == "bundled":
                return str(info.source)  # type: ignore[attr-defined]
        return ""

    # ------------------------------------------------------------------------------------------
    # Model menu

    @Slot()
    def _populate_model_menu(self) -> None:
        m = self.model_menu
        m.clear()
        current = self.controller.current_model.source if self.controller.current_model else self.settings.last_model
        groups = (("registry", "torchvision ViT (ImageNet-1k)"), ("bundled", "Bundled models"), ("user", "Your models"))
        if not self.model_infos:
            a = m.addAction("Looking for models…")
            a.setEnabled(False)
        for kind, title in groups:
            infos = [i for i in self.model_infos if getattr(i, "kind", "") == kind]
            if not infos:
                continue
            m.addSection(title)
            for info in infos:
                size = human_bytes(getattr(info, "size_bytes", 0))
                if kind == "registry":
                    state = f"cached, {size}" if info.cached else f"download {size}"  # type: ignore[attr-defined]
                    text = f"{info.title}  ({state})"  # type: ignore[attr-defined]
                else:
                    text = f"{info.title}  ({size})"  # type: ignore[attr-defined]
                a = m.addAction(text)
                a.setCheckable(True)
                a.setChecked(str(info.source) == current)  # type: ignore[attr-defined]
                a.setData(str(info.source))  # type: ignore[attr-defined]
                a.setToolTip(getattr(info, "description", ""))
                a.triggered.connect(self._on_model_action)
        m.addSeparator()
        m.addAction(self.act_open_weights)
        m.addSeparator()
        self.device_menu.clear()
        for a in self.device_group.actions():
            self.device_group.removeAction(a)
        devices = self.devices or [DeviceInfo("auto", "Automatic (best available)"), DeviceInfo("cpu", "CPU")]
        for d in devices:
            a = QAction(d.name if d.key in ("auto", "cpu") else f"{d.name} ({d.key})", self)
            a.setCheckable(True)
            a.setData(d.key)
            a.setChecked(d.key == self.settings.device)
            self.device_group.addAction(a)
            self.device_menu.addAction(a)
        m.addMenu(self.device_menu)
        m.addMenu(self.precision_menu)
        m.addSeparator()
        m.addAction(self.act_reload_models)

    @Slot()
    def _on_model_action(self) -> None:
        act = self.sender()
        if isinstance(act, QAction) and act.data():
            self.load_model(str(act.data()))

    @Slot(QAction)
    def _on_device_chosen(self, act: QAction) -> None:
        self.settings.device = str(act.data())
        self._reload_current()

    @Slot(QAction)
    def _on_precision_chosen(self, act: QAction) -> None:
        self.settings.precision = str(act.data())
        self._reload_current()

    def _reload_current(self) -> None:
        cur = self.controller.current_model
        source = cur.source if cur is not None else self.settings.last_model
        if source:
            self.load_model(source)

    def load_model(self, source: str) -> None:
        """Load ``source`` with the remembered device and precision; runs in progress stop."""
        if self.controller.busy:
            self.controller.cancel_run()
        self.message_bar.hide()
        self.controller.load_model(source, self.settings.device, self.settings.precision)

    @Slot()
    def download_default_model(self) -> None:
        """ViT-B/16 with ImageNet weights: downloaded with progress and Cancel, then used."""
        self.load_model("vit_b_16")

    def open_weights_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model weights", self.settings.folder("weights"),
                                              WEIGHT_FILTER)
        if path:
            self.settings.set_folder("weights", str(Path(path).parent))
            self.load_model(path)

    # ------------------------------------------------------------------------------------------
    # Model signals

    @Slot(str)
    def _on_model_loading(self, source: str) -> None:
        self._load_started_at = time.monotonic()
        self.status_label.setText(f"Loading {Path(source).name if os.sep in source else source}…"
                                  + self._waiting_note())
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.model_label.setText("Loading model…")

    @Slot(int, int)
    def _on_model_progress(self, done: int, total: int) -> None:
        elapsed = max(1e-3, time.monotonic() - self._load_started_at)
        rate = done / elapsed
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
            left = (total - done) / rate if rate > 0 else 0
            text = (f"Downloading weights: {human_bytes(done)} of {human_bytes(total)}, "
                    f"{human_bytes(rate)}/s, {human_duration(left)} left")
        else:
            text = f"Downloading weights: {human_bytes(done)}, {human_bytes(rate)}/s"
        self.status_label.setText(text + self._waiting_note())

    def _waiting_note(self) -> str:
        n = len(self.pending_paths)
        return f" · {n} item{'s' if n != 1 else ''} waiting for the model" if n else ""

    @Slot(object)
    def _on_model_loaded(self, loaded: object) -> None:
        assert isinstance(loaded, LoadedModel)
        # Remember registry names and files, not in-memory models (e.g. one just fine-tuned and
        # not saved): those cannot be loaded at the next start.
        from vit_desktop.core.registry import REGISTRY  # torch is loaded by now: this is cheap

        if loaded.source in REGISTRY or (loaded.source and os.path.exists(loaded.source)):
            self.settings.last_model = loaded.source
            from vit_desktop.core import state

            state.set_last_model(loaded.source)  # `vit-desktop classify` follows the window
        if not self.controller.loading:
            self._end_busy_ui()
        self.status_label.setText(f"{loaded.card.name} ready on {loaded.device_name}")
        log.info("%s ready on %s (%s)", loaded.card.name, loaded.device_name, loaded.precision)
        self._update_model_label()
        self._populate_model_menu()
        if self.message_bar.isVisible() and NO_MODEL_TEXT in self.message_bar.label.text():
            self.message_bar.hide()
        if self._demo_model_loaded():
            self.message_bar.show_message(
                f"Demo model: {loaded.card.num_classes} clothing classes (Fashion-MNIST). For everyday photos, "
                "download ViT-B/16 (ImageNet, 1000 classes, about 330 MB), or use Model ▸ Open weights file… "
                "for a model you have.",
                kind="info",
                action=self.act_download_default,
            )
        self._update_empty_text()
        if self.pending_paths:
            queued, self.pending_paths = self.pending_paths, []
            self._classify(queued)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self._end_busy_ui()
        self._update_model_label()
        if message == "Loading cancelled.":
            self.status_label.setText("Model loading cancelled.")
            if self.controller.current_card is None:
                self.message_bar.show_message(f"{NO_MODEL_TEXT}.", kind="info", action=self.act_open_weights)
            return
        self.status_label.setText("The model could not be loaded.")
        advice = ("Use Model ▸ Open weights file… for a model file you have, or pick another model."
                  if "download" in message.lower() or "offline" in message.lower()
                  else "Pick another model from the Model menu or open a different weights file.")
        keep = (f" Still using {self.controller.current_card.name}." if self.controller.current_card else "")
        self.message_bar.show_message(f"Could not load the model: {message} {advice}{keep}",
                                      action=self.act_open_weights)

    def _update_model_label(self) -> None:
        cur = self.controller.current_model
        if cur is None:
            self.model_label.setText(NO_MODEL_TEXT if not self.controller.loading else "Loading model…")
            self.model_label.setToolTip("")
            return
        self.model_label.setText(f"{cur.card.name} · {cur.device_name} · {cur.precision}")
        self.model_label.setToolTip(cur.card.description or cur.card.source)

    # ------------------------------------------------------------------------------------------
    # Adding images

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        mime = event.mimeData()
        if event.source() is self.gallery:
            event.ignore()  # a photo dragged out of the gallery is already classified here
        elif mime.hasUrls() or mime.hasImage() or mime.hasText():
            event.acceptProposedAction()
            self.statusBar().showMessage("Drop to classify: files, folders or an image")
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802
        self.statusBar().clearMessage()
        super().dragLeaveEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.statusBar().clearMessage()
        if self.handle_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def handle_mime(self, mime: QMimeData) -> bool:
        """Files, folders, file paths as text, or image data: classify them. False if nothing usable."""
        paths = paths_from_mime(mime)
        if not paths and mime.hasImage():
            image = mime.imageData()
            if isinstance(image, QImage) and not image.isNull():
                saved = self._save_pasted(image)
                if saved:
                    paths = [saved]
        if not paths:
            self.status_label.setText("Nothing to classify there: drop image files or folders.")
            return False
        self.add_paths(paths)
        return True

    def _save_pasted(self, image: QImage) -> str | None:
        """Pasted pixels become a PNG in a private temporary folder, so they behave like a file."""
        if self._temp_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="vit-desktop-pasted-")
        self._paste_count += 1
        path = Path(self._temp_dir.name) / f"pasted-{time.strftime('%H%M%S')}-{self._paste_count}.png"
        if not image.save(str(path), "PNG"):
            self.message_bar.show_message("Could not keep the pasted image: the temporary folder is not writable.")
            return None
        return str(path)

    def add_paths(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """Classify files and folders; before a model is ready they wait in a queue."""
        items = [str(p) for p in paths]
        if not items:
            return
        if self.controller.current_card is None:
            self.pending_paths.extend(items)
            n = len(self.pending_paths)
            what = f"{n} item{'s' if n != 1 else ''}"
            if self.controller.loading:
                self.status_label.setText(f"{what} queued: classification starts when the model is loaded.")
            else:
                self.message_bar.show_message(
                    f"{NO_MODEL_TEXT}. {what} will be classified as soon as a model is loaded.",
                    kind="info", action=self.act_open_weights)
            return
        self._classify(items)

    def _classify(self, items: list[str]) -> None:
        if not self._runs:
            self._run_started_at = time.monotonic()
            self._finished_done = self._finished_total = 0
        run_id = self.controller.classify(
            items, top_k=self.top_k, batch_size=self.batch_size, explain=self.detail.explain_options(),
            threshold=self.threshold_spin.value() / 100.0)
        self._runs[run_id] = (0, 0)
        self.status_label.setText("Scanning…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()

    def open_images_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", self.settings.folder("images"), IMAGE_FILTER)
        if files:
            self.settings.set_folder("images", str(Path(files[0]).parent))
            self.add_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", self.settings.folder("images"))
        if folder:
            self.settings.set_folder("images", folder)
            self.add_paths([folder])

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None or not self.handle_mime(mime):
            self.status_label.setText("The clipboard holds no image and no file paths.")

    # ------------------------------------------------------------------------------------------
    # Runs

    @Slot(int, int)
    def _on_run_started(self, run_id: int, total: int) -> None:
        self._runs[run_id] = (0, total)
        self._show_run_progress()

    @Slot(int, object)
    def _on_results_ready(self, _run_id: int, results: object) -> None:
        batch: list[ClassifyResult] = list(results)  # type: ignore[call-overload]
        self.results_model.add_results(batch)
        if not self.gallery.currentIndex().isValid() and self.proxy.rowCount() > 0:
            self.gallery.setCurrentIndex(self.proxy.index(0, 0))

    @Slot(int, int, int)
    def _on_run_progress(self, run_id: int, done: int, total: int) -> None:
        if run_id in self._runs:
            self._runs[run_id] = (done, total)
            # At most ten refreshes a second: QProgressBar repaints synchronously on every value.
            if not self._progress_timer.isActive():
                self._progress_timer.start()

    @Slot()
    def _show_run_progress(self) -> None:
        done = self._finished_done + sum(d for d, _ in self._runs.values())
        total = self._finished_total + sum(t for _, t in self._runs.values())
        if total <= 0:
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{done} / {total}")
        elapsed = max(1e-3, time.monotonic() - self._run_started_at)
        rate = done / elapsed
        text = f"Classifying {done} of {total} images"
        if rate > 0 and done > 0:
            text += f" · {rate:.1f} images/s · {human_duration((total - done) / rate)} left"
        self.status_label.setText(text)

    @Slot(int, bool)
    def _on_run_finished(self, run_id: int, cancelled: bool) -> None:
        run_done, run_total = self._runs.pop(run_id, (0, 0))
        self._finished_done += run_done
        # A cancelled run never reached its total: it counts as far as it got.
        self._finished_total += run_done if cancelled else run_total
        done, total = self._finished_done, self._finished_total
        self._progress_timer.stop()
        if self._runs:
            self._show_run_progress()
            return
        elapsed = time.monotonic() - self._run_started_at
        if not self.controller.loading:
            self._end_busy_ui()
        _n, errors, _uncertain = self.results_model.counts()
        if cancelled:
            self.status_label.setText(f"Cancelled after {done} of {done + run_total - run_done} images.")
        else:
            self.status_label.setText(
                f"Classified {done} image{'s' if done != 1 else ''} in {human_duration(elapsed)}"
                + (f" · {errors} could not be read (filter: Errors)" if errors else ""))

    def _end_busy_ui(self) -> None:
        if self._runs or self.controller.loading:
            return
        self.progress.hide()
        self.progress.setFormat("%p%")
        self.cancel_button.hide()

    def cancel_current(self) -> None:
        """Esc / Cancel: stop the folder runs; with none, stop the model load or download."""
        if self._runs:
            self.controller.cancel_run()
            self.status_label.setText("Cancelling…")
        elif self.controller.loading:
            self.controller.cancel_load()
            self.status_label.setText("Cancelling…")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.message_bar.show_message(message)

    # ------------------------------------------------------------------------------------------
    # Gallery and detail

    @Slot(int)
    def _on_filter_mode(self, i: int) -> None:
        self.proxy.set_mode(FilterMode(self.filter_mode.itemData(i)))
        self._update_empty_text()

    @Slot(float)
    def _on_threshold(self, value: float) -> None:
        t = value / 100.0
        self.settings.threshold = t
        # Uncertainty is only "top score < threshold": re-derive it for what is already listed.
        for r in self.results_model.results():
            if r.top is not None and r.uncertain != (r.top.score < t):
                self.results_model.replace_result(dataclasses.replace(r, uncertain=r.top.score < t))
        self.proxy.refilter()
        self._update_summary()

    @Slot(QModelIndex, QModelIndex)
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        result = current.data(Roles.RESULT) if current.isValid() else None
        self.detail.show_result(result)

    @Slot(QModelIndex, QModelIndex, list)
    def _on_data_changed(self, top_left: QModelIndex, _bottom_right: QModelIndex, _roles: list) -> None:
        cur = self.gallery.currentIndex()
        if cur.isValid() and self.proxy.mapToSource(cur).row() == top_left.row():
            self.detail.show_result(cur.data(Roles.RESULT))

    @Slot()
    def _update_summary(self) -> None:
        n, errors, uncertain = self.results_model.counts()
        if n == 0:
            self.summary.setText("")
        else:
            self.summary.setText(f"{n} image{'s' if n != 1 else ''} · {uncertain} uncertain · {errors} errors")
        self._update_empty_text()

    @Slot()
    def _update_empty_text(self) -> None:
        empty = self.results_model.rowCount() == 0
        if not empty:
            self.gallery.empty_text = "No image matches the filter"
        else:
            self.gallery.empty_text = "Drop images or folders here\nor use File ▸ Open images… (Ctrl+O)"
        self.gallery.set_sample_button_visible(empty and bool(self.sample_paths()))
        self.gallery.viewport().update()

    def sample_paths(self) -> list[str]:
        """Sample photos that suit the current model: clothing for the demo model, else the rest."""
        from vit_desktop.gui.style import RESOURCES

        folder = RESOURCES / "samples"
        if not folder.is_dir():
            return []
        clothing = folder / "clothing"
        if self._demo_model_loaded():
            chosen = clothing
        else:
            chosen = folder
        return sorted(str(p) for p in chosen.iterdir() if p.suffix.lower() in (".png", ".jpg"))

    def _demo_model_loaded(self) -> bool:
        cur = self.controller.current_model
        if cur is None or not cur.source:
            return False
        from vit_desktop.core.paths import bundled_models_dir

        return Path(cur.source).resolve().parent == bundled_models_dir().resolve()

    @Slot()
    def open_samples(self) -> None:
        self.add_paths(self.sample_paths())

    @Slot(QPoint)
    def _on_gallery_menu(self, pos: QPoint) -> None:
        index = self.gallery.indexAt(pos)
        if not index.isValid():
            return
        r: ClassifyResult = index.data(Roles.RESULT)
        menu = QMenu(self)
        menu.addAction(self.act_copy)
        menu.addAction(self.act_export_overlay)
        show = menu.addAction("Show in folder")
        show.triggered.connect(self._show_current_in_folder)
        show.setEnabled(Path(r.path).exists())
        menu.popup(self.gallery.viewport().mapToGlobal(pos))

    @Slot()
    def _show_current_in_folder(self) -> None:
        index = self.gallery.currentIndex()
        if index.isValid():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(index.data(Roles.PATH)).parent)))

    def selected_results(self) -> list[ClassifyResult]:
        rows = self.gallery.selectionModel().selectedIndexes()
        if not rows and self.gallery.currentIndex().isValid():
            rows = [self.gallery.currentIndex()]
        return [i.data(Roles.RESULT) for i in sorted(rows, key=lambda i: i.row())]

    def copy_selected(self) -> None:
        """Copy the selected results as tab-separated lines: path, label, score (or the error)."""
        lines = []
        for r in self.selected_results():
            if r.error:
                lines.append(f"{r.path}\terror\t{r.error}")
            else:
                lines.append("\t".join([r.path] + [f"{p.label}\t{p.score:.4f}" for p in r.predictions]))
        if lines:
            QGuiApplication.clipboard().setText("\n".join(lines) + "\n")
            self.status_label.setText(f"Copied {len(lines)} result{'s' if len(lines) != 1 else ''}.")

    def clear_results(self) -> None:
        self.controller.forget_runs()
        self._runs.clear()
        self._end_busy_ui()
        self.results_model.clear()
        self.loader.forget()
        self.detail.show_result(None)
        self.status_label.setText("Results cleared.")

    def _zoom_in(self) -> None:
        self.detail.view.zoom_by(1.25)

    def _zoom_out(self) -> None:
        self.detail.view.zoom_by(0.8)

    @Slot()
    def _save_overlay_settings(self) -> None:
        d = self.detail
        self.settings.set_overlay(OverlaySettings(
            opacity=d.opacity.value() / 100.0, colormap=d.colormap.currentText(),
            head_fusion=d.fusion.currentText(), discard_ratio=d.discard.value() / 100.0,
            overlay=d.overlay_box.isChecked()))

    # ------------------------------------------------------------------------------------------
    # Export

    def export_results_dialog(self) -> None:
        if self.results_model.rowCount() == 0:
            self.message_bar.show_message("There are no results to export yet: drop some images first.", "info")
            return
        start = str(Path(self.settings.folder("export") or Path.home()) / "results.csv")
        path, _ = QFileDialog.getSaveFileName(
            self, "Export results", start, "CSV (*.csv);;JSON (*.json);;JSON lines (*.jsonl)")
        if path:
            if not Path(path).suffix:
                path += ".csv"
            # The save dialog already asked before replacing an existing file.
            self.export_results(path, overwrite=True)

    def export_results(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> bool:
        """Write every result in the command line's format chosen by the suffix (.csv/.json/.jsonl)."""
        from vit_desktop.core.export import write_results

        try:
            written = write_results(self.results_model.results(), path, top_k=self.top_k, overwrite=overwrite)
        except FileExistsError:
            self.message_bar.show_message(f"{path} already exists: choose another name.")
            return False
        except (OSError, ValueError) as exc:
            self.message_bar.show_message(f"Could not export the results: {exc}. Choose another folder or name.")
            return False
        self.settings.set_folder("export", str(Path(written).parent))
        self.status_label.setText(f"Exported {self.results_model.rowCount()} results to {written}")
        return True

    def export_overlay_dialog(self) -> None:
        r = self.detail.result
        hm = self.detail.current_heatmap
        if r is None or hm is None:
            self.message_bar.show_message("Select a classified image first; its overlay is what gets saved.", "info")
            return
        start = str(Path(self.settings.folder("export") or Path.home()) / f"{Path(r.path).stem}-overlay.png")
        path, _ = QFileDialog.getSaveFileName(self, "Export overlay", start, "PNG image (*.png)")
        if path:
            if not path.lower().endswith(".png"):
                path += ".png"
            self.export_overlay(path, overwrite=True)

    def export_overlay(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Job | None:
        """Save the selected photo with its current overlay as a PNG (in the background)."""
        r = self.detail.result
        hm = self.detail.current_heatmap
        if r is None or hm is None:
            return None
        colormap = self.detail.colormap.currentText()
        opacity = self.detail.opacity.value() / 100.0
        src, dest = r.path, str(path)

        def work(_job: Job) -> object:
            from vit_desktop.core.heatmap import save_overlay_png
            from vit_desktop.core.images import load_image

            return str(save_overlay_png(dest, load_image(src), hm, colormap=colormap, opacity=opacity,
                                        overwrite=overwrite))

        job = Job(work, self)
        job.finished.connect(self._on_overlay_saved)
        job.failed.connect(self._on_job_failed)
        self._start_job(job)
        return job

    @Slot(object)
    def _on_overlay_saved(self, path: object) -> None:
        self.settings.set_folder("export", str(Path(str(path)).parent))
        self.status_label.setText(f"Overlay saved to {path}")
        self.overlay_saved.emit(str(path))

    @Slot(str)
    def _on_job_failed(self, message: str) -> None:
        self.message_bar.show_message(f"{message}. Choose another name or folder and try again.")
        self.job_failed.emit(message)

    def copy_into_folders_dialog(self) -> None:
        ok = [r for r in self.results_model.results() if r.ok and r.top is not None]
        if not ok:
            self.message_bar.show_message("There are no classified images to sort yet.", "info")
            return
        dest = QFileDialog.getExistingDirectory(self, "Copy images into one folder per class",
                                                self.settings.folder("sorted"))
        if not dest:
            return
        answer = QMessageBox.question(
            self, "Copy into class folders",
            f"Copy {len(ok)} images into one folder per predicted class under\n{dest}?\n\n"
            "The originals stay where they are; nothing is moved or overwritten.")
        if answer == QMessageBox.StandardButton.Yes:
            self.settings.set_folder("sorted", dest)
            self.copy_into_class_folders(dest)

    def copy_into_class_folders(self, dest: str | os.PathLike[str]) -> Job:
        """Copy (never move) each classified image into ``dest/<top label>/``; names never clash."""
        items = [(r.path, r.top.label) for r in self.results_model.results() if r.ok and r.top is not None]
        root = Path(dest)

        def work(job: Job) -> object:
            copied = 0
            for i, (src, label) in enumerate(items):
                job.cancel.raise_if_cancelled()
                folder = root / safe_folder_name(label)
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / Path(src).name
                n = 1
                while target.exists():
                    target = folder / f"{Path(src).stem} ({n}){Path(src).suffix}"
                    n += 1
                shutil.copy2(src, target)
                copied += 1
                job.report(i + 1, len(items))
            return copied

        job = Job(work, self)
        job.finished.connect(self._on_copied)
        job.failed.connect(self._on_job_failed)
        self._start_job(job)
        self.status_label.setText(f"Copying {len(items)} images into {root}…")
        return job

    @Slot(object)
    def _on_copied(self, count: object) -> None:
        self.status_label.setText(f"Copied {count} images into class folders.")
        self.files_copied.emit(int(count))  # type: ignore[call-overload]

    # ------------------------------------------------------------------------------------------
    # Tools and help

    def open_finetune(self) -> None:
        try:
            from vit_desktop.gui.finetune_dialog import FinetuneDialog  # type: ignore[import-not-found]
        except ImportError as exc:
            self.message_bar.show_message(f"Fine-tuning is not available in this build ({exc}).", "info")
            return
        dialog = FinetuneDialog(self.controller, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dialog.show()

    def about_text(self) -> str:
        import PySide6
        from PySide6.QtCore import qVersion

        from vit_desktop import __version__

        lines = [f"<b>vit-desktop {__version__}</b>",
                 "Classify photos locally with Vision Transformers and see where they look.",
                 "",
                 f"Python {platform.python_version()} · PySide6 {PySide6.__version__} · Qt {qVersion()}"]
        torch_mod = sys.modules.get("torch")
        tv = sys.modules.get("torchvision")
        if torch_mod is not None:
            lines.append(f"PyTorch {torch_mod.__version__}"
                         + (f" · torchvision {tv.__version__}" if tv is not None else ""))
        cur = self.controller.current_model
        if cur is not None:
            lines.append(f"Model: {cur.card.name} on {cur.device_name} ({cur.device_key}, {cur.precision})")
        else:
            lines.append("Model: none loaded")
        return "<br>".join(lines)

    def show_about(self) -> None:
        QMessageBox.about(self, "About vit-desktop", self.about_text())

    # ------------------------------------------------------------------------------------------
    # Closing

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Save settings, cancel every job and join every thread. Safe to call twice."""
        if self._closing:
            return
        self._closing = True
        try:
            self.settings.save_window(self.saveGeometry(), self.saveState(), self.splitter.saveState())
            self._save_overlay_settings()
            self.settings.sync()
        except Exception:  # noqa: BLE001 - never let a settings problem block closing
            log.exception("could not save the window settings")
        for job in list(self._jobs):
            job.cancel.cancel()
        self.controller.shutdown()
        self.loader.shutdown()
        self.pool.waitForDone()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None


def safe_folder_name(label: str) -> str:
    """A class label as a folder name on every platform (no separators or reserved characters)."""
    bad = '<>:"/\\|?*'
    name = "".join("_" if ch in bad or ord(ch) < 32 else ch for ch in label).strip().rstrip(".")
    return name or "unnamed"


__all__ = ["MainWindow", "MessageBar", "human_bytes", "human_duration", "paths_from_mime", "safe_folder_name"]
