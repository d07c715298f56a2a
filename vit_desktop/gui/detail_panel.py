"""The right-hand side: the selected photo with its heatmap, overlay controls and top-k bars."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vit_desktop.core.errors import Failure
from vit_desktop.core.io.heatmap import COLORMAPS  # numpy and Pillow only: cheap at start-up
from vit_desktop.core.types import HEAD_FUSIONS, ClassifyResult, Heatmap
from vit_desktop.gui.compute import Controller, HeatmapReply, LoadedModel
from vit_desktop.gui.image_view import ImageView
from vit_desktop.gui.jobs import Job
from vit_desktop.gui.plain_text import ElidedLabel, as_plain, plain
from vit_desktop.gui.settings import OverlaySettings
from vit_desktop.gui.thumbnails import ImageLoader
from vit_desktop.gui.topk_bars import TopKBars
from vit_desktop.gui.view_state import MAP_KINDS, ViewState

if TYPE_CHECKING:
    from vit_desktop.core.labels.categories import Categories


class DetailPanel(QWidget):
    """Shows one result: photo, overlay (a class map or rollout), settings and top-k.

    Its controls write the window's :class:`~vit_desktop.gui.view_state.ViewState`; what it shows
    follows the view state's signals, whoever changed it.
    """

    #: A computed map is now on screen (a Heatmap).
    heatmap_shown = Signal(object)

    def __init__(self, controller: Controller, loader: ImageLoader, state: ViewState,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._loader = loader
        self._state = state
        #: The map the shown heatmap answers, to tell a new map from a new colour.
        self._shown_explain = state.explain
        self.result: ClassifyResult | None = None
        #: The class (or category) whose map the user clicked; None: the top-1's.
        self.class_index: int | None = None
        self._pending: Job | None = None
        #: ``LoadedModel.model_id`` of the model in use.
        self.current_model = ""

        self.view = ImageView(self)
        self.title = ElidedLabel("", self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setObjectName("detailTitle")
        # A long file name must not widen the window: the label may be cut instead.
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.showing = QLabel("", self)
        self.showing.setObjectName("detailShowing")
        # A long class name wraps rather than widening the panel.
        self.showing.setWordWrap(True)
        self.showing.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.overlay_box = QCheckBox("Overlay (H)", self)
        self.overlay_box.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setToolTip("Overlay opacity")
        self.map_kind = QComboBox(self)
        for i, (key, text, tip) in enumerate(MAP_KINDS):
            self.map_kind.addItem(text, key)
            self.map_kind.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        self.map_kind.setToolTip("Which map is overlaid (M switches)")
        self.colormap = QComboBox(self)
        self.colormap.addItems(list(COLORMAPS))
        self.fusion = QComboBox(self)
        self.fusion.addItems(list(HEAD_FUSIONS))
        self.fusion.setToolTip("How the attention heads of each layer are combined")
        self.discard = QSlider(Qt.Orientation.Horizontal, self)
        self.discard.setRange(0, 95)
        self.discard.setSingleStep(5)
        self.discard.setPageStep(10)
        self.discard.setToolTip("Discard the weakest attention links (fraction) before rollout")
        self.discard_label = QLabel("0.00", self)
        self.discard_label.setMinimumWidth(32)
        self.crop_box = QCheckBox("Crop outline", self)
        self.crop_box.setChecked(True)
        self.zoom_label = QLabel("", self)
        self.zoom_label.setMinimumWidth(44)
        self.zoom_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.zoom_label.setToolTip("Zoom, in pixels of the original photo (wheel to zoom, drag to pan)")
        self.fit_button = QToolButton(self)
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Fit the photo in the view (double-click the photo, or press 0)")

        self.bars = TopKBars(self)
        #: Why the photo counts as none of the model's classes (or why the model is not sure).
        self.verdict = self._note("detailVerdict")
        #: Said on every result while the demo model is in use: its 10 classes are clothing only.
        self.demo_note = self._note("detailVerdict", "Labelled by the demo model: it knows 10 kinds of clothing "
                                    "only, so its labels of other photos mean nothing (Model menu: ViT-B/16 for "
                                    "everyday photos).")
        self._demo = False
        self.error = self._note("detailError")
        plain(self.title, self.showing)  # file names, labels, messages: never HTML

        row1 = QHBoxLayout()
        row1.addWidget(self.overlay_box)
        row1.addWidget(QLabel("Opacity", self))
        row1.addWidget(self.opacity, 1)
        row1.addWidget(self.crop_box)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        map_row = QHBoxLayout()
        map_row.addWidget(self.map_kind)
        map_row.addStretch(1)
        form.addRow("Map", map_row)
        row2 = QHBoxLayout()
        row2.addWidget(self.colormap)
        row2.addSpacing(12)
        self.fusion_label = QLabel("Head fusion", self)
        row2.addWidget(self.fusion_label)
        row2.addWidget(self.fusion)
        row2.addStretch(1)
        form.addRow("Colour map", row2)
        row3 = QHBoxLayout()
        row3.addWidget(self.discard, 1)
        row3.addWidget(self.discard_label)
        self.discard_caption = QLabel("Discard ratio", self)
        form.addRow(self.discard_caption, row3)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        title_row = QHBoxLayout()
        title_row.addWidget(self.title, 1)
        title_row.addWidget(self.zoom_label)
        title_row.addWidget(self.fit_button)
        layout.addLayout(title_row)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.showing)
        layout.addLayout(row1)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.verdict)
        layout.addWidget(self.demo_note)
        layout.addWidget(self.bars)

        # Dragging the discard slider would ask for a rollout per pixel: wait until it rests.
        self._recompute_timer = QTimer(self)
        self._recompute_timer.setSingleShot(True)
        self._recompute_timer.setInterval(150)
        self._recompute_timer.timeout.connect(self._request_heatmap)

        self.overlay_box.toggled.connect(self._on_overlay_toggled)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.colormap.currentTextChanged.connect(self._on_colormap)
        self.fusion.currentTextChanged.connect(self._on_fusion)
        self.map_kind.currentIndexChanged.connect(self._on_map_kind)
        self.discard.valueChanged.connect(self._on_discard)
        self.crop_box.toggled.connect(self.view.set_show_crop)
        self.fit_button.clicked.connect(self.view.fit)
        self.view.zoom_changed.connect(self._on_zoom_changed)
        self.bars.class_clicked.connect(self._on_class_clicked)
        loader.preview_ready.connect(self._on_preview_ready)
        loader.preview_failed.connect(self._on_preview_failed)
        state.overlay_changed.connect(self._on_overlay_changed)
        state.categories_changed.connect(self._on_categories_changed)
        state.threshold_changed.connect(self._show_verdict)
        state.rule_changed.connect(self._show_verdict)
        controller.model_changed.connect(self._on_model_changed)
        self._show_overlay_settings(state.overlay)
        self._enable_rollout_controls()
        self._update_showing()

    def _note(self, name: str, text: str = "") -> QLabel:
        """A hidden, wrapping plain-text line under the photo (object ``name`` for the style sheet)."""
        label = QLabel(text, self)
        label.setObjectName(name)
        label.setWordWrap(True)
        plain(label)
        label.hide()
        return label

    # -- options -------------------------------------------------------------------------------

    @property
    def map_method(self) -> str:
        """The map shown: "class", "refined" or "rollout" (see :data:`MAP_KINDS`)."""
        return self._state.overlay.map_method

    def set_map_method(self, method: str) -> None:
        if any(key == method for key, _, _ in MAP_KINDS):
            self._state.set_overlay(replace(self._state.overlay, map_method=method))

    def cycle_map(self) -> None:
        """M: the next kind of map."""
        self.map_kind.setCurrentIndex((self.map_kind.currentIndex() + 1) % self.map_kind.count())

    def shown_class(self) -> int | None:
        """The class (or category) the class map explains: the bar clicked, else the top-1; None
        for rollout."""
        r = self.result
        if self.map_method == "rollout" or r is None or not r.predictions:
            return None
        if self.class_index is not None and any(p.index == self.class_index for p in r.predictions):
            return self.class_index
        return r.predictions[0].index

    def _show_overlay_settings(self, o: OverlaySettings) -> None:
        """Put the controls where the view state says (settings restored, or changed elsewhere)."""
        widgets = (self.opacity, self.colormap, self.fusion, self.discard, self.overlay_box, self.map_kind)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.opacity.setValue(round(max(0.0, min(1.0, o.opacity)) * 100))
            if o.colormap in COLORMAPS:
                self.colormap.setCurrentText(o.colormap)
            if o.head_fusion in HEAD_FUSIONS:
                self.fusion.setCurrentText(o.head_fusion)
            self.discard.setValue(round(max(0.0, min(0.95, o.discard_ratio)) * 100))
            self.discard_label.setText(f"{self.discard.value() / 100:.2f}")
            self.overlay_box.setChecked(o.overlay)
            index = self.map_kind.findData(o.map_method)
            if index >= 0:
                self.map_kind.setCurrentIndex(index)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.view.set_opacity(self.opacity.value() / 100.0)
        self.view.set_colormap(self.colormap.currentText())
        self.view.set_overlay_visible(o.overlay)

    def toggle_overlay(self) -> None:
        self.overlay_box.toggle()

    # -- showing a result ----------------------------------------------------------------------

    def show_result(self, result: ClassifyResult | None) -> None:
        """Show ``result`` (or nothing). Reuses its stored heatmap when the settings match."""
        same_file = result is not None and self.result is not None and result.path == self.result.path
        self.result = result
        if not same_file:
            self.class_index = None
        self.bars.set_result(result)
        self.bars.set_checked_class(self.shown_class())
        self._show_verdict()
        if result is None:
            self.title.setText("")
            self.error.hide()
            self.view.set_image(None)
            self.view.set_heatmap(None, self.colormap.currentText())
            self.view.set_message("")
            self._update_showing()
            return
        self.title.setText(Path(result.path).name)
        self.title.setToolTip(as_plain(result.path))
        if result.error:
            self.error.setText(f"Could not classify this file: {result.error}")
            self.error.show()
        else:
            self.error.hide()
        if not same_file:
            self.view.set_image(None, result.image_size)
            self.view.set_heatmap(None, self.colormap.currentText())
            self.view.set_message("Loading…" if not result.error else result.error)
            if not result.error:
                self._loader.request_preview(result.path)
        self._update_showing()
        self._refresh_heatmap()

    @Slot(object)
    def _on_categories_changed(self, _categories: Categories | None) -> None:
        """Results are labelled with these categories now: their class maps are the categories'."""
        self.class_index = None
        self.bars.set_result(self.result)
        self.bars.set_checked_class(self.shown_class())
        self._refresh_heatmap()
        self._update_showing()

    @Slot(object)
    def _on_model_changed(self, loaded: LoadedModel) -> None:
        """The model maps are computed with now; results of another one get none of its maps."""
        self.current_model = loaded.model_id
        self._refresh_heatmap()
        self._update_showing()

    @property
    def stale(self) -> bool:
        """The shown result came from an earlier model: the current one's maps would not match it."""
        r = self.result
        return bool(r is not None and r.ok and r.model and self.current_model and r.model != self.current_model)

    def _refresh_heatmap(self) -> None:
        r = self.result
        if r is None or r.error:
            return
        if self.stale:
            # Never mix two models: class indices and maps belong to the model that classified. Its
            # own map is shown only when it is the kind the Map box names.
            self._recompute_timer.stop()
            self._drop_pending()
            kept = r.heatmap if r.heatmap is not None and self._is_wanted(r.heatmap) else None
            self.view.set_heatmap(kept, self.colormap.currentText())
            return
        if r.heatmap is not None and self._is_wanted(r.heatmap):
            self._recompute_timer.stop()
            self._drop_pending()
            self.view.set_heatmap(r.heatmap, self.colormap.currentText())
            self._update_showing()
            return
        self._recompute_timer.start()

    def _is_wanted(self, hm: Heatmap) -> bool:
        """Whether ``hm`` is the map the controls ask for, for the shown result."""
        opts = self._state.explain
        if hm.method != opts.method:
            return False
        if not opts.class_specific:
            return hm.head_fusion == opts.head_fusion and abs(hm.discard_ratio - opts.discard_ratio) < 1e-6
        return hm.class_index == self.shown_class()

    @Slot()
    def _request_heatmap(self) -> None:
        if self.result is None or self.result.error or self.stale:
            return
        shown = self.shown_class()
        members = None
        categories = self._state.categories
        if categories is not None and shown is not None:
            members = categories.members[shown]
        job = self._controller.explain(self.result.path, self._state.explain, shown, members)
        job.returned.connect(self._on_heatmap_ready)
        job.errored.connect(self._on_heatmap_failed)
        self._pending = job
        self._update_showing(computing=True)

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    @Slot(bool)
    def set_demo(self, demo: bool) -> None:
        """The demo model is in use (or no longer is): every result it labels says so."""
        self._demo = demo
        self._show_verdict()

    @Slot()
    def _show_verdict(self, *_changed: object) -> None:
        self.demo_note.setVisible(self._demo and self.result is not None and self.result.ok and not self.stale)
        r = self.result
        if r is None or not r.ok or r.top is None or not r.uncertain or self.stale:
            self.verdict.hide()
            return
        why = self._state.why_uncertain(r.known_score, r.top.score)
        self.verdict.setText(why[:1].upper() + why[1:] + ". The bars are the model's best guesses.")
        self.verdict.show()

    def _update_showing(self, computing: bool = False) -> None:
        if self.result is None or self.result.error:
            self.showing.setText("")
            return
        if self.stale:
            earlier = self.result.model.rsplit("#", 1)[0]
            self.showing.setText(f"Classified by an earlier model ({earlier}): re-classify to see the current "
                                 "model's labels and maps")
            return
        shown = self.shown_class()
        if shown is None:
            opts = self._state.explain
            what = (f"Attention rollout ({opts.head_fusion} of heads, discard {opts.discard_ratio:.2f}): where "
                    "the model looked")
        else:
            preds = self.result.predictions
            label = next((p.label for p in preds if p.index == shown), str(shown))
            kind = "Refined class map" if self.map_method == "refined" else "Class map"
            if preds[0].index == shown:
                what = f"{kind} for “{label}”, the top-1: what the answer rests on"
            else:
                what = f"{kind} for “{label}” (the top-1 is “{preds[0].label}”)"
        self.showing.setText(what + (" — computing…" if computing else ""))

    # -- slots ---------------------------------------------------------------------------------

    @Slot(str, QImage)
    def _on_preview_ready(self, path: str, image: QImage) -> None:
        if self.result is not None and path == self.result.path:
            size = self.result.image_size or (image.width(), image.height())
            self.view.set_image(image, size)

    @Slot(str, str)
    def _on_preview_failed(self, path: str, message: str) -> None:
        if self.result is not None and path == self.result.path:
            self.view.set_message(f"Cannot show this image: {message}")

    @Slot(object)
    def _on_heatmap_ready(self, reply: object) -> None:
        # Superseded requests never return; this check catches a selection that moved meanwhile.
        if (self.sender() is not self._pending or not isinstance(reply, HeatmapReply)
                or self.result is None or reply.path != self.result.path):
            return
        self._pending = None
        self.view.set_heatmap(reply.heatmap, self.colormap.currentText())
        self._update_showing()
        self.heatmap_shown.emit(reply.heatmap)

    @Slot(object)
    def _on_heatmap_failed(self, failure: Failure) -> None:
        if self.sender() is self._pending:
            self._pending = None
            self.showing.setText(f"Could not compute the map: {failure.message}")

    @Slot(float)
    def _on_zoom_changed(self, zoom: float) -> None:
        self.zoom_label.setText(f"{zoom:.0%}" if self.view.has_image else "")

    # The controls write the view state; _on_overlay_changed shows what it then holds.

    @Slot(bool)
    def _on_overlay_toggled(self, on: bool) -> None:
        self._state.set_overlay(replace(self._state.overlay, overlay=on))

    @Slot(int)
    def _on_opacity(self, value: int) -> None:
        self._state.set_overlay(replace(self._state.overlay, opacity=value / 100.0))

    @Slot(str)
    def _on_colormap(self, name: str) -> None:
        self._state.set_overlay(replace(self._state.overlay, colormap=name))

    @Slot(str)
    def _on_fusion(self, name: str) -> None:
        self._state.set_overlay(replace(self._state.overlay, head_fusion=name))

    @Slot(int)
    def _on_discard(self, value: int) -> None:
        self._state.set_overlay(replace(self._state.overlay, discard_ratio=value / 100.0))

    @Slot(int)
    def _on_map_kind(self, index: int) -> None:
        self._state.set_overlay(replace(self._state.overlay, map_method=str(self.map_kind.itemData(index))))

    @Slot(object)
    def _on_overlay_changed(self, o: OverlaySettings) -> None:
        shown = self._shown_explain
        self._show_overlay_settings(o)
        if self._state.explain != shown:  # another map: ask for it (opacity and colours need no new map)
            self._shown_explain = self._state.explain
            self._enable_rollout_controls()
            self._after_map_change()

    @Slot(int)
    def _on_class_clicked(self, class_index: int) -> None:
        self.class_index = class_index
        if self.map_method == "rollout":
            self.set_map_method("class")  # asking for a class's map is asking for a class map
        else:
            self._after_map_change()

    def _after_map_change(self) -> None:
        self.bars.set_checked_class(self.shown_class())
        self._refresh_heatmap()
        self._update_showing(computing=self._recompute_timer.isActive())

    def _enable_rollout_controls(self) -> None:
        rollout = self.map_method == "rollout"
        for w in (self.fusion, self.fusion_label, self.discard, self.discard_caption, self.discard_label):
            w.setEnabled(rollout)
        tip = "" if rollout else "Head fusion and discard ratio shape attention rollout only"
        self.fusion.setToolTip(tip or "How the attention heads of each layer are combined")
        self.discard.setToolTip(tip or "Discard the weakest attention links (fraction) before rollout")

    @property
    def current_heatmap(self) -> Heatmap | None:
        return self.view.heatmap


__all__ = ["DetailPanel"]
