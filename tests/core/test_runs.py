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


def known_choice(engine: Engine, load, card=None) -> ModelChoice:
    """The model as a run knows it from the library: its card now, its engine loaded on first need."""
    from vit_desktop.core.library.store import KnownCompute

    return ModelChoice(card or engine.card, None, KnownCompute("cpu", "CPU", "fp32", "as asked"), load)


def test_photos_are_decoded_while_a_known_model_loads(engine: Engine, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The first photos are decoded during the model's load (importing torch leaves a core idle),
    and the answers are those of a run whose model was loaded already."""
    import threading

    from vit_desktop.core.models.preprocess import prepare_file as real

    for i in range(5):
        write_image(tmp_path / f"{i}.png", seed=i)
    decoded = threading.Event()

    def prepare(*args, **kw):
        out = real(*args, **kw)
        decoded.set()
        return out

    def load() -> Engine:
        # The load returns once a photo is decoded (or after 10 s, and the assertion below fails).
        loading_saw.append(decoded.wait(10))
        return engine

    loading_saw: list[bool] = []
    monkeypatch.setattr("vit_desktop.core.inference.decoding.prepare_file", prepare)
    options = ClassifyOptions(batch_size=2, keep_probabilities=True)
    known = [r for s in FolderRun(known_choice(engine, load), [tmp_path], options).steps() for r in s.results]
    assert loading_saw == [True]
    loaded = [r for s in FolderRun(ModelChoice.of(engine), [tmp_path], options).steps() for r in s.results]
    assert [r.path for r in known] == [r.path for r in loaded] and len(known) == 5
    for a, b in zip(known, loaded):
        assert a.predictions[0].label == b.predictions[0].label
        assert a.probabilities is not None and b.probabilities is not None
        assert abs(a.probabilities - b.probabilities).max() < 1e-6


def test_photos_decoded_for_a_stale_card_are_decoded_again_and_a_failed_load_stops_the_decoders(
        engine: Engine, tmp_path: Path) -> None:
    """A card from the library that no longer says how the model reads photos does not decide its
    input; a model that fails to load leaves no decoding behind."""
    import threading
    from dataclasses import replace

    from vit_desktop.core.errors import ModelError

    for i in range(3):
        write_image(tmp_path / f"{i}.png", size=(40, 30), seed=i)
    options = ClassifyOptions(keep_probabilities=True)
    loaded = [r for s in FolderRun(ModelChoice.of(engine), [tmp_path], options).steps() for r in s.results]
    stale = replace(engine.card, preprocess=replace(engine.card.preprocess, resize_size=20, crop_size=16))
    again = [r for s in FolderRun(known_choice(engine, lambda: engine, stale), [tmp_path], options).steps()
             for r in s.results]
    for a, b in zip(again, loaded, strict=True):
        assert a.probabilities is not None and b.probabilities is not None
        assert abs(a.probabilities - b.probabilities).max() < 1e-6

    def fails() -> Engine:
        raise ModelError("model.safetensors: truncated")

    with pytest.raises(ModelError, match="truncated"):
        list(FolderRun(known_choice(engine, fails), [tmp_path], options).steps())
    assert not [t for t in threading.enumerate() if t.name.startswith("vit-decode")]


def test_the_collector_runs_again_after_a_model_loads_or_fails_to(tiny_model_file: Path, tmp_path: Path) -> None:
    """Garbage collection is paused while a model loads (torch's import makes objects for good),
    and back on afterwards, whether the load worked or not: a long run keeps freeing memory."""
    import gc

    from vit_desktop.core.errors import ModelError
    from vit_desktop.core.inference.loading import choose_model

    assert gc.isenabled()
    assert choose_model(str(tiny_model_file), device="cpu").loaded
    assert gc.isenabled()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        choose_model(str(bad), device="cpu")
    assert gc.isenabled()


def test_decoding_needs_no_torch(tmp_path: Path) -> None:
    """Photos can be decoded for the model before torch is imported (it is, meanwhile, in a run)."""
    import subprocess
    import sys

    from tests.support import REPO

    photo = write_image(tmp_path / "a.png")
    script = ("import sys\nfrom vit_desktop.core.inference.decoding import Decoding\n"
              "from vit_desktop.core.types import Preprocess\n"
              f"with Decoding([{str(photo)!r}], Preprocess(crop_size=32, resize_size=36), ahead=4) as d:\n"
              "    (path, prepared), = d.take(1)\n"
              "print(prepared.pixels.shape, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(32,", "32,", "3)", "False"]


def test_photos_decoded_before_the_load_are_used_only_for_the_photos_to_classify(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding a first run starts before its model loads is the run's when it decodes the photos
    the run classifies (each photo decoded once), and is stopped otherwise; the answers are the same."""
    import threading

    from vit_desktop.core.inference.decoding import Decoding
    from vit_desktop.core.models import preprocess

    for i in range(5):
        write_image(tmp_path / f"{i}.png", seed=i)
    decoded: list[str] = []

    def counted(path, *args, **kw):
        decoded.append(Path(path).name)
        return preprocess.prepare_file(path, *args, **kw)

    monkeypatch.setattr("vit_desktop.core.inference.decoding.prepare_file", counted)
    options = ClassifyOptions(batch_size=2, keep_probabilities=True)
    plain = [r for s in FolderRun(ModelChoice.of(engine), [tmp_path], options).steps() for r in s.results]
    files = sorted(str(p) for p in tmp_path.iterdir())
    pp = engine.card.preprocess
    for first, expected in ((files, 5), (files[:3], 8)):
        decoded.clear()
        early = Decoding(first, pp, ahead=8)
        if len(first) < len(files):
            early.take(len(first))  # all decoded before the run starts: a count that does not race
        run = FolderRun(ModelChoice.of(engine), [tmp_path], options, decoding=early)
        got = [r for s in run.steps() for r in s.results]
        assert len(decoded) == expected  # the photos of another list are decoded again
        assert [r.path for r in got] == [r.path for r in plain]
        for a, b in zip(got, plain, strict=True):
            assert a.probabilities is not None and b.probabilities is not None
            assert abs(a.probabilities - b.probabilities).max() < 1e-6
    unused = Decoding(files, pp, ahead=8)
    FolderRun(ModelChoice.of(engine), [tmp_path], options, decoding=unused).close()  # a run never started
    assert not [t for t in threading.enumerate() if t.name.startswith("vit-decode")]
