"""Similar photos and duplicates of folders: prints from the library or computed, photos never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import FEWSHOT, edited_copies, scene
from vit_desktop.core.inference.loading import choose_model
from vit_desktop.core.inference.lookalikes import (
    FEATURES,
    HASHING,
    PrintsProgress,
    PrintsRun,
    find_duplicates,
    find_similar,
    run_to_end,
)
from vit_desktop.core.library.store import Library


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """An original, its edited copies, and other photos, in one folder (with a file that is no photo)."""
    folder = tmp_path / "album"
    folder.mkdir()
    original = scene((640, 480), seed=31)
    original.save(folder / "original.jpg", quality=95)
    edited_copies(original, folder, seed=31)
    for seed in (41, 42, 43):
        scene((400, 300), seed=seed).save(folder / f"other{seed}.png")
    (folder / "broken.jpg").write_bytes(b"not a photo")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_a_second_run_reads_every_print_from_the_library(album: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    before = snapshot(album)
    runs = []
    for _ in range(2):
        library = Library.open(tmp_path / "data")
        choice = choose_model(str(tiny_model_file), device="cpu", library=library)
        stages: list[str] = []

        def record(s: PrintsProgress, seen: list[str] = stages) -> None:
            seen.append(s.stage)

        groups, run = find_duplicates(choice, [album], library=library, progress=record)
        assert library is not None
        library.close()
        runs.append((groups, run, choice, stages))
    (first, run1, _, stages1), (second, run2, choice2, _) = runs
    assert (run1.hashed, run1.hashes_from_library, run1.classified, run1.features_from_library) == (11, 0, 11, 0)
    assert (run2.hashed, run2.hashes_from_library, run2.classified, run2.features_from_library) == (0, 11, 0, 11)
    assert not choice2.loaded  # the model was never loaded: nothing had to be computed
    assert stages1[0] == HASHING and stages1[-1] == FEATURES
    assert first == second and len(first) == 1 and len(first[0].paths) == 8
    assert first[0].paths[0] == str(album / "original.jpg")
    assert list(run1.unreadable) == [str(album / "broken.jpg")]
    # Nothing was written to the folder, moved, deleted or touched.
    assert snapshot(album) == before


def test_a_changed_photo_is_hashed_and_classified_again(album: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    library = Library.open(tmp_path / "data")
    choice = choose_model(str(tiny_model_file), device="cpu", library=library)
    run_to_end(PrintsRun([album], model=choice, hashes=True, library=library))
    scene((400, 300), seed=99).save(album / "other41.png")
    run = PrintsRun([album], model=choice, hashes=True, library=library)
    run_to_end(run)
    assert (run.hashed, run.classified, run.hashes_from_library, run.features_from_library) == (1, 1, 10, 10)
    assert library is not None
    library.close()


def test_answers_kept_without_features_are_classified_for_them(album: Path, tiny_model_file: Path,
                                                                 tmp_path: Path) -> None:
    from vit_desktop.core.inference.options import ClassifyOptions
    from vit_desktop.core.inference.runs import FolderRun

    library = Library.open(tmp_path / "data")
    assert library is not None
    choice = choose_model(str(tiny_model_file), device="cpu", library=library)
    keys = choice.keys
    assert keys is not None
    # Answers only, as a class-map run keeps them.
    results = [r for step in FolderRun(choice, [album], ClassifyOptions()).steps() for r in step.results if r.ok]
    from vit_desktop.core.library.keys import FileStamp

    library.save([(s, r) for r in results if (s := FileStamp.of(r.path)) is not None], model=keys.model,
                 backbone=None)
    run = PrintsRun([album], model=choice, hashes=False, library=library)
    prints = run_to_end(run)
    assert run.classified == 11 and len(prints) == 11
    assert prints.features is not None and (prints.features != 0).any(axis=1).all()
    library.close()


def test_similar_ranks_a_resized_copy_first(tmp_path: Path, tiny_model_file: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    original = scene((640, 480), seed=51)
    photo = tmp_path / "photo.jpg"  # outside the folder searched
    original.save(photo, quality=95)
    original.resize((320, 240)).save(folder / "small copy.jpg", quality=85)
    for seed in range(52, 58):
        scene((640, 480), seed=seed).save(folder / f"other{seed}.jpg", quality=90)
    choice = choose_model(str(tiny_model_file), device="cpu")
    answer, run = find_similar(choice, photo, [folder], top_k=3)
    assert answer.photo == str(photo)
    assert [n.path for n in answer.neighbours][0] == str(folder / "small copy.jpg")
    assert len(answer.neighbours) == 3 and answer.neighbours[0].score > 0.95
    # Inside the folder (spelled another way), it is listed once and not its own neighbour.
    inside = folder / "photo.jpg"
    os.replace(photo, inside)
    answer, run = find_similar(choice, str(folder / ".." / "folder" / "photo.jpg"), [folder], top_k=20)
    assert answer.photo == str(inside) and run.repeated == 0
    assert str(inside) not in [n.path for n in answer.neighbours] and len(answer.neighbours) == 7


def test_similar_ranks_photos_of_the_same_category_first(deit_path: Path) -> None:
    instruments = FEWSHOT / "musical instrument"
    if not instruments.is_dir():
        pytest.skip(f"fewshot-dev not found at {FEWSHOT} (shared data is only on the development machine)")
    # An acoustic guitar against an electric guitar, a violin, and a photo of each other category.
    query = instruments / "n02676566_acoustic_guitar.JPEG"
    kin = [instruments / "n03272010_electric_guitar.JPEG", instruments / "n04536866_violin.JPEG"]
    others = [sorted((FEWSHOT / c).glob("*.JPEG"))[0] for c in ("vehicle", "clothing", "food", "furniture")]
    choice = choose_model(str(deit_path), device="cpu")
    answer, _ = find_similar(choice, query, [*others, *kin], top_k=6)
    assert {n.path for n in answer.neighbours[:2]} == {str(p) for p in kin}, answer.neighbours


@pytest.mark.parametrize(("stage", "after"), [(HASHING, 1), (FEATURES, 1), (FEATURES, 3)])
def test_a_cancelled_run_raises_instead_of_answering_with_half(album: Path, tiny_model_file: Path, stage: str,
                                                               after: int) -> None:
    from vit_desktop.core.errors import Cancelled, CancelToken

    token = CancelToken()
    choice = choose_model(str(tiny_model_file), device="cpu")
    run = PrintsRun([album], model=choice, hashes=True, cancel=token, batch_size=2)
    seen: list[str] = []

    def progress(step) -> None:  # cancels at the stage's first step, or in the middle of classifying
        seen.append(step.stage)
        if seen.count(stage) == after:
            token.cancel()

    with pytest.raises(Cancelled):
        run_to_end(run, progress)
    with pytest.raises(RuntimeError):
        run.prints()
