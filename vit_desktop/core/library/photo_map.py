"""A map of a collection: each photo placed in two dimensions by its features, alike photos near.

The layout is a principal-component projection in numpy (:func:`pca_2d`): the plane in which the
pooled features spread most; exact, deterministic, and 0.05 s for 5,000 photos of 192 numbers
(bench/bench_map.py). Neighbour-keeping methods (t-SNE: 66 s for those 5,000 photos with
scikit-learn) keep alike photos together better but are far too slow to wait for in a window, so
they are not offered. Pure computation on arrays: it reads no file.
"""

from __future__ import annotations

import numpy as np

from vit_desktop.core.errors import CancelToken

from .prints import unit_rows


def pca_2d(features: np.ndarray) -> np.ndarray:
    """(n, d) features -> (n, 2) float32: the first two principal components of the unit rows.

    The covariance is (d, d), so the cost grows with n x d², not with n²: 100,000 photos of 768
    numbers take well under a second. Each axis' sign is fixed (its largest loading positive),
    so the same photos give the same map every time.
    """
    x = unit_rows(features).astype(np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float32)
    x -= x.mean(axis=0)
    cov = x.T @ x / max(1, n - 1)  # (d, d)
    _values, vectors = np.linalg.eigh(cov)  # ascending
    axes = vectors[:, ::-1][:, :2]  # (d, 2): the two largest
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    axes = axes * np.where(signs == 0, 1.0, signs)
    out: np.ndarray = (x @ axes).astype(np.float32)
    return out


def layout(features: np.ndarray, *, cancel: CancelToken | None = None) -> np.ndarray:
    """(n, 2) float32 positions of ``features`` (n, d): :func:`pca_2d` scaled into [-1, 1]
    (see :func:`fit_square`). ``cancel`` is checked before the work starts."""
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"features: (photos, dimensions) expected, not {f.shape}")
    if cancel is not None:
        cancel.raise_if_cancelled()
    return fit_square(pca_2d(f))


def fit_square(xy: np.ndarray) -> np.ndarray:
    """Positions scaled (aspect kept) so that the middle 98 % of them lie in [-1, 1]: one stray photo
    far out does not shrink the others into a dot. Those beyond stay beyond."""
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if p.shape[0] == 0:
        return np.zeros((0, 2), np.float32)
    lo = np.percentile(p, 1, axis=0)
    hi = np.percentile(p, 99, axis=0)
    centre = (lo + hi) / 2
    half = float(np.max(hi - lo)) / 2
    if not np.isfinite(half) or half <= 0:
        half = float(np.max(np.abs(p - centre))) or 1.0
    out: np.ndarray = ((p - centre) / half).astype(np.float32)
    return out


def neighbours_kept(features: np.ndarray, xy: np.ndarray, k: int = 5) -> float:
    """The share of each photo's ``k`` nearest by features (cosine) that are among its ``k``
    nearest on the map: how well a layout keeps alike photos together (1: all kept)."""
    f = unit_rows(features)
    n = f.shape[0]
    if n <= k:
        return 1.0
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    p = np.asarray(xy, dtype=np.float64)
    dist = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(dist, np.inf)
    near_f = np.argpartition(-sim, k, axis=1)[:, :k]
    near_m = np.argpartition(dist, k, axis=1)[:, :k]
    kept = [len(set(a) & set(b)) for a, b in zip(near_f.tolist(), near_m.tolist())]
    return float(np.mean(kept)) / k


__all__ = ["fit_square", "layout", "neighbours_kept", "pca_2d"]
