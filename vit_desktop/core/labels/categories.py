"""The user's own categories by name, over what a base model already knows (zero-shot).

A model whose classes are ImageNet-1k's knows WordNet's groups of them (:mod:`.hierarchy`): "dog"
is the 118 breeds, "musical instrument" 26 classes. A category's score on a photo is the base
model's probability summed over its classes: not renormalised over the categories, so a photo of
none of them scores low everywhere and a threshold marks it "none of these".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.types import ModelCard, Prediction

from .hierarchy import ClassNameError, Hierarchy, ResolvedClass, load_imagenet_hierarchy
from .imagenet import imagenet_classes


def hierarchy_for(card: ModelCard) -> Hierarchy | None:
    """The label hierarchy of a model's classes: ImageNet-1k's for a 1000-class ImageNet model."""
    if card.head is None and card.num_classes == 1000 and card.labels == imagenet_classes():
        return load_imagenet_hierarchy()
    return None


def no_hierarchy_reason(card: ModelCard) -> str:
    """Why named categories cannot be used with ``card``'s model, in one line."""
    return (f"{card.name} has no label hierarchy ({card.num_classes} classes of its own): named "
            "categories need a model with ImageNet-1k's 1000 classes, such as vit_b_16")


def parse_names(text: str) -> list[str]:
    """Category names from a text box or a file: comma- or line-separated; ``#`` starts a comment.

    A name may be edited, one per entry: ``cat = cat - tiger``, ``boat = boat + ship.n.01``
    (:meth:`~vit_desktop.core.labels.hierarchy.Hierarchy.resolve`)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names += [part.strip() for part in re.split(r"[,;]", line)]
    return [n for n in names if n]


@dataclass(frozen=True, eq=False)
class Categories:
    """Named categories, each a set of base classes (disjoint: the narrowest name owns a class)."""

    names: tuple[str, ...]
    #: Per category, the base class indices it sums over, sorted.
    members: tuple[tuple[int, ...], ...]
    #: What each name was taken to mean ("dog.n.01 (118 classes)").
    meanings: tuple[str, ...]
    #: Choices made on the user's behalf (an ambiguous name, a broad name minus a narrow one).
    notes: tuple[str, ...]
    num_base: int

    @classmethod
    def from_names(cls, names: Iterable[str], hierarchy: Hierarchy) -> Categories:
        """Raises :class:`~vit_desktop.core.labels.hierarchy.ClassNameError` with the nearest known names."""
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise ClassNameError("no category names given")
        resolved = hierarchy.resolve_classes(names)
        labels = [r.name.strip() for r in resolved]  # "cat = cat - tiger" is called "cat"
        if len(set(labels)) != len(labels):
            raise ClassNameError("a category name is given twice")
        return cls._of(labels, resolved, hierarchy.num_classes)

    @classmethod
    def _of(cls, names: Sequence[str], resolved: Sequence[ResolvedClass], num_base: int) -> Categories:
        notes = tuple(note for r in resolved for note in r.notes)
        return cls(tuple(names), tuple(tuple(r.classes) for r in resolved),
                   tuple(f"{r.display} ({len(r.classes)} classes)" for r in resolved), notes, num_base)

    def matrix(self) -> np.ndarray:
        """(base classes, categories) float32 0/1."""
        m = np.zeros((self.num_base, len(self.names)), dtype=np.float32)
        for k, members in enumerate(self.members):
            m[list(members), k] = 1.0
        return m

    @functools.cached_property
    def _matrix(self) -> np.ndarray:
        return self.matrix()

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, base classes) probabilities -> (n, categories) masses (each in [0, 1])."""
        out: np.ndarray = np.asarray(probabilities, dtype=np.float32) @ self._matrix
        return out

    def known_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, base classes) probabilities -> (n,) the mass on all the categories together: how much
        of each photo is any of them (the open-set score of named categories)."""
        out: np.ndarray = self.scores(probabilities).sum(axis=1)
        return out

    def predictions(self, probabilities: np.ndarray, top_k: int) -> tuple[Prediction, ...]:
        """One photo's categories, best first: label = the name as given, index = its position."""
        s = self.scores(np.asarray(probabilities)[None, :])[0]
        order = np.argsort(-s, kind="stable")[: max(1, min(top_k, len(self.names)))]
        return tuple(Prediction(self.names[k], int(k), float(s[k])) for k in order)


