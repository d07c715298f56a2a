"""The label hierarchy as matrices, and the nodes each class's photos choose (the ``hierarchy`` head).

:class:`NodeMatrix` marks, per node of the hierarchy, the base classes under it; :class:`Selection`
picks, greedily and leave-one-out, the nodes whose probability mass separates a class's photos from
the others (see :mod:`vit_desktop.core.training.fewshot` for the heads built on it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vit_desktop.core.errors import CancelToken
from vit_desktop.core.labels.hierarchy import Hierarchy, ResolvedClass

#: Mass floor: a class whose classes hold no probability is unlikely, not impossible.
EPS = 1e-3


#: A Newton step that lowers a column's fit is halved, at most this many times (to 2^-30 of itself)...
_HALVINGS = 30
#: ...and a lower fit means lower by more than rounding: a converged column is not halved for noise.
_SLACK = 1e-12


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z) without exp(z), which overflows once z passes 709: the Newton steps below may
    try a z of millions before they are halved. (Several times faster than np.logaddexp(0, z).)"""
    out: np.ndarray = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return out


def logistic_gain(u: np.ndarray, t: np.ndarray, l2: float = 0.1, steps: int = 8) -> np.ndarray:
    """Best log-likelihood of ``t`` under sigmoid(α·u' + β), u' = standardised u, per column of u.

    How well a node's mass separates a class's photos from the others: a node only counts if it
    separates, not merely because some of its mass lands on the class's photos. α >= 0 (more mass
    must mean more likely) and a small L2 on α keeps perfectly separating nodes finite. A few
    vectorised Newton steps, all candidate nodes at once, each halved where it would lower the fit.
    """
    zed = (u - u.mean(axis=0)) / (u.std(axis=0) + 1e-9)
    tt = t.astype(np.float64)[:, None]

    def fit(z: np.ndarray, softplus: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The penalised log-likelihood per column of logits ``z``, softplus(z) = log(1 + e^z) given."""
        out: np.ndarray = (tt * z - softplus).sum(axis=0) - 0.5 * l2 * alpha**2
        return out

    prior = float(np.clip(tt.mean(), 1e-6, 1 - 1e-6))
    alpha = np.zeros(u.shape[1])
    beta = np.full(u.shape[1], math.log(prior / (1 - prior)))
    z = alpha * zed + beta
    softplus = _softplus(z)
    best = fit(z, softplus, alpha)
    for _ in range(steps):
        p = np.exp(z - softplus)  # sigmoid(z); the exponent is never positive
        r = tt - p
        w = p * (1 - p) + 1e-9
        g_a = (r * zed).sum(axis=0) - l2 * alpha
        g_b = r.sum(axis=0)
        h_aa = (w * zed * zed).sum(axis=0) + l2
        h_ab = (w * zed).sum(axis=0)
        h_bb = w.sum(axis=0)
        det = h_aa * h_bb - h_ab * h_ab
        d_a = (h_bb * g_a - h_ab * g_b) / det
        d_b = (h_aa * g_b - h_ab * g_a) / det
        # Where a node separates a class's photos (almost) perfectly the curvature nearly vanishes
        # and a full step overshoots by orders of magnitude: β reached 1e8 and the best node of all
        # scored -1e9 nats, so it was never chosen. Such columns take a shorter step, or none.
        new_alpha = np.maximum(alpha + d_a, 0.0)
        new_beta = beta + d_b
        new_z = new_alpha * zed + new_beta
        new_softplus = _softplus(new_z)
        value = fit(new_z, new_softplus, new_alpha)
        floor = best - _SLACK * (1.0 + np.abs(best))
        worse = np.flatnonzero(~(value >= floor))
        step = 1.0
        for _ in range(_HALVINGS):
            if not len(worse):
                break
            step /= 2
            new_alpha[worse] = np.maximum(alpha[worse] + step * d_a[worse], 0.0)
            new_beta[worse] = beta[worse] + step * d_b[worse]
            new_z[:, worse] = new_alpha[worse] * zed[:, worse] + new_beta[worse]
            new_softplus[:, worse] = _softplus(new_z[:, worse])
            value[worse] = fit(new_z[:, worse], new_softplus[:, worse], new_alpha[worse])
            worse = worse[~(value[worse] >= floor[worse])]
        # Where no step helped, the column keeps its fit.
        new_alpha[worse], new_beta[worse], value[worse] = alpha[worse], beta[worse], best[worse]
        new_z[:, worse], new_softplus[:, worse] = z[:, worse], softplus[:, worse]
        alpha, beta, best, z, softplus = new_alpha, new_beta, value, new_z, new_softplus
    return best


class NodeMatrix:
    """Column j of ``A`` (base classes, nodes) marks the base classes under the hierarchy's node j."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.ids = list(hierarchy.node_ids)
        col = {n: j for j, n in enumerate(self.ids)}
        self.A = np.zeros((hierarchy.num_classes, len(self.ids)), dtype=np.float32)
        for j, n in enumerate(self.ids):
            self.A[list(hierarchy.classes_under(n)), j] = 1.0
        self.sizes = self.A.sum(axis=0)
        # Per base class, its ancestors' columns (itself included), narrowest first; nodes that
        # hold exactly the same classes are one candidate.
        same: dict[tuple[int, ...], int] = {}
        self.ancestors: list[np.ndarray] = []
        for i in range(hierarchy.num_classes):
            cols: list[int] = []
            for a in hierarchy.ancestors(i):
                j = same.setdefault(hierarchy.classes_under(a), col[a])
                if j not in cols:
                    cols.append(j)
            self.ancestors.append(np.array(cols, dtype=int))

    def common_size(self, masks: np.ndarray) -> np.ndarray:
        """(base, m) 0/1 sets of base classes -> (m,) base classes under the narrowest node that
        holds each set whole (its lowest common ancestor in the hierarchy)."""
        need = masks.sum(axis=0)
        # (nodes, base) @ (base, m) -> (nodes, m): how much of each set a node holds
        held = self.A.T @ masks
        sizes = np.where(held >= need[None, :] - 0.5, self.sizes[:, None], np.inf)
        out: np.ndarray = sizes.min(axis=0)
        return out


def name_masks(names: Sequence[ResolvedClass | None], num_base: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for r in names:
        if r is None:
            out.append(None)
            continue
        m = np.zeros(num_base, dtype=np.float32)
        m[list(r.classes)] = 1.0
        out.append(m)
    return out


@dataclass(frozen=True)
class ChosenNode:
    """A node a class's photos chose, and why: how many of them point there, what it gained."""

    #: WordNet's name of the node ("dog.n.01").
    name: str
    #: The class's photos with one of their top predictions under the node, of all its photos.
    photos: int
    of: int
    #: How much the node raised the class's fit on its photos (nats, judged leave-one-out).
    gain: float

    def __str__(self) -> str:
        """"dog.n.01 (9 of 12 photos point there, +4.1 nats)"."""
        return f"{self.name} ({self.photos} of {self.of} photos point there, +{self.gain:.1f} nats)"


#: A node needs a top prediction under it in at least this share of the class's photos (and in two).
SUPPORT_SHARE = 0.2
#: A named class's node must share with the name a group at most this many times their classes together.
NEAR = 2.0


class Selection:
    """The hierarchy's nodes each class owns, chosen greedily from the training photos.

    The evidence for class k on photo x is m_k(x), the base probability under the base classes k
    owns; a base class under several chosen items belongs to the narrowest (fewest classes), the
    rule names follow too. A greedy step adds, over every class k and candidate node (ancestors of
    the top-``top`` base predictions of k's photos), the node that most raises k's
    :func:`logistic_gain`; it stops below ``min_gain`` nats. Leave-one-out: for a photo x of class
    k a node counts in m_k(x) only if another photo of k has a top prediction under it, so a node
    that covers only one photo's own ImageNet class buys nothing.
    """

    def __init__(self, nm: NodeMatrix, names: Sequence[np.ndarray | None], *, top: int = 5,
                 min_gain: float = 1.0, max_nodes: int = 30, min_share: float = SUPPORT_SHARE,
                 near: float = NEAR) -> None:
        self.nm = nm
        self.names = names
        self.top = top
        self.min_gain = min_gain
        self.max_nodes = max_nodes
        self.min_share = min_share
        self.near = near
        #: After :meth:`fit`: per class, the nodes chosen and why.
        self.chosen: list[list[ChosenNode]] = []

    def _supported(self, support: dict[int, int], photos: int) -> np.ndarray:
        """The nodes class c may choose, from how many of its photos have a top prediction under
        each (``support``): those enough of its photos point to."""
        # Leave-one-out: a node only one photo supports counts for nobody.
        least = max(2, math.ceil(self.min_share * photos))
        return np.array(sorted(j for j, v in support.items() if v >= least), dtype=int)

    def _allowed(self, cols: np.ndarray, anchor: np.ndarray | None, others: np.ndarray) -> np.ndarray:
        """Which of the nodes ``cols`` a class may still choose: none that holds a whole item of
        another class (``others`` (base, m): "entity" once "clothing" is taken means "anything but
        clothing"), and once the class covers something (``anchor`` (base,): its name, the nodes
        it chose) only nodes near it, sharing a group at most :data:`NEAR` times their classes
        together. Either kind wins on the photos only because the other classes' photos never go
        there ("clothing: fence.n.01"), and would call every photo of it this class."""
        a = self.nm.A[:, cols]
        ok = np.ones(len(cols), dtype=bool)
        if others.shape[1]:
            # (cols, base) @ (base, m) -> (cols, m): how much of each item a node holds
            ok &= ~((a.T @ others) >= others.sum(axis=0)[None, :] - 0.5).any(axis=1)
        if anchor is not None:
            union = np.maximum(a, anchor[:, None])
            ok &= self.nm.common_size(union) <= self.near * union.sum(axis=0)
        return ok

    def fit(self, y: np.ndarray, log_p: np.ndarray, k: int,
            cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """(masks (base, K) to predict with, leave-one-out log-masses (n, K) to calibrate on, nodes)
        from the photos' classes ``y`` (n,) and base log-probabilities ``log_p`` (n, base); what
        each node rests on is left in :attr:`chosen`."""
        n = len(y)
        p = np.exp(log_p).astype(np.float32)
        a = self.nm.A
        topk = np.argsort(-p, axis=1)[:, : self.top]
        own = [y == c for c in range(k)]
        own_idx = [np.flatnonzero(o) for o in own]
        cand: list[np.ndarray] = []
        support: list[dict[int, int]] = []
        for c in range(k):
            count: dict[int, int] = {}
            for x in own_idx[c]:
                for col in {int(j) for t in topk[x] for j in self.nm.ancestors[t]}:
                    count[col] = count.get(col, 0) + 1
            cand.append(self._supported(count, len(own_idx[c])))
            support.append(count)
        held: list[list[int]] = [[] for _ in range(k)]
        gained: list[list[float]] = [[] for _ in range(k)]
        every = np.arange(a.shape[0])

        def items(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Class c's items: masks (base, m), sizes, always-valid flags (a name is never left out)."""
            masks, sizes, always = [], [], []
            name = self.names[c]
            if name is not None:
                masks.append(name)
                sizes.append(name.sum())
                always.append(True)
            for j in held[c]:
                masks.append(a[:, j])
                sizes.append(a[:, j].sum())
                always.append(False)
            if not masks:
                return np.zeros((a.shape[0], 0), np.float32), np.zeros(0), np.zeros(0, bool)
            return np.stack(masks, axis=1), np.array(sizes), np.array(always)

        def effective(c: int, masks: np.ndarray, sizes: np.ndarray) -> np.ndarray:
            """Masks minus the base classes that narrower items of other classes own."""
            keep = np.ones_like(masks)
            for other in range(k):
                if other != c:
                    m, sz, _ = items(other)
                    for i in range(m.shape[1]):
                        keep *= 1.0 - m[:, i : i + 1] * (sz[i] < sizes)[None, :]
            out: np.ndarray = masks * keep
            return out

        def valid_for(c: int, eff: np.ndarray, always: np.ndarray) -> np.ndarray:
            """(n, items): does the item count for photo x (leave-one-out for c's own photos)."""
            valid = np.ones((n, eff.shape[1]), dtype=bool)
            if eff.shape[1]:
                support = np.zeros((n, eff.shape[1]), dtype=bool)
                for x in own_idx[c]:
                    support[x] = eff[topk[x]].max(axis=0) > 0
                others = support.sum(axis=0)[None, :] - support[own_idx[c]]
                valid[own_idx[c]] = (others >= 1) | always[None, :]
            return valid

        def cover(c: int) -> np.ndarray:
            """(n, base): the base classes that count for class c on each photo."""
            cov = np.zeros((n, a.shape[0]), dtype=np.float32)
            masks, sizes, always = items(c)
            eff = effective(c, masks, sizes)
            valid = valid_for(c, eff, always)
            for j in range(eff.shape[1]):
                cov[valid[:, j]] = np.maximum(cov[valid[:, j]], eff[:, j])
            return cov

        covers = [cover(c) for c in range(k)]
        for _ in range(self.max_nodes):
            if cancel is not None:
                cancel.raise_if_cancelled()
            best = (self.min_gain, -1, -1)
            for c in range(k):
                if len(cand[c]) == 0 or not own[c].any():
                    continue
                masks, _, _ = items(c)
                others = [items(o)[0] for o in range(k) if o != c]
                allowed = self._allowed(cand[c], masks.max(axis=1) if masks.shape[1] else None,
                                        np.concatenate(others, axis=1) if others else masks[:, :0])
                if not allowed.any():
                    continue
                sub = a[:, cand[c]] * allowed[None, :]  # a node it may not choose adds nothing
                eff = effective(c, sub, sub.sum(axis=0))
                valid = valid_for(c, eff, np.zeros(len(cand[c]), dtype=bool))
                mass = (p * covers[c]).sum(axis=1)
                extra = ((p * (1.0 - covers[c])) @ eff) * valid  # mass each candidate would add
                gains = (logistic_gain(np.log(mass[:, None] + extra + EPS), own[c])
                         - logistic_gain(np.log(mass[:, None] + EPS), own[c])[0])
                j = int(np.argmax(gains))
                if gains[j] > best[0]:
                    best = (float(gains[j]), c, j)
            gain, c, j = best
            if c < 0:
                break
            held[c].append(int(cand[c][j]))
            gained[c].append(gain)
            cand[c] = np.delete(cand[c], j)
            covers = [cover(i) for i in range(k)]  # a narrower node can take classes from others
        final = []
        for c in range(k):
            masks, sizes, _ = items(c)
            eff = effective(c, masks, sizes)
            final.append(eff.max(axis=1) if eff.shape[1] else np.zeros(len(every), np.float32))
        log_mass = np.log(np.stack([(p * covers[c]).sum(axis=1) for c in range(k)], axis=1) + EPS)
        self.chosen = [[ChosenNode(self.nm.hierarchy.node_name(self.nm.ids[j]), support[c].get(j, 0),
                                   len(own_idx[c]), g) for j, g in zip(held[c], gained[c])] for c in range(k)]
        return np.stack(final, axis=1), log_mass, [[node.name for node in chosen] for chosen in self.chosen]
