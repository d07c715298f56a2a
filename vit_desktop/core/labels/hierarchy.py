"""The ImageNet-1k label hierarchy: which base classes a name like "dog" or "musical instrument" covers.

ImageNet-1k's classes are WordNet 3.0 noun synsets, so WordNet's hypernym graph groups them: the
probability that a photo shows "a dog" is the sum of the base model's probabilities over the 118
breeds under dog.n.01. This module knows that graph and turns the names a person types into sets
of base class indices; it does no arithmetic on probabilities itself.

Names are matched the way people type them: case, spaces, hyphens and underscores do not matter,
plurals find their singular ("geese", "musical instruments"), any synonym of a synset finds it,
words before the noun are let go when the whole phrase is no name ("my mugs", "red cars",
"Grandma's dogs" find mug, car, dog), and ``crane.n.05`` or ``n02012849`` name a sense exactly.

A name means what a person counts under it:

* WordNet's senses of the word that are close in its hierarchy are one meaning: they share classes,
  or a group at most two steps above each holds little besides them (:data:`CLOSE`). "food" is
  food.n.01 (dishes) and food.n.02 (bread, fruit, vegetables); "cat" is cat.n.01 and big_cat.n.01.
* Senses far apart are different meanings (crane: the machine or the bird). The first in WordNet's
  order (its commonest) is taken, unless the other names of the list point to another ("crane,
  heron, stork": the bird), or, when fine-tuning, the class's photos do.
* :data:`EVERYDAY` is the short list of what WordNet cannot know: a boat is also a ship, a bike
  either kind, an instrument (alone) a musical one.

A name can be edited: ``cat = cat - tiger`` or ``boat = boat + ship.n.01 - submarine`` (a space
before each + and -); every term is itself a name, a sense or a wnid.

Plain Python and the standard library only: the command line, the GUI and the tests use it without
loading a model.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import importlib.resources
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from .names import (
    CLOSE,
    CLOSE_STEPS,
    EDIT,
    EVERYDAY,
    PLURAL_ENDINGS,
    POSSESSIVE,
    SENSE,
    TYPO,
    ClassNameError,
    Meaning,
    Node,
    Resolution,
    ResolvedClass,
    disjoint,
    name_key,
)

#: The packaged hierarchy, written by ``resources/make_hierarchy.py``.
DATA_FILE = "wordnet/imagenet1k_hierarchy.json.gz"
_FORMAT = 1


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
        """What the name means; :class:`ClassNameError` when it means no group of base classes.

        An edited name ("cat = cat - tiger") is its first term with the other terms' classes added
        or taken away.
        """
        text = name.strip()
        if not text:
            raise ClassNameError("a class name is empty")
        if "=" in text or EDIT.search(text):
            return self._resolve_edit(text)
        return self._resolve_plain(text)

    def _resolve_plain(self, text: str) -> Resolution:
        for candidate in (text, text.lower()):
            if candidate in self._nodes:
                return self._resolution(text, candidate, None, ())
        match = SENSE.fullmatch(text)
        if match:
            return self._resolve_sense(text, name_key(match["lemma"]), int(match["sense"]))
        # The whole phrase first; then without its first words, down to the last: the noun comes
        # last in English ("my mugs", "red cars", "Grandma's dogs"), and a lemma of several words
        # ("hot dog", "red wine") is found before its last word alone.
        words = [POSSESSIVE.sub("", w) for w in text.split()]
        for i in range(len(words)):
            if i == 1 and difflib.get_close_matches(name_key(text), self._known_keys, n=1, cutoff=TYPO):
                break  # "musicl instrument" is a typo to point out, not an instrument of some kind
            found = self._resolve_key(name_key(" ".join(words[i:])), text)
            if found is not None:
                if i:
                    read = " ".join(words[i:])
                    note = f"{text!r} read as {read!r}" + (f"; {found.note}" if found.note else "")
                    found = replace(found, note=note)
                return found
        raise ClassNameError(f"no ImageNet class or group is called {text!r}{self._suggest(name_key(text))}")

    def _resolve_key(self, key: str, name: str) -> Resolution | None:
        """What a name key means (its everyday meaning, or its WordNet senses), None if nothing."""
        for form in self._forms(key):
            everyday = self._everyday(form, name)
            if everyday is not None:
                return everyday
        useful = [(s, n, form) for s, n, form in self._entries(key) if self._under[n]]
        if not useful:
            return None
        meanings = self._meanings([n for _, n, _ in useful])
        first = meanings[0]
        note = None
        if len(first.nodes) > 1:
            note = (f"{name!r} covers {first.display}: WordNet's senses of it that are close enough to be one "
                    f"meaning ({len(first.classes)} classes)")
        if len(meanings) > 1:
            others = "; ".join(self._describe(m.display, m.nodes[0], len(m.classes)) for m in meanings[1:])
            note = ((note + "; ") if note else "") + (
                f"{name!r} took {self._describe(first.display, first.nodes[0], len(first.classes))}; "
                f"it can also mean {others}")
        return Resolution(name, first.nodes, first.display, first.classes, note,
                          tuple(m.display for m in meanings[1:]), tuple(meanings))

    def _everyday(self, form: str, name: str) -> Resolution | None:
        entry = EVERYDAY.get(form)
        if entry is None:
            return None
        synsets, why = entry
        nodes = []
        for synset in synsets:
            match = SENSE.fullmatch(synset)
            assert match is not None
            senses = self._by_key.get(name_key(match["lemma"]), [])
            node = next((n for s, n in senses if s == int(match["sense"])), None)
            if node is None or not self._under[node]:
                return None  # another hierarchy than ImageNet's: WordNet's senses decide
            nodes.append(node)
        classes = tuple(sorted({c for n in nodes for c in self._under[n]}))
        display = " + ".join(self.node_name(n) for n in nodes)
        note = f"{name!r} covers {display} ({len(classes)} classes): {why}"
        return Resolution(name, tuple(nodes), display, classes, note, (),
                          (Meaning(tuple(nodes), display, classes),))

    def _meanings(self, nodes: Sequence[str]) -> list[Meaning]:
        """Senses (in WordNet's order) grouped into meanings: each sense joins the first meaning
        with a sense close to it (:data:`CLOSE`); the meanings keep the order of their first sense."""
        groups: list[list[int]] = []
        for i, node in enumerate(nodes):
            home = next((g for g in groups if any(self._close(nodes[j], node) for j in g)), None)
            if home is None:
                groups.append([i])
            else:
                home.append(i)
        out = []
        for g in groups:
            classes = tuple(sorted({c for j in g for c in self._under[nodes[j]]}))
            # WordNet's names ("big_cat.n.01"): each can be typed to mean exactly that sense.
            out.append(Meaning(tuple(nodes[j] for j in g), " + ".join(self.node_name(nodes[j]) for j in g), classes))
        return out

    def _close(self, a: str, b: str) -> bool:
        """Two senses that are one meaning: they share classes, or a near group holds little else."""
        ua, ub = set(self._under[a]), set(self._under[b])
        if ua & ub:
            return True
        up_a, up_b = self._steps_up(a), self._steps_up(b)
        shared = [n for n in up_a if n in up_b and up_a[n] <= CLOSE_STEPS and up_b[n] <= CLOSE_STEPS]
        return any(len(self._under[n]) <= CLOSE * len(ua | ub) for n in shared)

    def _steps_up(self, node_id: str) -> dict[str, int]:
        """Every node above ``node_id`` (itself included) and the fewest steps to it."""
        steps = {node_id: 0}
        todo = [node_id]
        while todo:
            n = todo.pop(0)
            for parent in self._nodes[n].parents:
                if parent not in steps:
                    steps[parent] = steps[n] + 1
                    todo.append(parent)
        return steps

    def _resolve_edit(self, text: str) -> Resolution:
        """"cat = cat + big cat - tiger": the first term, plus or minus the others' classes."""
        label, eq, expr = text.partition("=")
        if not eq:
            expr = text
        parts = EDIT.split(" " + expr.strip())
        # " cat - tiger" -> [" cat", "-", "tiger"]: the first term, then (operator, term) pairs.
        first, rest = parts[0].strip(), parts[1:]
        if not first:
            raise ClassNameError(f"{text!r}: an edited name starts with a name to edit (\"cat = cat - tiger\")")
        base = self._resolve_plain(first)
        label = label.strip() if eq else base.name
        if not label:
            raise ClassNameError(f"{text!r}: nothing before '=' to call the class")
        classes = set(base.classes)
        display = base.display
        for op, term in zip(rest[::2], rest[1::2]):
            term = term.strip()
            if not term:
                raise ClassNameError(f"{text!r}: {op} needs a name after it")
            other = self._resolve_plain(term)
            classes = classes | set(other.classes) if op == "+" else classes - set(other.classes)
            display += f" {op} {other.display}"
        if not classes:
            raise ClassNameError(f"{text!r} leaves no class")
        out = tuple(sorted(classes))
        return Resolution(label, base.nodes, display, out, base.note, base.alternatives, (),
                          tuple(sorted(classes - set(base.classes))), tuple(sorted(set(base.classes) - classes)))

    def class_term(self, index: int) -> str:
        """How to name base class ``index`` in an edited name: its first lemma when that means exactly
        it ("tiger"), else its node id."""
        node = self._classes[index]
        label = self._nodes[node].label
        try:
            r = self._resolve_plain(label)
        except ClassNameError:
            return node
        return label if r.classes == (index,) and r.note is None else node

    def _forms(self, key: str) -> list[str]:
        """The key, then its singulars ("geese" -> "goose", "musical_instruments" -> "musical_instrument")."""
        head, _, last = key.rpartition("_")
        prefix = head + "_" if head else ""
        forms = [key]
        if key in self._plurals:
            forms.append(self._plurals[key])
        if last in self._plurals:  # "snow geese": the irregular plural is the last word
            forms.append(prefix + self._plurals[last])
        for ending, replacement in PLURAL_ENDINGS:
            if last.endswith(ending) and len(last) > len(ending):
                forms.append(prefix + last[: -len(ending)] + replacement)
        return forms

    def _entries(self, key: str) -> list[tuple[int, str, str]]:
        """(sense, node, lemma key) for a name key; its singular when the name itself is no lemma."""
        if key in self._by_key:
            return [(s, n, key) for s, n in self._by_key[key]]
        found: dict[str, tuple[int, str, str]] = {}
        for form in self._forms(key)[1:]:
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
        meaning = Meaning((node_id,), self.node_name(node_id), self._under[node_id])
        return Resolution(name, (node_id,), self.node_name(node_id), self._under[node_id], note, others, (meaning,))

    def _describe(self, label: str, node_id: str, count: int | None = None) -> str:
        """"crane.n.05 (large long-necked wading bird of marshes…; 1 class)"."""
        count = len(self._under[node_id]) if count is None else count
        gloss = self._nodes[node_id].gloss
        if len(gloss) > 50:
            gloss = gloss[:49].rstrip() + "…"
        what = f"{gloss}; " if gloss else ""
        return f"{label} ({what}{count} class{'es' if count != 1 else ''})"

    def _suggest(self, text: str) -> str:
        close = difflib.get_close_matches(name_key(text), self._known_keys, n=5, cutoff=0.6)
        if not close:
            return ""
        return "; nearest known names: " + ", ".join(k.replace("_", " ") for k in close)

    def resolve_classes(self, names: Iterable[str], *,
                        evidence: Sequence[Sequence[float] | None] | None = None) -> list[ResolvedClass]:
        """Resolve a list of class names into disjoint sets of base classes.

        A name with meanings far apart takes the one its ``evidence`` favours (per name, weights
        over the base classes, e.g. the mean probabilities of the class's photos: the meaning
        holding the most wins), else the one nearest the other names ("crane, heron": the bird),
        else WordNet's first. Each base class counts for the narrowest class that holds it, so a
        broad class means "the rest": with "animal" and "dog", dogs count for "dog" and "animal"
        keeps the other animals. Two names that mean the same classes, or a class left with nothing
        of its own, are errors: the classifier could never tell them apart.
        """
        return disjoint(self._in_context([self.resolve(name) for name in names], evidence))

    def _in_context(self, resolved: list[Resolution],
                    evidence: Sequence[Sequence[float] | None] | None) -> list[Resolution]:
        """Each ambiguous name in the meaning its photos or the other names point to."""
        out = list(resolved)
        for i, r in enumerate(resolved):
            if len(r.meanings) < 2:
                continue
            weights = evidence[i] if evidence is not None and i < len(evidence) else None
            if weights is not None:
                held = [sum(float(weights[c]) for c in m.classes) for m in r.meanings]
                k = max(range(len(held)), key=lambda j: (held[j], -j))
                if k and held[k] > held[0]:
                    out[i] = r.choosing(k, f"where its photos point ({held[k]:.0%} of their probability, "
                                           f"{held[0]:.0%} on {r.meanings[0].display})")
                continue
            others = [(o.name, o.classes) for j, o in enumerate(resolved) if j != i]
            if not others:
                continue
            distance = [min((self._common_size({*m.classes, *classes}), name) for name, classes in others)
                        for m in r.meanings]
            k = min(range(len(distance)), key=lambda j: (distance[j][0], j))
            if k and distance[k][0] < distance[0][0]:
                out[i] = r.choosing(k, f"nearest to {distance[k][1].strip()!r}")
        return out

    def _common_size(self, classes: set[int]) -> int:
        """Base classes under the narrowest node that holds all of ``classes``."""
        for node in self.ancestors(min(classes)):
            if classes <= set(self._under[node]):
                return len(self._under[node])
        return self.num_classes


@functools.cache
def load_imagenet_hierarchy() -> Hierarchy:
    """The ImageNet-1k hierarchy packaged with the program (WordNet 3.0), read once."""
    resource = importlib.resources.files(__package__).joinpath(DATA_FILE)
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return Hierarchy.from_data(json.load(f))


__all__ = ["DATA_FILE", "ClassNameError", "Hierarchy", "ResolvedClass", "Resolution", "load_imagenet_hierarchy",
           "name_key"]
