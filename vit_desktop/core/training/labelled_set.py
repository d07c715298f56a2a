"""A labelled photo set for fine-tuning: classes, (photo, class) pairs, a small project file.

The set is immutable; editing operations (add a class, rename it, move photos into it) return a
new set, so the GUI can hand a snapshot to the compute thread without locks.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from vit_desktop.core.errors import CancelToken, VitDesktopError
from vit_desktop.core.files import atomic_write_text

T = TypeVar("T")

PROJECT_FORMAT = "vit-desktop-labels"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".vitlabels.json"

#: Fraction of each class held out for validation when the user does not choose one.
AUTO_VAL_FRACTION = 0.2
#: Above this many images per class the automatic split holds out no more than this many: large
#: classes need a fixed-size estimate, not a fixed share (Create ML does the same).
AUTO_VAL_CAP = 100


@dataclass(frozen=True)
class LabelledSet:
    """Classes in display order and (photo path, class name) items.

    Every item's class is one of ``classes``; a class may be empty while the user is labelling.
    """

    classes: tuple[str, ...] = ()
    items: tuple[tuple[Path, str], ...] = ()
    #: Files that could not be found or read while building the set: (path, reason).
    problems: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise VitDesktopError("class names must be unique")
        known = set(self.classes)
        for _, name in self.items:
            if name not in known:
                raise VitDesktopError(f"photo labelled with unknown class {name!r}")

    # ---------------------------------------------------------------------------------------
    # Building

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], *, cancel: CancelToken | None = None) -> LabelledSet:
        """One subfolder per class (sorted by name); images found recursively inside each."""
        from vit_desktop.core.io.scan import scan

        root = Path(folder)
        if not root.is_dir():
            raise VitDesktopError(f"{root}: not a folder")
        subdirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
        if not subdirs:
            raise VitDesktopError(f"{root}: no class subfolders (put each class's photos in its own subfolder)")
        items: list[tuple[Path, str]] = []
        problems: list[tuple[str, str]] = []
        for sub in subdirs:
            found = scan([sub], cancel=cancel)
            items.extend((p, sub.name) for p in found.files)
            problems.extend(found.errors)
        return cls(tuple(p.name for p in subdirs), tuple(items), tuple(problems))

    def with_class(self, name: str) -> LabelledSet:
        name = _check_name(name)
        if name in self.classes:
            raise VitDesktopError(f"a class named {name!r} already exists")
        return LabelledSet((*self.classes, name), self.items, self.problems)

    def renamed(self, old: str, new: str) -> LabelledSet:
        new = _check_name(new)
        if old not in self.classes:
            raise VitDesktopError(f"no class named {old!r}")
        if new != old and new in self.classes:
            raise VitDesktopError(f"a class named {new!r} already exists")
        classes = tuple(new if c == old else c for c in self.classes)
        items = tuple((p, new if c == old else c) for p, c in self.items)
        return LabelledSet(classes, items, self.problems)

    def without_class(self, name: str) -> LabelledSet:
        """Drop a class and the photos labelled with it (the files themselves are untouched)."""
        return LabelledSet(
            tuple(c for c in self.classes if c != name),
            tuple((p, c) for p, c in self.items if c != name),
            self.problems,
        )

    def with_items(self, paths: Iterable[str | os.PathLike[str]], name: str) -> LabelledSet:
        """Label ``paths`` as ``name``; a photo already in the set moves to this class."""
        if name not in self.classes:
            raise VitDesktopError(f"no class named {name!r}")
        new = [Path(p) for p in paths]
        moved = {_key(p) for p in new}
        kept = [(p, c) for p, c in self.items if _key(p) not in moved]
        seen: set[str] = set()
        added = []
        for p in new:
            if _key(p) not in seen:
                seen.add(_key(p))
                added.append((p, name))
        return LabelledSet(self.classes, (*kept, *added), self.problems)

    def without_items(self, paths: Iterable[str | os.PathLike[str]]) -> LabelledSet:
        gone = {_key(Path(p)) for p in paths}
        return LabelledSet(self.classes, tuple((p, c) for p, c in self.items if _key(p) not in gone), self.problems)

    # ---------------------------------------------------------------------------------------
    # Inspecting

    def counts(self) -> dict[str, int]:
        """Photos per class, in class order (empty classes included)."""
        c = Counter(name for _, name in self.items)
        return {name: c.get(name, 0) for name in self.classes}

    def paths_of(self, name: str) -> list[Path]:
        return [p for p, c in self.items if c == name]

    def targets(self) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[c] for _, c in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def validate(self, *, named: Collection[str] = ()) -> None:
        """Raise VitDesktopError with a one-line reason when this set cannot be trained on.

        Classes in ``named`` have a name the base model knows (a prior): they may have fewer
        photos, even none.
        """
        if len(self.classes) < 2:
            raise VitDesktopError(f"need at least two classes to train (found {len(self.classes)})")
        for name, n in self.counts().items():
            if n < 2 and name not in named:
                noun = "image" if n == 1 else "images"
                raise VitDesktopError(f"class {name!r} has {n} {noun}; each class needs at least 2")

    # ---------------------------------------------------------------------------------------
    # Splitting

    def split(self, val_fraction: float | None = None, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
        """Stratified (train, validation) split, reproducible for a given ``seed`` (see :func:`stratified_split`)."""
        self.validate()
        members = [sorted(((p, c) for p, c in self.items if c == name), key=lambda it: str(it[0]))
                   for name in self.classes]
        train, val = stratified_split(members, val_fraction, seed)
        return LabelledSet(self.classes, tuple(train)), LabelledSet(self.classes, tuple(val))

    # ---------------------------------------------------------------------------------------
    # Project file

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the set as JSON (paths relative to the file where possible), atomically."""
        path = Path(path)
        base = Path(os.path.abspath(path)).parent
        doc = {
            "format": PROJECT_FORMAT,
            "version": PROJECT_VERSION,
            "classes": list(self.classes),
            "items": [{"path": _portable(p, base), "class": c} for p, c in self.items],
        }
        text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
        atomic_write_text(path, text, overwrite=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[LabelledSet, list[str]]:
        """Read a project file; returns the set of photos that exist and the paths that are missing.

        Missing photos are left out (and reported) rather than failing the whole project.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise VitDesktopError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
        except ValueError:
            raise VitDesktopError(f"{path.name}: not a label project (invalid JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != PROJECT_FORMAT:
            raise VitDesktopError(f"{path.name}: not a label project")
        version = doc.get("version")
        if not isinstance(version, int) or version > PROJECT_VERSION:
            raise VitDesktopError(f"{path.name}: made by a newer vit-desktop (version {version}); please update")
        try:
            classes = tuple(str(c) for c in doc["classes"])
            raw_items = [(str(it["path"]), str(it["class"])) for it in doc["items"]]
        except (KeyError, TypeError):
            raise VitDesktopError(f"{path.name}: malformed label project") from None
        base = Path(os.path.abspath(path)).parent
        items: list[tuple[Path, str]] = []
        missing: list[str] = []
        for raw, name in raw_items:
            p = Path(raw)
            p = p if p.is_absolute() else base / p
            if name not in classes:
                missing.append(f"{p} (unknown class {name!r})")
            elif p.is_file():
                items.append((p, name))
            else:
                missing.append(str(p))
        return cls(classes, tuple(items), tuple((m, "missing") for m in missing)), missing


def val_count(n: int, val_fraction: float | None) -> int:
    """How many of a class's ``n`` photos a split holds out: at least 1, and 1 stays for training.

    ``None`` is the automatic size: 20 % of the class, at most ``AUTO_VAL_CAP``.
    """
    if val_fraction is None:
        n_val = min(AUTO_VAL_CAP, max(1, round(n * AUTO_VAL_FRACTION)))
    else:
        n_val = max(1, int(math.floor(n * val_fraction + 0.5)))
    return min(n_val, n - 1)


def stratified_split(
    members: Sequence[Sequence[T]], val_fraction: float | None = None, seed: int = 0
) -> tuple[list[T], list[T]]:
    """The one stratified split: ``members[c]`` are class ``c``'s items, in a stable order.

    Each class is shuffled (by one ``random.Random(seed)``, classes in order) and its first
    :func:`val_count` items go to validation. Every class needs at least two items.
    """
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise VitDesktopError(f"validation fraction must be between 0 and 1 (got {val_fraction})")
    rng = random.Random(seed)
    train: list[T] = []
    val: list[T] = []
    for c, group in enumerate(members):
        if len(group) < 2:
            noun = "image" if len(group) == 1 else "images"
            raise VitDesktopError(f"class {c} has {len(group)} {noun}; each class needs at least 2")
        order = list(group)
        rng.shuffle(order)
        n_val = val_count(len(order), val_fraction)
        val.extend(order[:n_val])
        train.extend(order[n_val:])
    return train, val


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise VitDesktopError("a class name cannot be empty")
    return name


def _key(p: Path) -> str:
    return os.path.normcase(os.path.abspath(p))


def _portable(p: Path, base: Path) -> str:
    """Relative to the project file when the photo lives beside or below it, else absolute."""
    absolute = Path(os.path.abspath(p))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


__all__: Sequence[str] = ("AUTO_VAL_FRACTION", "LabelledSet", "PROJECT_SUFFIX", "stratified_split", "val_count")
