"""Few-shot heads that use what the base model knows, chosen on the user's photos by cross-validation.

With 5-30 photos per class, a head trained on features alone generalises badly to sub-types the
photos do not show (train on beagles and collies, test on pugs). The base model's probabilities,
summed over a label hierarchy, generalise: "a dog" is the mass over the 118 breeds. The heads
here, each on a photo's base probabilities ``P`` (base classes) and features ``f``:

* ``names``: the mass under each class's name (:mod:`vit_desktop.core.labels.categories`), calibrated:
  ``z_k = s·log(m_k + eps) + b_k``;
* ``hierarchy``: the photos choose, per class, the hierarchy's nodes whose mass separates its
  photos from the others (greedy, judged leave-one-out), seeded by the names where they resolve;
  then calibrated like ``names``;
* ``blend``: the hierarchy's evidence plus a linear feature term, fitted jointly: it can tell
  apart classes the hierarchy cannot ("my cat" and "her cat");
* ``probabilities``: multinomial logistic regression on ``log P``;
* ``features``: multinomial logistic regression on standardised features (a plain linear head).

:func:`select_head` cross-validates the eligible heads on log-loss (stratified k-fold) and keeps
the first, in the order above, within :data:`TOLERANCE` nats of the best: several heads often get
every held-out photo right, and then the more constrained one generalises further. Every head is a
:class:`~vit_desktop.core.models.vit.FewShotHead` (or a ``Linear`` for ``features``) of one formula, so
the saved model classifies, explains and trains further like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from vit_desktop.core.errors import Cancelled, CancelToken
from vit_desktop.core.labels.hierarchy import Hierarchy, ResolvedClass
from vit_desktop.core.models.vit import FewShotHead
from vit_desktop.core.types import FEW_SHOT_HEADS, HeadSpec

from .nodes import EPS, ChosenNode, NodeMatrix, Selection, name_masks

#: Prior on the temperature s (weight 1 against the summed cross-entropy): separable photos
#: would otherwise drive it to infinity, and cross-validated log-losses to zero.
L2_SCALE = 1.0
L2_BIAS = 1e-2
L2_FEATURES = 1e-1
L2_LOGPROB = 1e-2
#: One held-out photo costs at most -log(1e-4) = 9.2 nats in cross-validation.
LOSS_FLOOR = 1e-4
#: A head within this many nats of the best mean log-loss counts as tied with it.
TOLERANCE = 0.02

#: Head names, most constrained first: the order ties are broken in.
HEADS = FEW_SHOT_HEADS
#: The open-set scores a head can have (:func:`known_kind`).
KNOWN_KINDS = ("known_mass", "nearest_photo")


# --------------------------------------------------------------------------------------------
# Data and fitted heads


@dataclass(frozen=True)
class HeadData:
    """What the heads see of a set of photos."""

    logits: np.ndarray  # (n, base classes) the base head's logits
    features: np.ndarray  # (n, d) what the base head reads
    y: np.ndarray  # (n,) class index

    @property
    def log_p(self) -> np.ndarray:
        z = self.logits.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return out

    def take(self, idx: np.ndarray) -> HeadData:
        return HeadData(self.logits[idx], self.features[idx], self.y[idx])

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Params:
    """One head as numbers: ``z = s·log(P·M + eps) + W_p·std(log P) + W_f·std(f) + b``."""

    bias: np.ndarray  # (K,)
    masks: np.ndarray | None = None  # (base classes, K) 0/1
    scale: float = 1.0
    logprob: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # W (K, base), mean, std
    features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # W (K, d), mean, std
    #: Per class, the hierarchy's nodes it owns (for people: "dog.n.01").
    nodes: list[list[str]] = field(default_factory=list)
    #: The same nodes with what each rests on (how many photos point there, what it gained).
    chosen: list[list[ChosenNode]] = field(default_factory=list)

    def logits(self, data: HeadData) -> np.ndarray:
        z: np.ndarray = np.zeros((len(data), len(self.bias))) + self.bias
        if self.masks is not None or self.logprob is not None:
            log_p = data.log_p
            if self.masks is not None:
                z = z + self.scale * np.log(np.exp(log_p) @ self.masks + EPS)
            if self.logprob is not None:
                w, mu, sd = self.logprob
                z = z + ((log_p - mu) / sd) @ w.T
        if self.features is not None:
            w, mu, sd = self.features
            z = z + ((data.features - mu) / sd) @ w.T
        return z

    def log_proba(self, data: HeadData) -> np.ndarray:
        return _log_softmax(self.logits(data))

    def spec(self, base_classes: int, method: str, base: HeadSpec | None) -> HeadSpec:
        return HeadSpec(base_classes=base_classes, mass=self.masks is not None, logprob=self.logprob is not None,
                        features=self.features is not None, eps=EPS, method=method, base=base)

    def module(self, base: nn.Module, base_classes: int, method: str, base_spec: HeadSpec | None,
               feature_size: int) -> nn.Module:
        """The head as a module on the features: a ``Linear`` when only features count, else a
        :class:`FewShotHead` around ``base`` (the base model's own head, copied)."""
        k = len(self.bias)
        if self.masks is None and self.logprob is None and self.features is not None:
            w, mu, sd = self.features
            # (f - mu) / sd @ W.T + b folded into one Linear: a plain torchvision model again.
            linear = nn.Linear(feature_size, k)
            with torch.no_grad():
                linear.weight.copy_(torch.as_tensor(w / sd, dtype=torch.float32))
                linear.bias.copy_(torch.as_tensor(self.bias - (w * (mu / sd)).sum(1), dtype=torch.float32))
            return linear
        head = FewShotHead(self.spec(base_classes, method, base_spec), feature_size, k, base=base)
        with torch.no_grad():
            head.bias.copy_(torch.as_tensor(self.bias, dtype=torch.float32))
            if self.masks is not None:
                head.masks.copy_(torch.as_tensor(self.masks, dtype=torch.float32))
                head.mass_scale.fill_(float(self.scale))
            if self.logprob is not None:
                w, mu, sd = self.logprob
                head.logprob_weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                head.logprob_mean.copy_(torch.as_tensor(mu, dtype=torch.float32))
                head.logprob_std.copy_(torch.as_tensor(sd, dtype=torch.float32))
            if self.features is not None:
                w, mu, sd = self.features
                head.feature_weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                head.feature_mean.copy_(torch.as_tensor(mu, dtype=torch.float32))
                head.feature_std.copy_(torch.as_tensor(sd, dtype=torch.float32))
        return head


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


# --------------------------------------------------------------------------------------------
# Regressions (tiny problems: LBFGS in float64)


def _fit_linear(
    parts: Sequence[tuple[np.ndarray, float]], y: np.ndarray, k: int, *, mass: np.ndarray | None = None,
    max_iter: int = 200,
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Weights for each (X, l2) in ``parts``, the bias and (with ``mass`` (n, K)) the scale s, of
    z = s·mass + Σ X·Wᵀ + b by mean cross-entropy + ½λ‖W‖² + ½·L2_BIAS‖b‖² + ½(L2_SCALE/n)s²."""
    yt = torch.as_tensor(y, dtype=torch.long)
    n = len(y)
    xs = [torch.as_tensor(x, dtype=torch.float64) for x, _ in parts]
    ws = [torch.zeros(k, x.shape[1], dtype=torch.float64, requires_grad=True) for x in xs]
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    s = torch.ones((), dtype=torch.float64, requires_grad=True)
    m = torch.as_tensor(mass, dtype=torch.float64) if mass is not None else None
    params = [*ws, b] + ([s] if m is not None else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = b.expand(n, k)
        for x, w in zip(xs, ws):
            z = z + x @ w.T
        loss = 0.5 * L2_BIAS * (b * b).sum()
        if m is not None:
            z = z + s * m
            loss = loss + 0.5 * L2_SCALE / n * s * s
        loss = loss + torch.nn.functional.cross_entropy(z, yt)
        for w, (_, l2) in zip(ws, parts):
            loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
        return loss

    if n:
        opt.step(closure)  # type: ignore[no-untyped-call]  # LBFGS.step's closure is untyped in torch
    return [w.detach().numpy() for w in ws], b.detach().numpy(), float(s.detach())


def _standardise(x: np.ndarray, extra: float) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), x.std(axis=0) + extra


# --------------------------------------------------------------------------------------------
# Heads


class Head:
    """A way to fit a head on photos; ``fit`` returns its :class:`Params`."""

    name = ""

    def fit(self, data: HeadData, k: int, cancel: CancelToken | None = None) -> Params:
        raise NotImplementedError


class NamesHead(Head):
    """The mass under each class's name, calibrated (every class needs a name that resolves)."""

    name = "names"

    def __init__(self, masks: Sequence[np.ndarray | None]) -> None:
        self.masks = masks

    def fit(self, data: HeadData, k: int, cancel: CancelToken | None = None) -> Params:
        m = np.stack([mk for mk in self.masks if mk is not None], axis=1)
        if not len(data):  # no photos at all: the names as they are
            return Params(bias=np.zeros(k), masks=m, scale=1.0)
        log_mass = np.log(np.exp(data.log_p) @ m + EPS)
        _, b, s = _fit_linear([], data.y, k, mass=log_mass)
        return Params(bias=b, masks=m, scale=s)


class HierarchyHead(Head):
    """Nodes chosen by the photos (seeded by names), calibrated; with ``features`` a blend."""

    def __init__(self, nm: NodeMatrix, names: Sequence[np.ndarray | None], *, features: bool = False) -> None:
        self.nm = nm
        self.names = names
        self.features = features
        self.name = "blend" if features else "hierarchy"

    def fit(self, data: HeadData, k: int, cancel: CancelToken | None = None) -> Params:
        selection = Selection(self.nm, self.names)
        masks, log_mass, nodes = selection.fit(data.y, data.log_p, k, cancel)
        if not self.features:
            _, b, s = _fit_linear([], data.y, k, mass=log_mass)
            return Params(bias=b, masks=masks, scale=s, nodes=nodes, chosen=selection.chosen)
        mu, sd = _standardise(data.features, 1e-6)
        (w,), b, s = _fit_linear([((data.features - mu) / sd, L2_FEATURES)], data.y, k, mass=log_mass)
        return Params(bias=b, masks=masks, scale=s, features=(w, mu, sd), nodes=nodes, chosen=selection.chosen)


class ProbabilitiesHead(Head):
    """Logistic regression on the base model's log-probabilities."""

    name = "probabilities"

    def fit(self, data: HeadData, k: int, cancel: CancelToken | None = None) -> Params:
        x = data.log_p
        mu, sd = _standardise(x, 1.0)  # +1: most columns barely vary
        (w,), b, _ = _fit_linear([((x - mu) / sd, L2_LOGPROB)], data.y, k)
        return Params(bias=b, logprob=(w, mu, sd))


class FeaturesHead(Head):
    """Logistic regression on standardised features: a linear head."""

    name = "features"

    def fit(self, data: HeadData, k: int, cancel: CancelToken | None = None) -> Params:
        mu, sd = _standardise(data.features, 1e-6)
        (w,), b, _ = _fit_linear([((data.features - mu) / sd, L2_FEATURES)], data.y, k)
        return Params(bias=b, features=(w, mu, sd))


def candidates(k: int, names: Sequence[ResolvedClass | None], hierarchy: Hierarchy | None,
               allowed: Sequence[str] = HEADS) -> list[Head]:
    """The heads that can be fitted for these classes, most constrained first."""
    heads: list[Head] = []
    if hierarchy is not None:
        nm = NodeMatrix(hierarchy)
        masks = name_masks(names, hierarchy.num_classes)
        if all(m is not None for m in masks):
            heads.append(NamesHead(masks))
        heads.append(HierarchyHead(nm, masks))
        heads.append(HierarchyHead(nm, masks, features=True))
    heads += [ProbabilitiesHead(), FeaturesHead()]
    return [h for h in heads if h.name in allowed]


# --------------------------------------------------------------------------------------------
# Open-set scores (:mod:`vit_desktop.core.models.open_set` computes the same on tensors)


#: The hierarchy's mass is a head's open-set score only where its training photos hold at least this
#: much of it, in the median: "my mug" and "her mug" chose a coffeepot and a whiskey jug (what else
#: their photos resemble), which hold 5 % of a mug photo's probability and say nothing about mugs.
MASS_FLOOR = 0.5


def known_kind(params: Params, train: HeadData) -> str:
    """The open-set score of a head fitted on ``train``: the mass its classes hold, for heads on the
    hierarchy where every class holds some and it describes the photos (:data:`MASS_FLOOR`), else
    the similarity to the nearest training photo (OpenOOD's KNN; on fewshot-dev it separated
    left-out categories better than prototypes or relative Mahalanobis with a shrunk covariance)."""
    if params.masks is None or not bool((params.masks.sum(axis=0) > 0).all()):
        return "nearest_photo"
    if len(train) and float(np.median(known_scores(params, train, train, "known_mass"))) < MASS_FLOOR:
        return "nearest_photo"
    return "known_mass"


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def known_scores(params: Params, train: HeadData, data: HeadData, kind: str) -> np.ndarray:
    """(n,) how much each photo of ``data`` looks like one of the head's classes, by ``kind``: the
    base probability its classes cover (``known_mass``), or its features' cosine similarity to the
    nearest of ``train`` (``nearest_photo``)."""
    if kind == "known_mass":
        if params.masks is None:
            raise ValueError("only a head on the hierarchy has a mass")
        out: np.ndarray = np.exp(data.log_p) @ np.clip(params.masks.sum(axis=1), 0.0, 1.0)
        return out
    if not len(train):
        return np.zeros(len(data))
    # (n, d) @ (d, train) -> (n, train) -> (n,)
    nearest: np.ndarray = (unit(data.features) @ unit(train.features).T).max(axis=1)
    return nearest


# --------------------------------------------------------------------------------------------
# Cross-validation


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of indices; each class is shuffled and dealt round-robin (every fold gets some)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for i, x in enumerate(idx):
            folds[(i + offset) % k].append(int(x))
        offset += len(idx)
    return [np.array(sorted(f)) for f in folds if f]


@dataclass(frozen=True)
class HeadScore:
    """How a head did on held-out photos."""

    name: str
    loss: float  # mean log-loss (nats)
    accuracy: float


@dataclass
class Choice:
    """The head the photos chose, fitted on all of them, and how every head did held out."""

    name: str
    params: Params
    scores: list[HeadScore]
    #: Held-out prediction of every photo by the chosen head (None when nothing was held out).
    held_out: np.ndarray | None
    folds: int
    #: Cross-validation was cut short: the choice is among the heads scored until then.
    cancelled: bool = False
    #: Per score kind, per photo: the chosen head's open-set score (:func:`known_scores`) when the
    #: photo was held out; None when nothing was held out.
    held_out_known: dict[str, np.ndarray] | None = None
    #: (photos, classes): each photo's class probabilities by the chosen head when it was held out.
    held_out_proba: np.ndarray | None = None

    @property
    def score(self) -> HeadScore | None:
        return next((s for s in self.scores if s.name == self.name), None)

    def summary(self) -> str:
        """"hierarchy head: CV accuracy 95% vs blend 96%, features 71%; chosen on CV log-loss: 0.061,
        within 0.02 of blend's 0.053, and more constrained": the rule :func:`select_head` applies, in
        its own terms."""
        mine = self.score
        if mine is None:
            return f"{self.name} head (no photos to validate on)"
        others = ", ".join(f"{s.name} {s.accuracy:.0%}" for s in self.scores if s.name != self.name)
        text = f"{self.name} head: CV accuracy {mine.accuracy:.0%}" + (f" vs {others}" if others else "")
        best = min(self.scores, key=lambda s: s.loss)
        if len(self.scores) < 2:
            return text
        if best.name == self.name or best.loss >= mine.loss:
            return text + f"; chosen on CV log-loss: the lowest, {mine.loss:.3f}"
        return (text + f"; chosen on CV log-loss: {mine.loss:.3f}, within {TOLERANCE} of {best.name}'s "
                f"{best.loss:.3f}, and more constrained (it holds further beyond the photos)")


def select_head(
    data: HeadData,
    k: int,
    heads: Sequence[Head],
    *,
    seed: int = 0,
    folds: int = 5,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: CancelToken | None = None,
) -> Choice:
    """Cross-validate ``heads`` on log-loss, keep the first within :data:`TOLERANCE` of the best,
    refit it on every photo. With fewer than two photos in every class there is nothing to hold
    out: the first head is fitted as it is."""
    if not heads:
        raise ValueError("no head to choose from")
    counts = np.bincount(data.y, minlength=k)
    present = counts[counts > 0]
    if len(present) < 2:
        # Nothing to hold out against (names alone, or one class with photos).
        return Choice(heads[0].name, heads[0].fit(data, k), [], None, 0)
    n_folds = int(max(2, min(folds, present.min())))
    split = stratified_folds(data.y, n_folds, seed)
    losses: dict[str, np.ndarray] = {}
    predictions: dict[str, np.ndarray] = {}
    probabilities: dict[str, np.ndarray] = {}
    knowns: dict[str, dict[str, np.ndarray]] = {}
    everyone = np.arange(len(data))
    cancelled = False
    try:
        for i, head in enumerate(heads):
            if progress is not None:
                progress(i, len(heads), f"cross-validating the {head.name} head ({i + 1}/{len(heads)})")
            loss = np.zeros(len(data))
            pred = np.zeros(len(data), dtype=int)
            proba = np.zeros((len(data), k))
            known: dict[str, np.ndarray] = {}
            for held in split:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                train = np.setdiff1d(everyone, held)
                fitted = head.fit(data.take(train), k, cancel)
                log_p = fitted.log_proba(data.take(held))
                loss[held] = -np.maximum(log_p[np.arange(len(held)), data.y[held]], math.log(LOSS_FLOOR))
                pred[held] = log_p.argmax(axis=1)
                proba[held] = np.exp(log_p)
                for kind in KNOWN_KINDS if fitted.masks is not None else KNOWN_KINDS[1:]:
                    known.setdefault(kind, np.zeros(len(data)))[held] = known_scores(
                        fitted, data.take(train), data.take(held), kind)
            losses[head.name] = loss
            predictions[head.name] = pred
            probabilities[head.name] = proba
            knowns[head.name] = known
    except Cancelled:
        # Stopped: the heads scored so far still choose; a head fits in milliseconds, so even a
        # cancel before the first score leaves a usable model.
        cancelled = True
    scored = [h for h in heads if h.name in losses]
    if not scored:
        return Choice(heads[0].name, heads[0].fit(data, k), [], None, 0, cancelled=True)
    means = {name: float(v.mean()) for name, v in losses.items()}
    best = min(means.values())
    chosen = next(h for h in scored if means[h.name] <= best + TOLERANCE)
    if progress is not None:
        progress(len(heads), len(heads), f"fitting the {chosen.name} head on every photo")
    params = chosen.fit(data, k)
    scores = [HeadScore(h.name, means[h.name], float((predictions[h.name] == data.y).mean())) for h in scored]
    return Choice(chosen.name, params, scores, predictions[chosen.name], n_folds, cancelled,
                  held_out_known=knowns[chosen.name], held_out_proba=probabilities[chosen.name])


__all__ = [
    "HEADS",
    "known_kind",
    "known_scores",
    "unit",
    "Choice",
    "HeadData",
    "HeadScore",
    "Params",
    "candidates",
    "select_head",
    "stratified_folds",
]
