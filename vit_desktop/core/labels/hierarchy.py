"""The ImageNet-1k label hierarchy: which base classes a name like "dog" or "musical instrument" covers.

ImageNet-1k's classes are WordNet 3.0 noun synsets, so WordNet's hypernym graph groups them: the
probability that a photo shows "a dog" is the sum of the base model's probabilities over the 118
breeds under dog.n.01. This module knows that graph and turns the names a person types into sets
of base class indices; it does no arithmetic on probabilities itself.

Names are matched the way people type them: case, spaces, hyphens and underscores do not matter,
plurals find their singular ("geese", "musical instruments"), any synonym of a synset finds it,
and ``crane.n.05`` or ``n02012849`` name a sense exactly. A name with several senses takes the one
that covers the most base classes and says so in a note.

Plain Python and the standard library only: the command line, the GUI and the tests use it without
loading a model.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import importlib.resources
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vit_desktop.core.errors import VitDesktopError

#: The packaged hierarchy, written by ``resources/make_hierarchy.py``.
DATA_FILE = "wordnet/imagenet1k_hierarchy.json.gz"
_FORMAT = 1

_SENSE = re.compile(r"(?P<lemma>.+)\.n\.(?P<sense>\d+)", re.IGNORECASE)
_SEPARATORS = re.compile(r"[^0-9a-z]+")

# WordNet's regular noun endings (its "morphy" rules) plus a plain "es", which morphy leaves to
# the exception list but which people use for "tomatoes" and "potatoes".
_PLURAL_ENDINGS: tuple[tuple[str, str], ...] = (
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


class ClassNameError(VitDesktopError):
    """A class name that means no ImageNet class or group of classes, or names that clash."""


def name_key(name: str) -> str:
    """The form names are compared in: lower case, every run of other characters one underscore.

    "Musical-Instrument", "musical  instrument" and "musical_instrument" all give
    ``musical_instrument``; so do WordNet's own spellings, whose separators vary ("bow-tie" and
    "bow_tie" are both lemmas of one synset).
    """
    return _SEPARATORS.sub("_", name.lower()).strip("_")


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
class Resolution:
    """What one name means: the node(s) chosen, their base classes, and why, if there was a choice."""

    name: str
    nodes: tuple[str, ...]
    display: str
    classes: tuple[int, ...]
    note: str | None = None
    #: The other senses the name could have meant (``crane.n.05``), best first.
    alternatives: tuple[str, ...] = ()


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


class Hierarchy:
    """Base classes (the model's output indices) and the graph of groups above them.

    ``classes[i]`` is the node id of base class ``i``; ``nodes`` holds every node, classes
    included, and every parent named must be among them. Node ids are opaque strings (wnids for
    the real data).
    """

    def __init__(self, classes: Sequence[str], nodes: Mapping[str, Node],
                 plurals: Mapping[str, str] | None = None) -> None:
        self._classes = tuple(classes)
        self._nodes = dict(nodes)
        self._plurals = {name_key(p): name_key(s) for p, s in (plurals or {}).items()}
        self._class_index = {node_id: i for i, node_id in enumerate(self._classes)}
        if len(self._class_index) != len(self._classes):
            raise ValueError("a node is listed twice among the classes")
        for node_id in self._classes:
            if node_id not in self._nodes:
                raise ValueError(f"class {node_id!r} is not among the nodes")
        for node in self._nodes.values():
            if len(node.lemmas) != len(node.senses) or not node.lemmas:
                raise ValueError(f"node {node.id!r} needs one sense number per lemma, and a lemma")
            for parent in node.parents:
                if parent not in self._nodes:
                    raise ValueError(f"node {node.id!r} has an unknown parent {parent!r}")
        self._under = self._compute_under()
        # name key -> [(sense, node id)], one entry per node (spellings that differ only in their
        # separators collapse to one key; keep the node's lowest sense for it).
        senses: dict[str, dict[str, int]] = {}
        for node in self._nodes.values():
            for lemma, sense in zip(node.lemmas, node.senses):
                by_node = senses.setdefault(name_key(lemma), {})
                by_node[node.id] = min(sense, by_node.get(node.id, sense))
        self._by_key = {key: sorted((s, n) for n, s in by_node.items()) for key, by_node in senses.items()}
        # Suggestions only offer names that would work.
        self._known_keys = sorted(k for k, entries in self._by_key.items()
                                  if any(self._under[n] for _, n in entries))

    def _compute_under(self) -> dict[str, tuple[int, ...]]:
        children: dict[str, list[str]] = {node_id: [] for node_id in self._nodes}
        for node in self._nodes.values():
            for parent in node.parents:
                children[parent].append(node.id)
        under: dict[str, frozenset[int]] = {}
        visiting: set[str] = set()

        def collect(node_id: str) -> frozenset[int]:
            # Iterating would be faster to read in a profiler, but WordNet is ~20 levels deep,
            # far inside Python's recursion limit.
            if node_id in under:
                return under[node_id]
            if node_id in visiting:
                raise ValueError(f"the hierarchy has a cycle through {node_id!r}")
            visiting.add(node_id)
            found: set[int] = set()
            if node_id in self._class_index:
                found.add(self._class_index[node_id])
            for child in children[node_id]:
                found |= collect(child)
            visiting.discard(node_id)
            under[node_id] = frozenset(found)
            return under[node_id]

        return {node_id: tuple(sorted(collect(node_id))) for node_id in self._nodes}

    # ---------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_edges(cls, classes: Sequence[str], nodes: Mapping[str, tuple[Sequence[str], Sequence[str]]],
                   *, glosses: Mapping[str, str] | None = None,
                   plurals: Mapping[str, str] | None = None) -> Hierarchy:
        """A hierarchy from plain data: ``nodes[id] = (lemmas, parent ids)``, classes in index order.

        Sense numbers follow WordNet's rule with the mapping's order standing in for index.noun's:
        the first node listing a lemma is its sense 1, the next its sense 2.
        """
        counters: dict[str, int] = {}
        built: dict[str, Node] = {}
        for node_id, (lemmas, parents) in nodes.items():
            senses = []
            for lemma in lemmas:
                counters[lemma.lower()] = counters.get(lemma.lower(), 0) + 1
                senses.append(counters[lemma.lower()])
            built[node_id] = Node(node_id, tuple(lemmas), tuple(senses), tuple(parents),
                                  (glosses or {}).get(node_id, ""))
        return cls(classes, built, plurals)

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> Hierarchy:
        """A hierarchy from the packaged file's JSON (see ``resources/make_hierarchy.py``)."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"hierarchy data format {data.get('format')!r}; this version reads {_FORMAT}")
        raw_nodes = data["nodes"]
        assert isinstance(raw_nodes, dict)
        nodes = {
            node_id: Node(node_id, tuple(str(lemma) for lemma, _ in raw["lemmas"]),
                          tuple(int(sense) for _, sense in raw["lemmas"]), tuple(raw["parents"]),
                          str(raw.get("gloss", "")))
            for node_id, raw in raw_nodes.items()
        }
        classes = data["classes"]
        plurals = data.get("plurals", {})
        assert isinstance(classes, list) and isinstance(plurals, dict)
        return cls(classes, nodes, plurals)

    # ---------------------------------------------------------------------------------------
    # The graph

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def node_ids(self) -> tuple[str, ...]:
        """Every node id, classes included, sorted (for building matrices over the nodes)."""
        return tuple(sorted(self._nodes))

    def class_node(self, index: int) -> str:
        """The node id of base class ``index`` (its wnid for the real data)."""
        return self._classes[index]

    def node(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in the hierarchy") from None

    def node_name(self, node_id: str) -> str:
        """``dog.n.01`` for the node ``n02084071``."""
        return self.node(node_id).name

    def classes_under(self, node_id: str) -> tuple[int, ...]:
        """The base class indices at or below a node, sorted; a class's own node holds itself."""
        self.node(node_id)
        return self._under[node_id]

    def ancestors(self, node: str | int) -> tuple[str, ...]:
        """A node (or base class index) and every node above it, narrowest first.

        "Narrowest" is fewest base classes under the node, so the list runs from the class up
        to the root whatever path WordNet's multiple parents take; ties go by id so the order is
        the same on every run.
        """
        start = self._classes[node] if isinstance(node, int) else node
        self.node(start)
        seen = {start}
        todo = [start]
        while todo:
            for parent in self._nodes[todo.pop()].parents:
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return tuple(sorted(seen, key=lambda n: (len(self._under[n]), n)))

    # ---------------------------------------------------------------------------------------
    # Names

    def resolve(self, name: str) -> Resolution:
        """What the name means; :class:`ClassNameError` when it means no group of base classes."""
        text = name.strip()
        if not text:
            raise ClassNameError("a class name is empty")
        for candidate in (text, text.lower()):
            if candidate in self._nodes:
                return self._resolution(name, candidate, None, ())
        match = _SENSE.fullmatch(text)
        if match:
            return self._resolve_sense(name, name_key(match["lemma"]), int(match["sense"]))
        key = name_key(text)
        useful = [(s, n, form) for s, n, form in self._entries(key) if self._under[n]]
        if not useful:
            raise ClassNameError(f"no ImageNet class or group is called {text!r}{self._suggest(key)}")
        # Most base classes first: for a classifier the broad sense is the useful one ("food" as
        # solid food covers the fruit and vegetables, not only prepared dishes); then WordNet's
        # sense order, which puts the commoner sense first.
        ranked = sorted(useful, key=lambda e: (-len(self._under[e[1]]), e[0], e[1]))
        # Notes name each sense the way it can be typed to pick it: "crane.n.05".
        labels = [f"{form}.n.{sense:02d}" for sense, _, form in ranked]
        note = None
        if len(ranked) > 1:
            note = (f"{text!r} has {len(ranked)} senses; took {self._describe(labels[0], ranked[0][1])}; "
                    "also " + ", ".join(self._describe(lb, n) for lb, (_, n, _) in zip(labels[1:], ranked[1:])))
        return self._resolution(name, ranked[0][1], note, tuple(labels[1:]))

    def _entries(self, key: str) -> list[tuple[int, str, str]]:
        """(sense, node, lemma key) for a name key; its singular when the name itself is no lemma."""
        if key in self._by_key:
            return [(s, n, key) for s, n in self._by_key[key]]
        head, _, last = key.rpartition("_")
        prefix = head + "_" if head else ""
        forms = []
        if key in self._plurals:
            forms.append(self._plurals[key])
        if last in self._plurals:  # "snow geese": the irregular plural is the last word
            forms.append(prefix + self._plurals[last])
        for ending, replacement in _PLURAL_ENDINGS:
            if last.endswith(ending) and len(last) > len(ending):
                forms.append(prefix + last[: -len(ending)] + replacement)
        found: dict[str, tuple[int, str, str]] = {}
        for form in forms:
            for sense, node_id in self._by_key.get(form, []):
                found.setdefault(node_id, (sense, node_id, form))
        return sorted(found.values())

    def _resolve_sense(self, name: str, key: str, sense: int) -> Resolution:
        for s, node_id in self._by_key.get(key, []):
            if s == sense and self._under[node_id]:
                return self._resolution(name, node_id, None, ())
        known = [f"{key}.n.{s:02d}" for s, n in self._by_key.get(key, []) if self._under[n]]
        label = f"{key}.n.{sense:02d}"
        if known:
            raise ClassNameError(f"{label} is not an ImageNet class or group; {key.replace('_', ' ')!r} "
                                   f"can mean {', '.join(known)}")
        raise ClassNameError(f"no ImageNet class or group is called {label}{self._suggest(key)}")

    def _resolution(self, name: str, node_id: str, note: str | None, others: tuple[str, ...]) -> Resolution:
        if not self._under[node_id]:
            raise ClassNameError(f"no ImageNet class is under {self.node_name(node_id)}")
        return Resolution(name, (node_id,), self.node_name(node_id), self._under[node_id], note, others)

    def _describe(self, label: str, node_id: str) -> str:
        count = len(self._under[node_id])
        gloss = self._nodes[node_id].gloss
        what = f"{gloss}; " if gloss else ""
        return f"{label} ({what}{count} class{'es' if count != 1 else ''})"

    def _suggest(self, text: str) -> str:
        close = difflib.get_close_matches(name_key(text), self._known_keys, n=5, cutoff=0.6)
        if not close:
            return ""
        return "; nearest known names: " + ", ".join(k.replace("_", " ") for k in close)

    def resolve_classes(self, names: Iterable[str]) -> list[ResolvedClass]:
        """Resolve a list of class names into disjoint sets of base classes.

        Each base class counts for the narrowest class that holds it, so a broad class means
        "the rest": with "animal" and "dog", dogs count for "dog" and "animal" keeps the other
        animals. Two names that mean the same classes, or a class left with nothing of its own,
        are errors: the classifier could never tell them apart.
        """
        resolved = [self.resolve(name) for name in names]
        for i, a in enumerate(resolved):
            for b in resolved[:i]:
                if a.classes == b.classes:
                    raise ClassNameError(f"{b.name.strip()!r} and {a.name.strip()!r} both mean "
                                           f"{self._same(a, b)}; keep one of them")
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

    @staticmethod
    def _same(a: Resolution, b: Resolution) -> str:
        return a.display if a.display == b.display else f"the same classes ({a.display}, {b.display})"


@functools.cache
def load_imagenet_hierarchy() -> Hierarchy:
    """The ImageNet-1k hierarchy packaged with the program (WordNet 3.0), read once."""
    resource = importlib.resources.files(__package__).joinpath(DATA_FILE)
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return Hierarchy.from_data(json.load(f))
