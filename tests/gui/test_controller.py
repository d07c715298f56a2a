"""The compute-thread controller on its own: tasks, cancel, stale replies, clean shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QThread

from tests.support import write_image
from vit_desktop.core.errors import CancelToken, Failure, FailureKind
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.types import ExplainOptions
from vit_desktop.gui.compute import Controller, LoadedModel
from vit_desktop.gui.jobs import Outcome

MS = 60_000


@pytest.fixture
def controller(qapp) -> Iterator[Controller]:
    c = Controller()
    yield c
    c.shutdown()
    assert c.compute_thread.isFinished()


def test_task_runs_on_the_compute_thread_with_progress(qtbot, controller, model_a) -> None:
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    seen: list[object] = []
    gui_thread = QThread.currentThread()

    def fn(engine, report, cancel: CancelToken) -> object:
        for i in range(3):
            report(i)
        return (engine.card.name, QThread.currentThread() is not gui_thread)

    job = controller.run_task(fn)
    job.progressed.connect(seen.append)
    with qtbot.waitSignal(job.returned, timeout=MS) as blocker:
        pass
    assert blocker.args == [("alpha", True)]
    assert seen == [0, 1, 2]  # every report arrives, and before the value
    assert job.outcome is Outcome.DONE


def test_task_failure_and_cancel_are_reported(qtbot, controller) -> None:
    def boom(engine, report, cancel) -> object:
        raise ValueError("bad settings\nsecond line is not shown")

    job = controller.run_task(boom)
    with qtbot.waitSignal(job.errored, timeout=MS) as blocker:
        pass
    assert blocker.args == [Failure(FailureKind.INTERNAL, "ValueError: bad settings")]
    assert job.outcome is Outcome.FAILED

    started = threading.Event()

    def long_job(engine, report, cancel: CancelToken) -> object:
        started.set()
        while True:  # a training loop checking its token between steps
            cancel.raise_if_cancelled()
            threading.Event().wait(0.005)

    job = controller.run_task(long_job)
    with qtbot.waitSignal(job.finished, timeout=MS) as blocker:
        assert started.wait(10)
        job.cancel()
    assert blocker.args == [Outcome.CANCELLED]  # an outcome, not a message to compare by text


def test_use_module_switches_to_an_in_memory_model(qtbot, controller) -> None:
    import torch

    from vit_desktop.core.models.vit import build_module
    from vit_desktop.core.types import Architecture, ModelCard, Preprocess

    arch = Architecture(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                        num_classes=2)
    card = ModelCard(name="fresh", kind="file", source="memory:fresh", arch=arch, labels=("yes", "no"),
                     preprocess=Preprocess(crop_size=32, resize_size=36))
    torch.manual_seed(0)
    with qtbot.waitSignal(controller.model_changed, timeout=MS) as blocker:
        controller.use_module(build_module(arch), card, "cpu", "fp32")
    loaded = blocker.args[0]
    assert isinstance(loaded, LoadedModel) and loaded.card.name == "fresh"
    assert controller.current_card.labels == ("yes", "no")


def test_only_the_newest_heatmap_is_delivered(qtbot, controller, model_a, tmp_path: Path) -> None:
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    img = write_image(tmp_path / "h.png")
    got: list[int] = []
    jobs = [controller.explain(str(img), ExplainOptions()),
            controller.explain(str(img), ExplainOptions(discard_ratio=0.5)),
            controller.explain(str(img), ExplainOptions(head_fusion="max"))]
    for i, job in enumerate(jobs):
        job.returned.connect(lambda _reply, i=i: got.append(i))
    newest = jobs[-1]
    with qtbot.waitSignal(newest.returned, timeout=MS) as blocker:
        pass
    reply = blocker.args[0]
    assert got == [2]
    assert [j.outcome for j in jobs] == [Outcome.SUPERSEDED, Outcome.SUPERSEDED, Outcome.DONE]
    assert reply.heatmap.head_fusion == "max"


def test_run_without_model_says_what_to_do(qtbot, controller, tmp_path: Path) -> None:
    img = write_image(tmp_path / "n.png")
    job = controller.classify([str(img)], ClassifyOptions())
    with qtbot.waitSignal(job.errored, timeout=MS) as blocker:
        pass
    assert "choose one from the Model menu" in blocker.args[0].message
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
    with qtbot.waitSignal(controller.model_changed, timeout=MS):
        controller.load_model(str(model_a), "cpu", "fp32")
    folder = many_images(300)
    order: list[str] = []
    run = controller.classify([str(folder)], ClassifyOptions(batch_size=1))
    run.finished.connect(lambda *_: order.append("finished"))
    with qtbot.waitSignal(run.progressed, timeout=MS, check_params_cb=lambda p: bool(p.results)) as first:
        pass
    clicked = first.args[0].results[0].path
    explain = controller.explain(clicked, ExplainOptions(discard_ratio=0.2))
    explain.returned.connect(lambda *_: order.append("heatmap"))
    qtbot.waitUntil(lambda: "finished" in order, timeout=MS)
    assert order[0] == "heatmap", "the map waited for the whole run"
    assert not controller.busy
