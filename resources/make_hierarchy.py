"""Write the ImageNet-1k label hierarchy (WordNet 3.0 hypernyms) that core/labels/hierarchy.py reads.

    apt-get install wordnet-base        # WordNet 3.0: /usr/share/wordnet/{data,index}.noun, noun.exc
    python resources/make_hierarchy.py --synsets imagenet_synsets.txt

``--synsets`` is a text file with the 1000 ImageNet-1k wnids in class-index order, one a line
(timm ships one as ``timm/data/_info/imagenet_synsets.txt``). It is read here only; the program
never needs it. The output, ``vit_desktop/core/labels/wordnet/imagenet1k_hierarchy.json.gz``, holds:

- ``classes``: the 1000 wnids in index order;
- ``nodes``: every synset in the hypernym closure of those classes (``@`` and ``@i`` pointers),
  keyed by wnid: its lemmas as ``[lemma, sense]`` (the sense number is the synset's position in
  index.noun's list for that lemma, so ``dog.n.01``), its parents' wnids and its gloss;
- ``plurals``: the irregular plurals of noun.exc whose singular is (the last word of) a lemma
  present, so that "geese" finds goose without shipping all of WordNet's morphology.

The file is deterministic (sorted keys, gzip mtime 0): regenerating it from the same inputs gives
the same bytes, so a diff of the repository shows real changes only.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "vit_desktop" / "core" / "labels" / "wordnet" / "imagenet1k_hierarchy.json.gz"
SHARED = REPO.parent / "shared"
FORMAT = 1

WNID = re.compile(r"n\d{8}")
HYPERNYM_POINTERS = ("@", "@i")  # a class of things, and an instance of one (a named place...)


def parse_data_noun(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """Every noun synset: wnid -> (lemmas as spelled, hypernym wnids, gloss)."""
    synsets: dict[str, tuple[list[str], list[str], str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            fields, _, gloss = line.rstrip("\n").partition(" | ")
            parts = fields.split()
            offset, word_count = parts[0], int(parts[3], 16)
            lemmas = [parts[4 + 2 * i] for i in range(word_count)]
            at = 4 + 2 * word_count
            pointer_count = int(parts[at])
            parents = []
            for i in range(pointer_count):
                symbol, target, pos = parts[at + 1 + 4 * i : at + 4 + 4 * i]
                if symbol in HYPERNYM_POINTERS and pos == "n":
                    parents.append("n" + target)
            synsets["n" + offset] = (lemmas, sorted(set(parents)), _definition(gloss))
    return synsets


def _definition(gloss: str) -> str:
    """The gloss without its quoted examples: "dog: a member of the genus Canis ..."."""
    definition = gloss.strip().split('; "')[0]
    return definition.strip().rstrip(";").strip()


def parse_index_noun(path: Path) -> dict[str, list[str]]:
    """lemma (lower case) -> its synsets' wnids in sense order (sense 1 first)."""
    senses: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            parts = line.split()
            lemma, synset_count, pointer_count = parts[0], int(parts[2]), int(parts[3])
            offsets = parts[6 + pointer_count :]
            if len(offsets) != synset_count:
                raise SystemExit(f"index.noun: {lemma!r} lists {len(offsets)} synsets, says {synset_count}")
            senses[lemma] = ["n" + o for o in offsets]
    return senses


def parse_exceptions(path: Path) -> dict[str, str]:
    """noun.exc: irregular plural -> singular (the first one where WordNet lists several)."""
    plurals: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                plurals.setdefault(parts[0], parts[1])
    return plurals


def read_synsets(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [w for w in wnids if not WNID.fullmatch(w)]
    if bad:
        raise SystemExit(f"{path}: not wnids: {bad[:5]}")
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise SystemExit(f"{path}: {len(wnids)} lines, {len(set(wnids))} unique; ImageNet-1k has 1000")
    if wnids != sorted(wnids):
        raise SystemExit(f"{path}: not sorted; ImageNet-1k's class order is the sorted wnids")
    return wnids


def cross_check(wnids: list[str], synsets: dict[str, tuple[list[str], list[str], str]],
                photos: Path, fewshot: Path) -> None:
    """The class order must agree with every labelled photo we have; skip files that are absent."""
    if photos.is_file():
        with photos.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            index, wnid = int(row["imagenet_index"]), row["synset"]
            if wnids[index] != wnid:
                raise SystemExit(f"{photos}: class {index} is {wnid}, the synsets file says {wnids[index]}")
            if row["name"].lower() not in {lemma.lower() for lemma in synsets[wnid][0]}:
                raise SystemExit(f"{photos}: {row['name']!r} is not a lemma of {wnid}")
        print(f"agrees with {photos} ({len(rows)} photos)")
    else:
        print(f"skipped the check against {photos} (not found)")
    if fewshot.is_file():
        with fewshot.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            index, wnid = int(row["imagenet_index"]), Path(row["file"]).name.split("_")[0]
            if wnids[index] != wnid:
                raise SystemExit(f"{fewshot}: {row['file']} is class {index}, the synsets file says {wnids[index]}")
        print(f"agrees with {fewshot} ({len(rows)} photos)")
    else:
        print(f"skipped the check against {fewshot} (not found)")


def build(wnids: list[str], synsets: dict[str, tuple[list[str], list[str], str]],
          senses: dict[str, list[str]], exceptions: dict[str, str]) -> dict[str, object]:
    missing = [w for w in wnids if w not in synsets]
    if missing:
        raise SystemExit(f"not WordNet 3.0 noun synsets: {missing[:5]}")
    closure: set[str] = set()
    todo = list(wnids)
    while todo:
        wnid = todo.pop()
        if wnid not in closure:
            closure.add(wnid)
            todo.extend(synsets[wnid][1])
    nodes: dict[str, object] = {}
    words: set[str] = set()
    for wnid in sorted(closure):
        lemmas, parents, gloss = synsets[wnid]
        numbered = []
        for lemma in lemmas:
            order = senses.get(lemma.lower(), [])
            if wnid not in order:
                raise SystemExit(f"index.noun does not list {wnid} under {lemma!r}")
            numbered.append([lemma, order.index(wnid) + 1])
            words.add(lemma.lower())
            words.add(lemma.lower().split("_")[-1])
        nodes[wnid] = {"lemmas": numbered, "parents": parents, "gloss": gloss}
    plurals = {p: s for p, s in exceptions.items() if s in words}
    return {"format": FORMAT, "source": "WordNet 3.0", "classes": wnids, "nodes": nodes, "plurals": plurals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synsets", type=Path, required=True, help="the 1000 wnids in class-index order")
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0 dict folder")
    parser.add_argument("--photos-labels", type=Path, default=SHARED / "photos" / "labels.csv")
    parser.add_argument("--fewshot-labels", type=Path, default=SHARED / "fewshot-dev" / "labels.csv")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    wnids = read_synsets(args.synsets)
    synsets = parse_data_noun(args.wordnet / "data.noun")
    cross_check(wnids, synsets, args.photos_labels, args.fewshot_labels)
    data = build(wnids, synsets, parse_index_noun(args.wordnet / "index.noun"),
                 parse_exceptions(args.wordnet / "noun.exc"))

    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                   compresslevel=9) as f:
        f.write(text.encode("utf-8"))
    print(f"{args.out}: {len(data['nodes'])} nodes, {len(data['plurals'])} plurals, "  # type: ignore[arg-type]
          f"{args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
