"""Duplicates: photos that are the same picture, as opposed to photos that are merely similar.

Two photos are duplicates when one is the other

- byte for byte (the same file content): kind ``identical``;
- re-encoded, resized (a thumbnail too) or with its brightness changed: their whole-frame perceptual
  hashes differ in at most :attr:`DuplicateRule.same_bits` of 64 bits;
- lightly cropped (up to about a tenth off each side): the one's whole frame is within
  :attr:`DuplicateRule.crop_bits` of one of the other's crop windows, their features agree
  (cosine at least :attr:`DuplicateRule.crop_cosine`), and their sizes differ: two frames of the
  same width and height that differ by a shift are two shots of a burst (one camera), while a
  crop changes the size.

Anything else is not a duplicate, however alike: a second shot of a burst (the camera moved), two
photos of the same thing. Features alone cannot make that call: a thumbnail's features can be
further from its original's (cosine 0.36 measured with DeiT-Tiny) than two unrelated photos' (0.76),
and two shots of one scene are often above 0.9; a whole-frame hash alone takes a light crop for a
different picture. The rules and their limits were set on bench/bench_duplicates.py's corpus (the
README has the figures).

Groups are the connected photos (a thumbnail of a crop joins its original through the crop); a
group's photos come best copy first: most pixels, then the oldest (then the most bytes).
Everything here is pure computation on :class:`~.prints.PhotoPrints`: it reads no file, and it
never moves or deletes one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.io.image_hash import HASH_BITS, hamming
from vit_desktop.core.types import ProgressCallback

from .prints import PhotoPrints

#: A group whose photos are all the same bytes; and one of edited copies (any other).
IDENTICAL = "identical"
EDITED = "edited"
#: How two photos were found to be one picture.
SAME_PICTURE = "same picture"
CROPPED = "cropped"

#: Matrix entries per block of the exact search: 16 MB per float32 matrix.
_BLOCK_ENTRIES = 4 * 1024 * 1024


@dataclass(frozen=True)
class DuplicateRule:
    """When two photos count as one picture (see the module's docstring); the defaults are the
    measured ones."""

    #: Whole-frame hashes differing in at most this many of 64 bits: re-encoded, resized, brightened.
    same_bits: int = 8
    #: One's whole frame within this many bits of one of the other's crop windows ...
    crop_bits: int = 8
    #: ... and the cosine of their features at least this: a light crop.
    crop_cosine: float = 0.6

    def __post_init__(self) -> None:
        if not (0 <= self.same_bits <= HASH_BITS and 0 <= self.crop_bits <= HASH_BITS):
            raise ValueError(f"bits must be between 0 and {HASH_BITS}")
        if not -1.0 <= self.crop_cosine <= 1.0:
            raise ValueError("a cosine is between -1 and 1")


DEFAULT_RULE = DuplicateRule()


@dataclass(frozen=True)
class Match:
    """Two photos (rows ``a`` < ``b``) found to be one picture: how, and how alike (1: the same)."""

    a: int
    b: int
    how: str  # IDENTICAL, SAME_PICTURE or CROPPED
    score: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos that are one picture, best copy first (most pixels, then the oldest, then most bytes).

    ``kind``: :data:`IDENTICAL` when every file has the same bytes, else :data:`EDITED`.
    ``score``: how alike the least alike matched pair is: 1 for the same bytes, else 1 - d/32, d
    the bits in which their hashes differ (32 is what unrelated photos differ in).
    """

    paths: tuple[str, ...]
    kind: str
    score: float


@dataclass(frozen=True)
class Duplicate:
    """A photo that is the same picture as the one asked about (:func:`duplicates_of`)."""

    path: str
    how: str  # IDENTICAL, SAME_PICTURE or CROPPED
    score: float


def _similarity(bits: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(1.0 - bits / (HASH_BITS / 2), 0.0, 1.0)
    return out


def _block_matches(prints: PhotoPrints, rows: slice, cols: slice, rule: DuplicateRule, upper: bool) -> list[Match]:
    """Matches between photos ``rows`` and ``cols`` (contiguous, so that the arrays are read in
    place); with ``upper`` only pairs whose column comes after the row (each pair once), else every
    pair but a photo with itself."""
    hashes = prints.hashes
    assert hashes is not None
    full_signs = prints.frame_signs()
    row0, col0 = rows.start, cols.start

    def pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ri, ci = np.nonzero(mask)
        a, b = ri + row0, ci + col0
        keep = b > a if upper else b != a
        return a[keep], b[keep]

    # Whole frames: a product of ±1 vectors, (r, 64) @ (64, c), is 64 - 2 x the Hamming distance.
    dot = full_signs[rows] @ full_signs[cols].T
    same = dot >= HASH_BITS - 2 * rule.same_bits - 0.5
    a, b = pairs(same)
    bits = hamming(hashes[a, 0], hashes[b, 0])
    out = [_match(int(i), int(j), prints, SAME_PICTURE, float(s)) for i, j, s in zip(a, b, _similarity(bits))]
    features = prints.features
    if features is None:
        return out
    # Light crops: the features agree, then one's frame against the other's windows, both ways.
    near = features[rows] @ features[cols].T >= rule.crop_cosine
    near &= ~same
    a, b = pairs(near)
    shapes = prints.shapes
    resized = np.any(shapes[a] != shapes[b], axis=1) | ~np.all(shapes[a] > 0, axis=1)
    a, b = a[resized], b[resized]
    if a.size:
        window = np.minimum(hamming(hashes[a, :1], hashes[b, 1:]).min(axis=1),
                            hamming(hashes[b, :1], hashes[a, 1:]).min(axis=1))
        for k in np.flatnonzero(window <= rule.crop_bits):
            out.append(_match(int(a[k]), int(b[k]), prints, CROPPED, float(_similarity(window[k]))))
    return out


def _match(a: int, b: int, prints: PhotoPrints, how: str, score: float) -> Match:
    a, b = min(a, b), max(a, b)
    da, db = prints.digests[a], prints.digests[b]
    if da is not None and da == db:
        return Match(a, b, IDENTICAL, 1.0)
    return Match(a, b, how, score)


def _identical(prints: PhotoPrints) -> list[Match]:
    """Pairs of the same bytes that the hashes may not have paired (an image the hash cannot tell from
    noise is still a copy of itself)."""
    first: dict[bytes, int] = {}
    out = []
    for i, d in enumerate(prints.digests):
        if d is None:
            continue
        if d in first:
            out.append(Match(first[d], i, IDENTICAL, 1.0))
        else:
            first[d] = i
    return out


def duplicate_pairs(prints: PhotoPrints, rule: DuplicateRule = DEFAULT_RULE, *, cancel: CancelToken | None = None,
                    progress: ProgressCallback | None = None) -> list[Match]:
    """Every pair of ``prints`` that is one picture, by exact search in blocks of rows.

    ``progress(done, total)`` is called after each block (rows compared so far, of all rows), and
    :class:`~vit_desktop.core.errors.Cancelled` is raised between blocks when ``cancel`` is set.
    About 0.1 s for 4,000 photos, growing with the square of their number.
    """
    if prints.hashes is None:
        raise ValueError("duplicates need the photos' perceptual hashes")
    n = len(prints)
    found: dict[tuple[int, int], Match] = {(m.a, m.b): m for m in _identical(prints)}
    block = max(1, _BLOCK_ENTRIES // max(1, n))
    start = 0
    while start < n:
        if cancel is not None:
            cancel.raise_if_cancelled()
        stop = min(n, start + block)
        for m in _block_matches(prints, slice(start, stop), slice(start, n), rule, upper=True):
            if (m.a, m.b) not in found:
                found[(m.a, m.b)] = m
        start = stop
        if progress is not None:
            progress(start, n)
    return sorted(found.values(), key=lambda m: (m.a, m.b))


def duplicates_of(prints: PhotoPrints, path: str, rule: DuplicateRule = DEFAULT_RULE) -> list[Duplicate]:
    """The photos of ``prints`` that are the same picture as the one at ``path`` (one of them),
    most alike first: one row against all, a few milliseconds over 100,000 photos."""
    if prints.hashes is None:
        raise ValueError("duplicates need the photos' perceptual hashes")
    row = prints.index(path)
    matches = {m.b if m.a == row else m.a: m
               for m in _block_matches(prints, slice(row, row + 1), slice(0, len(prints)), rule, upper=False)}
    digest = prints.digests[row]
    if digest is not None:
        for i, d in enumerate(prints.digests):
            if d == digest and i != row:
                matches[i] = Match(min(i, row), max(i, row), IDENTICAL, 1.0)
    order = sorted(matches, key=lambda i: (-matches[i].score, i))
    return [Duplicate(prints.paths[i], matches[i].how, matches[i].score) for i in order]


def group_matches(prints: PhotoPrints, matches: Iterable[Match]) -> list[DuplicateGroup]:
    """The connected photos of ``matches``, each group best copy first; groups in the order of
    their first photo in ``prints``."""
    parent = list(range(len(prints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    matches = list(matches)
    for m in matches:
        ra, rb = root(m.a), root(m.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(len(prints)):
        members.setdefault(root(i), []).append(i)
    weakest: dict[int, float] = {}
    for m in matches:
        r = root(m.a)
        weakest[r] = min(weakest.get(r, 1.0), m.score)
    groups = []
    for r in sorted(members):
        rows = members[r]
        if len(rows) < 2:
            continue
        rows.sort(key=lambda i: (-int(prints.pixels[i]), int(prints.mtimes[i]), -int(prints.sizes[i]), i))
        digests = {prints.digests[i] for i in rows}
        kind = IDENTICAL if len(digests) == 1 and None not in digests else EDITED
        groups.append(DuplicateGroup(tuple(prints.paths[i] for i in rows), kind, round(weakest[r], 6)))
    return groups


def duplicate_groups(prints: PhotoPrints, rule: DuplicateRule = DEFAULT_RULE, *, cancel: CancelToken | None = None,
                     progress: ProgressCallback | None = None) -> list[DuplicateGroup]:
    """The groups of photos in ``prints`` that are one picture (see :func:`duplicate_pairs` for
    ``cancel`` and ``progress``)."""
    return group_matches(prints, duplicate_pairs(prints, rule, cancel=cancel, progress=progress))


__all__ = [
    "CROPPED",
    "DEFAULT_RULE",
    "EDITED",
    "IDENTICAL",
    "SAME_PICTURE",
    "Duplicate",
    "DuplicateGroup",
    "DuplicateRule",
    "Match",
    "duplicate_groups",
    "duplicate_pairs",
    "duplicates_of",
    "group_matches",
]
