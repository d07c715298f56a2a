"""A folder run: what the scan could not use comes first, then every photo, batch by batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import tiny_model, write_image
from vit_desktop.core.errors import Cancelled, CancelToken
from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.loading import ModelChoice
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.inference.runs import FolderRun


@pytest.fixture
def engine() -> Engine:
    module, card = tiny_model()
    return Engine.from_module(module, card, device="cpu")


def test_a_run_reports_the_scan_then_each_batch_with_totals(engine: Engine, tmp_path: Path) -> None:
    for name in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        write_image(tmp_path / "photos" / name)
    single = write_image(tmp_path / "elsewhere" / "d.png")
    missing = tmp_path / "gone"
    run = FolderRun(ModelChoice.of(engine), [tmp_path / "photos", single, missing], ClassifyOptions(batch_size=2))
    steps = list(run.steps())
    # First the path that could not be used, then two batches of two and one photo.
    assert [len(s.results) for s in steps] == [1, 2, 2]
    assert steps[0].results[0].path == str(missing) and "no such file" in (steps[0].results[0].error or "")
    assert [(s.done, s.total) for s in steps] == [(1, 5), (3, 5), (5, 5)]
    classified = [r.path for s in steps[1:] for r in s.results]
    assert all(r.ok for s in steps[1:] for r in s.results)
    # Each photo knows where it sits under the path it was found in (heatmaps mirror that).
    assert [run.relative_path(p).as_posix() for p in classified] == ["a.png", "sub/b.png", "sub/deeper/c.png", "d.png"]


def test_the_same_options_reach_the_engine_unchanged(engine: Engine, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    run = FolderRun(ModelChoice.of(engine), [tmp_path], ClassifyOptions(top_k=2, threshold=1.01, keep_probabilities=True))
    (result,) = [r for s in run.steps() for r in s.results]
    assert len(result.predictions) == 2 and result.uncertain
    assert result.probabilities is not None and result.probabilities.shape == (3,)


def test_cancelled_during_the_scan_raises_and_a_nan_threshold_is_refused(engine: Engine, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        FolderRun(ModelChoice.of(engine), [tmp_path], ClassifyOptions(), cancel=token)
    with pytest.raises(ValueError, match="threshold"):
        ClassifyOptions(threshold=float("nan"))
