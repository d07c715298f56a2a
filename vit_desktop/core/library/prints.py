"""What similar photos and duplicates are judged by: one row per photo, as arrays.

A :class:`PhotoPrints` is plain data (paths, perceptual hashes, pooled features, sizes, times),
built once from the library (or computed where the library lacks it, see
:mod:`vit_desktop.core.inference.lookalikes`) and read by the pure functions of
:mod:`.similar` and :mod:`.duplicates`; it crosses threads as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vit_desktop.core.io.image_hash import CODES, HASH_BYTES, signs


@dataclass(frozen=True, eq=False)
class PhotoPrints:
    """Photos as rows: ``paths[i]`` is described by row ``i`` of every array."""

    paths: tuple[str, ...]
    #: (n, :data:`~vit_desktop.core.io.image_hash.CODES`, 8) uint8: each photo's perceptual hashes
    #: (whole frame, then crop windows); None where they were not asked for (similar photos).
    hashes: np.ndarray | None
    #: (n, hidden) float32 of unit length: the pooled features of one backbone; a row of zeros for a
    #: photo without them. None where they were not asked for.
    features: np.ndarray | None
    #: (n, 2) int64: (width, height) of each photo as shown, (0, 0) where unknown.
    shapes: np.ndarray
    #: (n,) int64: file sizes in bytes.
    sizes: np.ndarray
    #: (n,) int64: modification times (ns).
    mtimes: np.ndarray
    #: Per photo, a hash of its whole content where another photo has the same size and quick
    #: hash (a candidate byte-for-byte copy), else None.
    digests: tuple[bytes | None, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    #: (n,) bool: which photos have features (a row that is not all zeros); None without features.
    has_features: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.paths)
        for name in ("sizes", "mtimes"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name}: one value per photo ({n}), not {getattr(self, name).shape}")
        if self.shapes.shape != (n, 2):
            raise ValueError(f"shapes: (width, height) per photo ({n}) expected, not {self.shapes.shape}")
        if self.hashes is not None and self.hashes.shape != (n, CODES, HASH_BYTES):
            raise ValueError(f"hashes: ({n}, {CODES}, {HASH_BYTES}) expected, not {self.hashes.shape}")
        if self.features is not None and (self.features.ndim != 2 or self.features.shape[0] != n):
            raise ValueError(f"features: one row per photo ({n}) expected, not {self.features.shape}")
        if len(self.digests) != n:
            raise ValueError(f"digests: one per photo ({n}), not {len(self.digests)}")
        object.__setattr__(self, "_index", {p: i for i, p in enumerate(self.paths)})
        object.__setattr__(self, "has_features",
                           None if self.features is None else np.any(self.features != 0, axis=1))

    @classmethod
    def of(cls, paths: Sequence[str], *, hashes: np.ndarray | None = None, features: np.ndarray | None = None,
           shapes: Sequence[tuple[int, int]] | np.ndarray | None = None, sizes: Sequence[int] | None = None,
           mtimes: Sequence[int] | None = None, digests: Sequence[bytes | None] | None = None) -> PhotoPrints:
        """Prints of ``paths``; features are scaled to unit length here (zero rows stay zero)."""
        n = len(paths)

        def ints(values: Sequence[int] | None) -> np.ndarray:
            return np.zeros(n, np.int64) if values is None else np.asarray(values, dtype=np.int64).reshape(n)

        return cls(tuple(paths),
                   None if hashes is None else np.ascontiguousarray(hashes, dtype=np.uint8),
                   None if features is None else unit_rows(features),
                   np.zeros((n, 2), np.int64) if shapes is None else np.asarray(shapes, dtype=np.int64).reshape(n, 2),
                   ints(sizes), ints(mtimes),
                   tuple(digests) if digests is not None else (None,) * n)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def pixels(self) -> np.ndarray:
        """(n,) int64: width x height of each photo (0 where unknown)."""
        out: np.ndarray = self.shapes[:, 0] * self.shapes[:, 1]
        return out

    def frame_signs(self) -> np.ndarray:
        """(n, 64) float32 ±1 of each whole-frame hash (see :func:`~vit_desktop.core.io.image_hash.signs`),
        made on first use and kept: one product with them compares a photo with all the others."""
        if self.hashes is None:
            raise ValueError("these prints have no hashes")
        cached = self.__dict__.get("_frame_signs")
        if cached is None:
            cached = signs(self.hashes[:, 0])
            object.__setattr__(self, "_frame_signs", cached)
        out: np.ndarray = cached
        return out

    def index(self, path: str) -> int:
        """The row of ``path``; KeyError when it is not one of the photos."""
        return self._index[path]

    def __contains__(self, path: object) -> bool:
        return path in self._index


def unit_rows(features: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to unit length, so that a dot product is the cosine; a row of
    zeros (no features) stays zero and is similar to nothing."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features: (photos, dimensions) expected, not {f.shape}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    out: np.ndarray = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)
    return out


__all__ = ["PhotoPrints", "unit_rows"]
