"""How a typed class name is read, and what reading it gives.

The rules :class:`~vit_desktop.core.labels.hierarchy.Hierarchy` applies to names (separators,
plurals, senses written out, edits, the everyday meanings WordNet misses, when two senses are one
meaning) and the answers it gives: :class:`Resolution` for one name, :class:`ResolvedClass` for
one of a list. Plain Python: nothing here knows the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from vit_desktop.core.errors import VitDesktopError

#: "crane.n.05": a WordNet sense written out.
SENSE = re.compile(r"(?P<lemma>.+)\.n\.(?P<sense>\d+)", re.IGNORECASE)
SEPARATORS = re.compile(r"[^0-9a-z]+")

# WordNet's regular noun endings (its "morphy" rules) plus a plain "es", which morphy leaves to
# the exception list but which people use for "tomatoes" and "potatoes".
PLURAL_ENDINGS: tuple[tuple[str, str], ...] = (
    ("ies", "y"),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("es", ""),
    ("s", ""),
)


#: Senses of one word are one meaning when they share base classes, or when their narrowest common
#: group lies at most ``CLOSE_STEPS`` steps above each and holds at most ``CLOSE`` times their classes
#: together. Of the 115 ImageNet words with several senses, this joins cat (cat + big cat: the
#: felines), food (its two senses), catamount, panda, sign, market, printer and substance; it keeps
#: apart crane, ball, plane, toy (plaything or toy dog), house (or theatre), car (or railway car).
CLOSE = 1.25
CLOSE_STEPS = 2

#: Everyday meanings WordNet's senses miss, name -> (synsets, why). Applied only where all of the
#: synsets exist (the packaged ImageNet hierarchy).
EVERYDAY: dict[str, tuple[tuple[str, ...], str]] = {
    "boat": (("vessel.n.02",), "boats and ships alike (WordNet's boat.n.01 is only a small vessel)"),
    "bike": (("bicycle.n.01", "motorcycle.n.01"), "either kind of bike"),
    "bug": (("insect.n.01",), "WordNet's bug.n.01 holds no class of its own"),
    "cow": (("cattle.n.01",), "WordNet's cow.n.01 (the female) holds no class"),
    "cup": (("cup.n.06", "mug.n.04"), "a mug is a cup too"),
    "instrument": (("musical_instrument.n.01",),
                   "alone, an instrument is a musical one (WordNet's first sense holds guns and clocks)"),
    "lamp": (("lamp.n.01", "lamp.n.02"), "table lamps too"),
    "table": (("table.n.02", "table.n.03"), "dining tables too"),
    "train": (("train.n.01", "locomotive.n.01", "car.n.02"),
              "its locomotives and carriages too (WordNet's train.n.01 holds only the bullet train)"),
}

#: A phrase this close to a known name (difflib's ratio) is a typo of it, not words before a noun.
TYPO = 0.9

#: "cat = cat - tiger": the operators of an edited name, after a space ("t-shirt" is one word).
EDIT = re.compile(r"\s+([+-])\s*")
#: A possessive or plural apostrophe at the end of a word: "Grandma's", "dogs'".
POSSESSIVE = re.compile(r"['’](s)?$", re.IGNORECASE)


class ClassNameError(VitDesktopError):
    """A class name that means no ImageNet class or group of classes, or names that clash."""


def name_key(name: str) -> str:
    """The form names are compared in: lower case, every run of other characters one underscore.

    "Musical-Instrument", "musical  instrument" and "musical_instrument" all give
    ``musical_instrument``; so do WordNet's own spellings, whose separators vary ("bow-tie" and
    "bow_tie" are both lemmas of one synset).
    """
    return SEPARATORS.sub("_", name.lower()).strip("_")


@dataclass(frozen=True)
class Node:
    """One synset: its lemmas as WordNet spells them, each lemma's sense number, and its parents."""

    id: str
    lemmas: tuple[str, ...]
    senses: tuple[int, ...]
    parents: tuple[str, ...]
    gloss: str = ""

    @property
    def name(self) -> str:
        """WordNet's usual name for the synset: first lemma, part of speech, sense (``dog.n.01``)."""
        return f"{self.lemmas[0].lower()}.n.{self.senses[0]:02d}"

    @property
    def label(self) -> str:
        """The first lemma as a person reads it: "musical instrument"."""
        return self.lemmas[0].replace("_", " ")


