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
    """Category names from a text box or a file: comma- or line-separated; ``#`` starts a comment."""
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
        if len(set(names)) != len(names):
            raise ClassNameError("a category name is given twice")
        resolved = hierarchy.resolve_classes(names)
        return cls._of(names, resolved, hierarchy.num_classes)

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

    def predictions(self, probabilities: np.ndarray, top_k: int) -> tuple[Prediction, ...]:
        """One photo's categories, best first: label = the name as given, index = its position."""
        s = self.scores(np.asarray(probabilities)[None, :])[0]
        order = np.argsort(-s, kind="stable")[: max(1, min(top_k, len(self.names)))]
        return tuple(Prediction(self.names[k], int(k), float(s[k])) for k in order)


def resolve_some(names: Sequence[str], hierarchy: Hierarchy) -> list[ResolvedClass | None]:
    """Per name, what it means, or None for a name the hierarchy does not know ("my cat").

    The names that resolve share base classes as :meth:`Hierarchy.resolve_classes` rules (the
    narrowest name owns a class); a name that clashes with another (the same classes) counts as
    unknown, so that photos can still teach it.
    """
    known: list[int] = []
    resolved: list[ResolvedClass] = []
    for i in range(len(names)):
        try:
            # Each name in turn, with those kept so far: one that clashes with them is left out.
            resolved = hierarchy.resolve_classes([names[j] for j in [*known, i]])
        except VitDesktopError:
            continue
        known.append(i)
    out: list[ResolvedClass | None] = [None] * len(names)
    for i, r in zip(known, resolved if known else []):
        out[i] = r
    return out


__all__ = ["Categories", "hierarchy_for", "no_hierarchy_reason", "parse_names", "resolve_some"]
