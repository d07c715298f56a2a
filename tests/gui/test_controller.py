"""The compute-thread controller on its own: tasks, cancel, stale replies, clean shutdown."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import QThread

from gui_helpers import write_image
from vit_desktop.core.types import CancelToken, ExplainOptions
from vit_desktop.gui.controller import Controller, LoadedModel
from gui_fixtures import *  # noqa: F401,F403 - pytest fixtures for this module

MS = 60_000


@pytest.fixture
def controller(qapp) -> Iterator[Controller]:
    c = Controller()
    yield c
    c.shutdown()
    assert c.compute_thread.isFinished()


def test_task_runs_on_the_compute_thread_with_progress(qtbot, controller, model_a) -> None:
    with qtbot.waitSignal(controller.model_loaded, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    seen: list[object] = []
    controller.task_progress.connect(lambda _tid, obj: seen.append(obj))
    gui_thread = QThread.currentThread()

    def fn(engine, report, cancel: CancelToken) -> object:
        for i in range(3):
            report(i)
        return (engine.card.name, QThread.currentThread() is not gui_thread)

    with qtbot.waitSignal(controller.task_finished, timeout=MS) as blocker:
        task_id = controller.run_task(fn)
    assert blocker.args == [task_id, ("alpha", True)]
    qtbot.waitUntil(lambda: seen == [0, 1, 2], timeout=MS)


def test_task_failure_and_cancel_are_reported(qtbot, controller) -> None:
    def boom(engine, report, cancel) -> object:
        raise ValueError("bad settings\nsecond line is not shown")

    with qtbot.waitSignal(controller.task_failed, timeout=MS) as blocker:
        tid = controller.run_task(boom)
    assert blocker.args == [tid, "ValueError: bad settings"]

    started = threading.Event()

    def long_job(engine, report, cancel: CancelToken) -> object:
        started.set()
        while True:  # a training loop checking its token between steps
            cancel.raise_if_cancelled()
            threading.Event().wait(0.005)

    with qtbot.waitSignal(controller.task_failed, timeout=MS) as blocker:
        tid = controller.run_task(long_job)
        assert started.wait(10)
        controller.cancel_task(tid)
    assert blocker.args == [tid, "Cancelled."]


def test_use_module_switches_to_an_in_memory_model(qtbot, controller) -> None:
    import torch

    from vit_desktop.core.checkpoints import build_module
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    arch = Architecture(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                        num_classes=2)
    card = ModelCard(name="fresh", kind="file", source="memory:fresh", arch=arch, labels=("yes", "no"),
                     preprocess=Preprocess(crop_size=32, resize_size=36))
    torch.manual_seed(0)
    with qtbot.waitSignal(controller.model_loaded, timeout=MS) as blocker:
        controller.use_module(build_module(arch), card, "cpu", "fp32")
    loaded = blocker.args[0]
    assert isinstance(loaded, LoadedModel) and loaded.card.name == "fresh"
    assert controller.current_card.labels == ("yes", "no")


def test_only_the_newest_heatmap_is_delivered(qtbot, controller, model_a, tmp_path: Path) -> None:
    with qtbot.waitSignal(controller.model_loaded, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    img = write_image(tmp_path / "h.png")
    got: list[int] = []
    controller.heatmap_ready.connect(lambda rid, _reply: got.append(rid))
    controller.request_heatmap(str(img), ExplainOptions())
    controller.request_heatmap(str(img), ExplainOptions(discard_ratio=0.5))
    with qtbot.waitSignal(controller.heatmap_ready, timeout=MS) as blocker:
        newest = controller.request_heatmap(str(img), ExplainOptions(head_fusion="max"))
    reply = blocker.args[1]
    assert blocker.args[0] == newest and got == [newest]
    assert reply.heatmap.head_fusion == "max"


def test_run_without_model_says_what_to_do(qtbot, controller, tmp_path: Path) -> None:
    img = write_image(tmp_path / "n.png")
    with qtbot.waitSignal(controller.failed, timeout=MS) as blocker:
        controller.classify([str(img)])
    assert "choose one from the Model menu" in blocker.args[0]
    qtbot.waitUntil(lambda: not controller.busy, timeout=MS)


def test_shutdown_while_a_task_runs_joins(qtbot, qapp) -> None:
    c = Controller()
    started = threading.Event()

    def spin(engine, report, cancel: CancelToken) -> object:
        started.set()
        while not cancel.cancelled:
            threading.Event().wait(0.005)
        return None

    c.run_task(spin)
    assert started.wait(10)
    c.shutdown()
    assert c.compute_thread.isFinished()


def test_a_heatmap_asked_for_during_a_long_run_comes_before_the_run_ends(
        qtbot, controller, model_a, many_images) -> None:
    with qtbot.waitSignal(controller.model_loaded, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    folder = many_images(300)
    order: list[str] = []
    controller.heatmap_ready.connect(lambda *_: order.append("heatmap"))
    controller.run_finished.connect(lambda *_: order.append("finished"))
    with qtbot.waitSignal(controller.results_ready, timeout=MS) as first:
        run_id = controller.classify([str(folder)], batch_size=1)
    clicked = first.args[1][0].path
    controller.request_heatmap(clicked, ExplainOptions(discard_ratio=0.2))
    qtbot.waitUntil(lambda: "finished" in order, timeout=MS)
    assert order[0] == "heatmap", "the map waited for the whole run"
    assert run_id and not controller.busy
