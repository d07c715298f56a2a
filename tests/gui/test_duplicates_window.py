"""Find duplicates in the window: groups side by side, the best copy kept unless chosen otherwise,
and the others moved to the trash only after a confirmation that says how many.

Every test moves files into a trash under tmp_path (HOME and XDG_DATA_HOME point there): the
user's own trash is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QFile
from PySide6.QtWidgets import QMessageBox

from tests.support import WAIT_MS as MS
from tests.support import classify, edited_copies, load, scene


@pytest.fixture
def trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A trash of this test's own; skips where Qt cannot move files to a trash here."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "home").mkdir()
    (tmp_path / "data").mkdir()  # Qt makes the Trash folder in it, not the folder itself
    probe = tmp_path / "probe.txt"
    probe.write_text("probe")
    if not QFile.moveToTrash(str(probe)):
        pytest.skip("QFile.moveToTrash is not supported on this platform (offscreen, no trash)")
    files = tmp_path / "data" / "Trash" / "files"
    assert (files / "probe.txt").is_file(), "the probe must land in the test's own trash"
    (files / "probe.txt").unlink()
    return files


@pytest.fixture
def folder(tmp_path: Path) -> dict[str, Path]:
    """An original photo, two copies of it (half size, re-encoded) and two other photos."""
    root = tmp_path / "photos"
    root.mkdir()
    original = scene((384, 288), seed=0)
    photos = {"original": root / "a-original.png"}
    original.save(photos["original"])
    copies = edited_copies(original, root, "copy")
    for kind, path in copies.items():
        if kind in ("resize50", "reencode"):
            photos[kind] = path
        else:
            path.unlink()
    for i in (1, 2):
        photos[f"other{i}"] = root / f"other{i}.png"
        scene((384, 288), seed=i).save(photos[f"other{i}"])
    return photos


def find(qtbot, w):
    job = w.duplicates.find([r.path for r in w.results_model.results() if r.ok])
    assert job is not None
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    return w.duplicates.dialog


class Boxes:
    """Answers the message boxes the dialog opens, and keeps what they said."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: QMessageBox.StandardButton) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str, str, str]] = []

        def click(box: QMessageBox) -> int:
            self.seen.append((box.windowTitle(), box.text(), box.informativeText(), box.detailedText()))
            button = box.button(self.answer)
            if button is not None:
                button.click()
            return 0

        monkeypatch.setattr(QMessageBox, "exec", click)


def test_the_copies_are_moved_to_the_trash_only_when_confirmed(qtbot, make_window, model_a, folder, trash,
                                                               monkeypatch) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder["original"].parent)
    assert w.commands.find_duplicates.shortcut().toString() == "Ctrl+Shift+D"
    dialog = find(qtbot, w)
    assert dialog is not None and dialog.isVisible()
    # One group, the best copy (most pixels) first and kept.
    original, half, again = (str(folder[k]) for k in ("original", "resize50", "reencode"))
    assert len(dialog.groups) == 1 and set(dialog.groups[0]) == {original, half, again}
    assert dialog.groups[0][0] == original and dialog.kept() == [original]
    assert dialog.move_button.text() == "Move 2 others to the trash…"
    assert "best copy" in dialog._cards[original].facts.text() and "384 × 288" in dialog._cards[original].facts.text()
    assert "1 group of duplicates, 3 photos, among 5" in w.run_status.status_label.text()

    # Cancel: the box said how many, and every file is where it was.
    boxes = Boxes(monkeypatch, QMessageBox.StandardButton.Cancel)
    dialog.move_button.click()
    assert boxes.seen and boxes.seen[0][1] == "Move 2 files to the trash?"
    assert set(boxes.seen[0][3].splitlines()) == {half, again}
    assert all(p.exists() for p in folder.values()) and not any(trash.glob("*"))
    assert w.results_model.rowCount() == 5

    # Keep the half-size copy instead: the original and the re-encoded one go, nothing else.
    dialog.keep(half)
    assert dialog.kept() == [half] and set(dialog.to_move()) == {original, again}
    boxes = Boxes(monkeypatch, QMessageBox.StandardButton.Ok)
    dialog.move_button.click()
    assert [s[1] for s in boxes.seen] == ["Move 2 files to the trash?"]
    assert not folder["original"].exists() and not folder["reencode"].exists()
    assert all(folder[k].exists() for k in ("resize50", "other1", "other2"))
    assert sorted(p.name for p in trash.iterdir()) == sorted([folder["original"].name, folder["reencode"].name])
    # They leave the gallery and the dialog; nothing is left to move.
    assert sorted(Path(r.path).name for r in w.results_model.results()) == ["copy-resize50.jpg", "other1.png",
                                                                            "other2.png"]
    assert dialog.groups == [] and not dialog.move_button.isEnabled()
    assert "Moved 2 files to the trash" in w.run_status.status_label.text()


def test_a_file_that_cannot_be_moved_is_named_and_the_others_are_moved(qtbot, make_window, folder, trash,
                                                                       monkeypatch) -> None:
    w = make_window()  # no model: the hashes alone find resized and re-encoded copies
    assert w.controller.current_model is None
    job = w.duplicates.find([str(p) for p in folder.values()])
    assert job is not None
    with qtbot.waitSignal(job.finished, timeout=MS):
        pass
    dialog = w.duplicates.dialog
    assert dialog is not None and len(dialog.groups) == 1 and dialog.groups[0][0] == str(folder["original"])
    folder["reencode"].unlink()  # gone meanwhile (another program moved it)
    boxes = Boxes(monkeypatch, QMessageBox.StandardButton.Ok)
    dialog.move_button.click()
    title, text, informative, _ = boxes.seen[1]
    assert title == "Some files were not moved" and text.startswith("1 of 2 files could not be moved")
    assert informative == f"{folder['reencode']}: it is no longer there"
    assert [p.name for p in trash.iterdir()] == [folder["resize50"].name]
    assert folder["original"].exists()


def test_no_duplicates_says_so_and_opens_nothing(qtbot, make_window, model_a, folder, trash) -> None:
    w = make_window()
    load(qtbot, w, model_a)
    classify(qtbot, w, folder["original"], folder["other1"], folder["other2"])
    assert find(qtbot, w) is None
    assert "No duplicates among the 3 photos" in w.run_status.status_label.text()
    w.duplicates.find([str(folder["original"])])
    assert "Add photos first" in w.run_status.status_label.text()
