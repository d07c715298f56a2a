"""Every command of the window as data: one list of actions, one list of menus.

``build_actions`` turns :data:`ACTIONS` into a typed bundle (labelme's ``_Actions``) whose fields
are the action names, each connected to the handler of the same name; ``build_menus`` lays the
menus out from :data:`MENUS`. Shortcuts are registered on the window, so they work while menus
are closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QMenuBar, QWidget

_K = QKeySequence.StandardKey


@dataclass(frozen=True)
class ActionSpec:
    name: str
    text: str
    shortcut: QKeySequence.StandardKey | str | None = None
    tip: str = ""
    #: The shortcut works in every window of the program (Quit from the fine-tune dialog too).
    app_wide: bool = False
    #: An on/off setting; the handler is called on toggling.
    checkable: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("open", "&Open images…", _K.Open),
    ActionSpec("open_folder", "Open &folder…", "Ctrl+Shift+O"),
    ActionSpec("paste", "&Paste image or paths", _K.Paste),
    ActionSpec("samples", "Open &sample photos"),
    ActionSpec("export", "&Export results…", "Ctrl+E"),
    ActionSpec("export_overlay", "Export &overlay PNG…", "Ctrl+Shift+E"),
    ActionSpec("overlay_caption", "Caption overlay PNGs with the &label",
               tip="An exported overlay gets a strip under the photo saying which map of which class it shows",
               checkable=True),
    ActionSpec("copy_classes", "Copy images into class &folders…"),
    ActionSpec("export_model", "Export &model as ONNX…", tip="Write the model in use as ONNX, checked in onnxruntime"),
    ActionSpec("write_keywords", "Write labels to &XMP sidecars",
               tip="Each listed photo's label as a keyword in photo.jpg.xmp, where photo managers read it; the "
                   "photos themselves are not touched"),
    ActionSpec("clear", "C&lear results", "Ctrl+Shift+Backspace"),
    ActionSpec("reclassify", "&Re-classify with the current model", "Ctrl+R",
               "Classify the listed photos again with the model in use now"),
    # Explicit: QKeySequence.Quit is empty outside a desktop environment's theme (Xvfb, offscreen).
    ActionSpec("quit", "&Quit", "Ctrl+Q", app_wide=True),
    ActionSpec("copy", "&Copy result", _K.Copy),
    ActionSpec("select_all", "Select &all", _K.SelectAll),
    ActionSpec("remove", "&Remove from list", _K.Delete, "Take the selected photos off the list; the files stay"),
    ActionSpec("undo_remove", "&Undo remove", _K.Undo, "Put back the photos last removed from the list"),
    ActionSpec("cancel", "&Cancel", "Esc", "Stop the folder run, the search or the model download"),
    ActionSpec("overlay", "Toggle &overlay", "H"),
    ActionSpec("next_map", "Next &map kind", "M", "Switch between class map, refined class map and attention rollout"),
    ActionSpec("class_maps_in_runs", "Class maps in folder &runs",
               tip="Compute every photo's map while classifying (slower); otherwise a photo's map is computed "
                   "when it is selected", checkable=True),
    ActionSpec("fit", "&Fit photo", "0"),
    ActionSpec("zoom_in", "Zoom &in", _K.ZoomIn),
    ActionSpec("zoom_out", "Zoom &out", _K.ZoomOut),
    ActionSpec("open_weights", "Open &weights file…", "Ctrl+Shift+M"),
    ActionSpec("open_model_folder", "Open model &folder…",
               tip="A timm hub folder (config.json) or a Hugging Face folder (config.json, preprocessor_config.json)"),
    ActionSpec("reload_models", "&Refresh model list"),
    ActionSpec("finetune", "&Fine-tune…", "Ctrl+T"),
    ActionSpec("library", "&Library…", tip="How much the store of results and features holds; empty it"),
    ActionSpec("find_similar", "Find &similar photos", "Ctrl+Shift+F",
               "Order the gallery by how alike the model finds each photo to the selected one"),
    ActionSpec("find_duplicates", "Find &duplicates…", "Ctrl+Shift+D",
               "Groups of listed photos that are one picture (copies, resized, re-encoded, lightly cropped); "
               "keep one of each and move the others to the trash"),
    ActionSpec("photo_map", "&Map of the photos…", "Ctrl+Shift+P",
               "Every listed photo placed by its features, alike photos near each other; lasso some to label, "
               "copy or select them"),
    ActionSpec("shortcuts", "&Keyboard shortcuts", _K.HelpContents),
    ActionSpec("files", "&Where files live"),
    ActionSpec("about", "&About vit-desktop"),
    ActionSpec("download_default", "Download ViT-B/16"),
)

#: (menu title, action names; "-" is a separator). The Model menu is built by ``model_menu``.
MENUS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("&File", ("open", "open_folder", "paste", "samples", "-", "export", "export_overlay", "overlay_caption",
               "copy_classes",
               "export_model", "write_keywords", "-",
               "reclassify", "clear", "quit")),
    ("&Edit", ("undo_remove", "-", "copy", "paste", "select_all", "remove", "-", "cancel")),
    ("&View", ("overlay", "next_map", "class_maps_in_runs", "-", "fit", "zoom_in", "zoom_out")),
    ("&Model", ()),
    ("&Tools", ("finetune", "library", "-", "find_similar", "find_duplicates", "photo_map")),
    ("&Help", ("shortcuts", "files", "-", "about")),
)


@dataclass(frozen=True)
class Actions:
    open: QAction
    open_folder: QAction
    paste: QAction
    samples: QAction
    export: QAction
    export_overlay: QAction
    overlay_caption: QAction
    copy_classes: QAction
    export_model: QAction
    write_keywords: QAction
    clear: QAction
    reclassify: QAction
    quit: QAction
    copy: QAction
    select_all: QAction
    remove: QAction
    undo_remove: QAction
    cancel: QAction
    overlay: QAction
    next_map: QAction
    class_maps_in_runs: QAction
    fit: QAction
    zoom_in: QAction
    zoom_out: QAction
    open_weights: QAction
    open_model_folder: QAction
    reload_models: QAction
    finetune: QAction
    library: QAction
    find_similar: QAction
    find_duplicates: QAction
    photo_map: QAction
    shortcuts: QAction
    files: QAction
    about: QAction
    download_default: QAction


def build_actions(window: QWidget, handlers: Mapping[str, Callable[[], object]]) -> Actions:
    """One QAction per :data:`ACTIONS` entry, triggering ``handlers[name]``."""
    made: dict[str, QAction] = {}
    for spec in ACTIONS:
        act = QAction(spec.text, window)
        if spec.shortcut is not None:
            act.setShortcut(QKeySequence(spec.shortcut))
        if spec.tip:
            act.setStatusTip(spec.tip)
        if spec.app_wide:
            act.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        act.setCheckable(spec.checkable)
        act.triggered.connect(handlers[spec.name])
        window.addAction(act)  # shortcuts work even while menus are closed
        made[spec.name] = act
    missing = {f.name for f in fields(Actions)} ^ set(made)
    if missing:
        raise ValueError(f"actions and their specs disagree: {sorted(missing)}")
    return Actions(**made)


def build_menus(bar: QMenuBar, actions: Actions) -> dict[str, QMenu]:
    """The menu bar from :data:`MENUS`; returns the menus by title (without the ``&``)."""
    menus: dict[str, QMenu] = {}
    for title, names in MENUS:
        menu = bar.addMenu(title)
        for name in names:
            if name == "-":
                menu.addSeparator()
            else:
                menu.addAction(getattr(actions, name))
        menus[title.replace("&", "")] = menu
    return menus


__all__ = ["ACTIONS", "MENUS", "ActionSpec", "Actions", "build_actions", "build_menus"]
