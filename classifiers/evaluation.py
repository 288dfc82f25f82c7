"""Cross-validation and evaluation of artifact classifiers (accuracy at P = 0.5 and ROC AUC).

Repeated K-fold: for every seed, the folds are reshuffled (and stochastic recipes get that seed as random_state),
the out-of-fold probabilities of all rows are pooled, and accuracy / ROC AUC are computed on them. The figures are
the mean over seeds with the standard error of that mean (SEM over seeds: how much the estimate moves with the
split, NOT the uncertainty about unseen data, which the per-fold SEM reflects better; both are reported).

``protocol="kfold"`` reproduces the authors' evaluation: plain (unstratified) shuffled KFold, random_state 0 for
the forest whatever the split seed, and the mean of per-fold accuracies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .estimators import ArtifactClassifier, make_model


def sem(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (probability that a random artifact scores above a random natural image, ties count 1/2)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


@dataclass
class Evaluation:
    n: int
    n_artifact: int
    accuracy: float
    auc: float
    threshold: float = 0.5
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def line(self) -> str:
        return f"accuracy={self.accuracy:.4f} auc={self.auc:.4f} n={self.n}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate_probabilities(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Evaluation:
    y = np.asarray(y).astype(np.int64)
    pred = (np.asarray(p) > threshold).astype(np.int64)
    return Evaluation(n=int(y.size), n_artifact=int(y.sum()), accuracy=float((pred == y).mean()), auc=roc_auc(y, p),
                      threshold=threshold, tp=int(((pred == 1) & (y == 1)).sum()),
                      fp=int(((pred == 1) & (y == 0)).sum()), tn=int(((pred == 0) & (y == 0)).sum()),
                      fn=int(((pred == 0) & (y == 1)).sum()))


@dataclass
class CVResult:
    recipe: str
    params: dict[str, Any]
    folds: int
    seeds: list[int]
    protocol: str
    accuracy: list[float] = field(default_factory=list)      # per seed (pooled out-of-fold)
    auc: list[float] = field(default_factory=list)           # per seed (pooled out-of-fold)
    fold_accuracy: list[list[float]] = field(default_factory=list)  # per seed, per fold
    n: int = 0
    n_artifact: int = 0
    grouped: bool = False
    seconds: float = 0.0

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracy))

    @property
    def accuracy_sem(self) -> float:
        return sem(self.accuracy)

    @property
    def auc_mean(self) -> float:
        return float(np.mean(self.auc))

    @property
    def auc_sem(self) -> float:
        return sem(self.auc)

    @property
    def fold_sem(self) -> float:
        """Mean over seeds of the SEM of the per-fold accuracies (the authors' "SEM")."""
        return float(np.mean([sem(f) for f in self.fold_accuracy]))

    def as_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "params": self.params, "folds": self.folds, "seeds": self.seeds,
                "protocol": self.protocol, "grouped": self.grouped, "n": self.n, "n_artifact": self.n_artifact,
                "accuracy_mean": self.accuracy_mean, "accuracy_sem": self.accuracy_sem, "auc_mean": self.auc_mean,
                "auc_sem": self.auc_sem, "fold_accuracy_sem": self.fold_sem, "accuracy_per_seed": self.accuracy,
                "auc_per_seed": self.auc}

    def summary(self) -> str:
        g = ", grouped" if self.grouped else ""
        return (f"{self.recipe}: accuracy {self.accuracy_mean:.4f} +- {self.accuracy_sem:.4f}, "
                f"AUC {self.auc_mean:.4f} +- {self.auc_sem:.4f} (mean +- SEM over {len(self.seeds)} seed(s) "
                f"{self.seeds[0]}..{self.seeds[-1]}; {self.folds}-fold {self.protocol}{g}; per-fold accuracy SEM "
                f"{self.fold_sem:.4f}; n={self.n}, {self.n_artifact} artifacts)"
                + ("; the SEM over seeds needs --seeds 2 or more" if len(self.seeds) < 2 else ""))


def _splits(protocol: str, folds: int, seed: int, X, y, groups):
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    if protocol == "kfold":
        if groups is not None:
            raise ValueError("grouped CV needs the stratified protocol")
        return KFold(folds, shuffle=True, random_state=seed).split(X, y)
    if protocol != "stratified":
        raise ValueError(f"unknown CV protocol {protocol!r}; use 'stratified' or 'kfold'")
    if groups is not None:
        return StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(X, y, groups)
    return StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y)


def seeded_model(recipe: str, params: dict[str, Any], seed: int, protocol: str) -> ArtifactClassifier:
    """The recipe with ``random_state=seed`` where it has one (kept at its own value in the paper protocol)."""
    est = make_model(recipe, **params)
    if "random_state" in est.get_params() and "random_state" not in params and protocol != "kfold":
        est.set_params(random_state=seed)
    return est


def cross_validate(X: np.ndarray, y: np.ndarray, recipe: str = "default", params: dict[str, Any] | None = None,
                   folds: int = 10, seeds: Sequence[int] = (0, 1, 2, 3, 4), protocol: str = "stratified",
                   groups: Sequence[str] | None = None,
                   on_fold: Callable[[int, int], None] | None = None) -> CVResult:
    """Repeated K-fold CV of a recipe. ``on_fold(done, total)`` is called after every fold (progress, cancel)."""
    params = dict(params or {})
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if np.bincount(y, minlength=2).min() < folds and protocol == "stratified":
        raise ValueError(f"{folds}-fold CV needs at least {folds} examples of each class; this data has "
                         f"{int(y.sum())} artifacts and {int((y == 0).sum())} natural. Lower the number of folds or "
                         "label more images.")
    g = np.asarray(groups) if groups is not None else None
    name = make_model(recipe, **params).recipe
    res = CVResult(name, params, folds, [int(s) for s in seeds], protocol, n=int(y.size), n_artifact=int(y.sum()),
                   grouped=g is not None)
    total, done = folds * len(res.seeds), 0
    t0 = time.perf_counter()
    for seed in res.seeds:
        p = np.full(y.shape[0], np.nan)
        fold_acc = []
        for tr, te in _splits(protocol, folds, seed, X, y, g):
            est = seeded_model(recipe, params, seed, protocol).fit(X[tr], y[tr])
            p[te] = est.predict_proba(X[te])[:, 1]
            fold_acc.append(float(((p[te] > 0.5) == (y[te] == 1)).mean()))
            done += 1
            if on_fold is not None:
                on_fold(done, total)
        res.fold_accuracy.append(fold_acc)
        if protocol == "kfold":
            res.accuracy.append(float(np.mean(fold_acc)))
        else:
            res.accuracy.append(float(((p > 0.5) == (y == 1)).mean()))
        res.auc.append(roc_auc(y, p))
    res.seconds = time.perf_counter() - t0
    return res