def resolve_some(names: Sequence[str], hierarchy: Hierarchy, *,
                 evidence: Sequence[Sequence[float] | None] | None = None) -> list[ResolvedClass | None]:
    """Per name, what it means, or None for a name the hierarchy does not know ("class A").

    The names that resolve share base classes as :meth:`Hierarchy.resolve_classes` rules (the
    narrowest name owns a class; an ambiguous one takes the meaning its ``evidence``, the mean
    probabilities of its photos, points to). Names that clash (the same classes: "my mug" and
    "her mug") all count as unknown: the hierarchy cannot tell them apart, their photos must.
    """
    def attempt(idx: Sequence[int]) -> list[ResolvedClass]:
        ev = [evidence[j] for j in idx] if evidence is not None else None
        return hierarchy.resolve_classes([names[j] for j in idx], evidence=ev)

    known: list[int] = []
    clashing: set[int] = set()
    for i in range(len(names)):
        try:
            hierarchy.resolve(names[i])
        except VitDesktopError:
            continue
        try:
            # Each name in turn, with those kept so far.
            attempt([*known, i])
        except VitDesktopError:
            # It means what a name kept already means (or leaves it nothing): neither can stand.
            partners = [j for j in known if _clash(hierarchy, names[j], names[i])]
            clashing.update([i, *partners])
            known = [j for j in known if j not in partners]
            continue
        known.append(i)
    known = [j for j in known if j not in clashing]
    out: list[ResolvedClass | None] = [None] * len(names)
    for i, r in zip(known, attempt(known) if known else []):
        out[i] = r
    return out


def _clash(hierarchy: Hierarchy, a: str, b: str) -> bool:
    try:
        hierarchy.resolve_classes([a, b])
    except VitDesktopError:
        return True
    return False


@dataclass(frozen=True)
class Coverage:
    """What one name covers, as a list a person can tick: the window shows it, and unticking a class
    gives the name line that means the rest (:meth:`line_with`), which the names box, ``--classes``
    and the fine-tune dialog all read."""

    #: What the category is called ("cat" for "cat = cat - tiger").
    name: str
    #: The name line as given.
    line: str
    #: "cat.n.01 + big_cat.n.01 - tiger.n.02".
    meaning: str
    #: The classes it counts now (edits applied), sorted: the ticked ones.
    classes: tuple[int, ...]
    #: The classes to offer: what its words cover before edits, and any added by hand, sorted.
    offered: tuple[int, ...]
    #: Choices made on the user's behalf ("'food' covers food.n.01 + food.n.02: ...").
    notes: tuple[str, ...]
    #: The edit's base: the first term of an edited name, the name itself otherwise.
    base: str

    def ticked(self, index: int) -> bool:
        return index in self.classes

    def line_with(self, classes: Iterable[int], hierarchy: Hierarchy) -> str:
        """The name line that means exactly ``classes``: its base, plus and minus single classes
        ("cat = cat - tiger"); the plain name when nothing is edited."""
        wanted = set(classes)
        if not wanted:
            raise ClassNameError(f"{self.name!r} would cover no class")
        own = set(hierarchy.resolve(self.base).classes)
        if wanted == own and self.base == self.name:
            return self.name
        terms = [f"+ {hierarchy.class_term(c)}" for c in sorted(wanted - own)]
        terms += [f"- {hierarchy.class_term(c)}" for c in sorted(own - wanted)]
        return " ".join([f"{self.name} = {self.base}", *terms])


def coverage(names: Sequence[str], hierarchy: Hierarchy) -> list[Coverage]:
    """Per name line, what it covers and what can be ticked; the names are read together, as
    :meth:`Categories.from_names` reads them (a narrower name owns its classes, context picks senses).

    Raises :class:`~vit_desktop.core.labels.hierarchy.ClassNameError` as
    :meth:`Categories.from_names` does."""
    resolved = hierarchy.resolve_classes(names)
    out = []
    for line, r in zip(names, resolved):
        text = line.strip()
        label, eq, expr = text.partition("=")
        base = re.split(r"\s+[+-]", (expr if eq else text).strip())[0].strip()
        whole = hierarchy.resolve(text)
        if not eq and whole.nodes != r.nodes:
            base = r.display  # the other names chose another sense ("crane.n.05"): edit that one
        own = set(hierarchy.resolve(base).classes)
        out.append(Coverage(r.name.strip(), text, r.display, tuple(r.classes),
                            tuple(sorted(own | set(whole.added))), tuple(r.notes), base))
    return out


__all__ = ["Categories", "Coverage", "coverage", "hierarchy_for", "no_hierarchy_reason", "parse_names",
           "resolve_some"]
