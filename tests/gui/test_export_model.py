"""File ▸ Export model as ONNX…: the model in use, exported off the compute thread and checked."""

from __future__ import annotations

import json

import pytest

from tests.support import WAIT_MS as RUN_MS
from tests.support import load, write_image

pytest.importorskip("onnxruntime")


def test_export_the_model_in_use(qtbot, make_window, model_a, tmp_path) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    photos = [str(write_image(tmp_path / f"p{i}.png", seed=i)) for i in range(2)]
    dest = tmp_path / "out" / "alpha.onnx"
    with qtbot.waitSignal(w.exporter.model_exported, timeout=RUN_MS) as exported:
        w.exporter.export_model(w.controller, dest, photos)
    report = exported.args[0]
    assert report.path == dest and dest.is_file() and report.photos == 2
    assert json.loads(dest.with_suffix(".json").read_text(encoding="utf-8"))["labels"] == ["apple", "pear", "plum"]
    assert w.run_status.status_label.text().startswith("Model exported: alpha.onnx")


def test_export_without_a_model_or_the_extra_says_what_to_do(qtbot, make_window, model_a, monkeypatch) -> None:
    from vit_desktop.core.models import onnx as onnx_export

    w = make_window()
    w.commands.export_model.trigger()
    assert "Load a model first" in w.message_bar.label.text()
    load(qtbot, w, model_a)
    monkeypatch.setattr(onnx_export, "missing_modules", lambda: ["onnxruntime"])
    w.commands.export_model.trigger()
    assert "pip install 'vit-desktop[export]'" in w.message_bar.label.text()