@dataclass(frozen=True)
class Meaning:
    """One thing a name can mean: WordNet senses taken together, and the base classes under them."""

    nodes: tuple[str, ...]
    #: "cat.n.01 + big_cat.n.01".
    display: str
    classes: tuple[int, ...]


@dataclass(frozen=True)
class Resolution:
    """What one name means: the node(s) chosen, their base classes, and why, if there was a choice.

    ``name`` is the name as the classes are labelled: for an edited name ("cat = cat - tiger") the
    part before "=".
    """

    name: str
    nodes: tuple[str, ...]
    display: str
    classes: tuple[int, ...]
    note: str | None = None
    #: The other senses the name could have meant (``crane.n.05``), best first.
    alternatives: tuple[str, ...] = ()
    #: Every meaning it could have, the one taken first (the others can be chosen by context).
    meanings: tuple[Meaning, ...] = ()
    #: Base classes an edit added or took away ("cat = cat - tiger"), sorted.
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()

    def choosing(self, k: int, why: str) -> Resolution:
        """The same name taken in its ``k``-th meaning, saying ``why``."""
        m = self.meanings[k]
        others = tuple(o.display for i, o in enumerate(self.meanings) if i != k)
        return replace(self, nodes=m.nodes, display=m.display, classes=m.classes, alternatives=others,
                       meanings=(m, *(o for i, o in enumerate(self.meanings) if i != k)),
                       note=f"{self.name.strip()!r}: took {m.display} ({len(m.classes)} "
                            f"class{'es' if len(m.classes) != 1 else ''}), {why}; also {', '.join(others)}")


@dataclass(frozen=True)
class ResolvedClass:
    """One of the user's classes: the name as given and the base classes that count for it.

    ``classes`` leaves out what a narrower class of the same list takes: with "animal" and "dog",
    "animal" means an animal other than a dog.
    """

    name: str
    nodes: tuple[str, ...]
    display: str
    classes: tuple[int, ...]
    notes: tuple[str, ...] = ()


def disjoint(resolved: list[Resolution]) -> list[ResolvedClass]:
    """The user's classes from their names' resolutions: each base class counts for the narrowest
    name that holds it (with "animal" and "dog", "animal" keeps the animals other than dogs).

    Two names that mean the same classes, or a name left with nothing of its own, are errors: the
    classifier could never tell them apart.
    """
    for i, a in enumerate(resolved):
        for b in resolved[:i]:
            if a.classes == b.classes:
                raise ClassNameError(f"{b.name.strip()!r} and {a.name.strip()!r} both mean "
                                     f"{_same(a, b)}; keep one of them")
    owner: dict[int, int] = {}
    for i, r in enumerate(resolved):
        for c in r.classes:
            # Narrowest wins; between equally narrow overlapping groups, the one listed first.
            if c not in owner or len(r.classes) < len(resolved[owner[c]].classes):
                owner[c] = i
    out = []
    for i, r in enumerate(resolved):
        own = tuple(c for c in r.classes if owner[c] == i)
        notes = [r.note] if r.note else []
        takers = sorted({owner[c] for c in r.classes if owner[c] != i})
        narrower = [repr(resolved[j].name.strip()) for j in takers
                    if set(resolved[j].classes) <= set(r.classes)]
        if narrower:
            notes.append(f"{r.name.strip()!r} means {r.display} other than {' or '.join(narrower)} "
                         f"({len(own)} of its {len(r.classes)} classes)")
        for j in takers:
            other = resolved[j]
            if not set(other.classes) <= set(r.classes):
                shared = sum(1 for c in r.classes if owner[c] == j)
                notes.append(f"{shared} class{'es' if shared != 1 else ''} under both {r.name.strip()!r} "
                             f"and {other.name.strip()!r} count for {other.name.strip()!r}")
        if not own:
            raise ClassNameError(f"{r.name.strip()!r} has no class of its own: every class under "
                                 f"{r.display} belongs to "
                                 + ", ".join(repr(resolved[j].name.strip()) for j in takers))
        out.append(ResolvedClass(r.name, r.nodes, r.display, own, tuple(notes)))
    return out


def _same(a: Resolution, b: Resolution) -> str:
    return a.display if a.display == b.display else f"the same classes ({a.display}, {b.display})"


__all__ = ["CLOSE", "CLOSE_STEPS", "EDIT", "EVERYDAY", "PLURAL_ENDINGS", "POSSESSIVE", "SENSE", "TYPO",
           "ClassNameError", "Meaning", "Node", "ResolvedClass", "Resolution", "disjoint", "name_key"]
