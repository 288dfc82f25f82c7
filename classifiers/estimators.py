"""Artifact classifiers with the scikit-learn contract (fit / predict_proba / predict, get_params, clone).

Every estimator takes raw similarity series X [n, L] (one trajectory per row, no NaN) and a binary y; the second
class of ``classes_`` is the positive one ("artifact": label 1 in this pack's data, i.e. ``naturalness ==
unnatural``). Featurisation happens inside, so a fitted estimator is the whole model. Learned state is a handful
of numpy arrays (trailing underscore), which is what the safe model file stores (:mod:`classifiers.modelfile`);
predictions are computed by this module's own code from those arrays, so they are identical after save -> load.

Recipes (``RECIPES``):

- ``log_distance`` (the pack's default): u = log(1 - z) per value, standardised, L2 logistic regression (C = 0.01).
- ``paper_rf``: Menn et al.'s committed pipeline: StandardScaler + RandomForest(1000 trees, random_state 0) on the
  raw series (optionally a slice ``dims``).
- ``paper_haar_knn``: the variant the paper describes: StandardScaler, a 13-NN cosine "P(artifact)" on the last 32
  values (leave-self-out on training rows), Haar pyramid + time bins + 11 statistics (121 features) -> RF(1000).
- ``dmax_rule``: the model-free rule: D_max over the last 60 % of the series, relative to the series' range (or
  absolute); artifact when above a threshold.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from .features import (
    LATE_WINDOW_START,
    haar_feature_names,
    haar_statistics,
    late_drawdown,
    log_distance,
    relative_late_drop,
)
from .forest import TreeEnsemble

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    out = np.empty_like(t, dtype=np.float64)
    pos = t >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-t[pos]))
    e = np.exp(t[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _scaler_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler's mean_ and scale_ (population std; near-constant columns get scale 1)."""
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X)
    return sc.mean_.astype(np.float64), sc.scale_.astype(np.float64)


def _slice(X: np.ndarray, dims) -> np.ndarray:
    if dims is None:
        return X
    start, stop = (list(dims) + [None, None])[:2]
    out = X[:, start:stop]
    if out.shape[1] == 0:
        raise ValueError(f"dims={tuple(dims)} selects no value of series of length {X.shape[1]}")
    return out


def _dims_range(dims, length: int) -> range:
    if dims is None:
        return range(length)
    start, stop = (list(dims) + [None, None])[:2]
    return range(length)[slice(start, stop)]


class ArtifactClassifier(ClassifierMixin, BaseEstimator):
    """Common part: binary targets, input validation, probabilities, the array state for model files."""

    recipe: ClassVar[str] = ""
    _state_names: ClassVar[tuple[str, ...]] = ()
    poor_score: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------------------- sklearn
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.poor_score = self.poor_score
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"binary_only": True, "poor_score": self.poor_score}

    def fit(self, X, y):
        """Fit on similarity series X [n, L] and binary labels y (the larger label is "artifact")."""
        X, y = _validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
        classes, yi = np.unique(y, return_inverse=True)
        if classes.shape[0] != 2:
            raise ValueError(f"the training data holds one class only ({classes[0]!r}); label examples of both "
                             "classes (artifact and natural)")
        self.classes_ = classes
        self._fit(X, yi.astype(np.int64))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """[n, 2] probabilities of classes_ (column 1 = P(artifact))."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        p1 = np.clip(self._proba(X), 0.0, 1.0)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X) -> np.ndarray:
        """The more likely class (artifact when P(artifact) > 0.5)."""
        positive = self.predict_proba(X)[:, 1] > 0.5
        return self.classes_[positive.astype(np.int64)]

    # ----------------------------------------------------------------------------------------------- subclass API
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def feature_names(self, length: int | None = None) -> list[str]:
        """Names of the features the estimator computes from a series of ``length`` values."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------- state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The learned arrays (what a model file stores)."""
        check_is_fitted(self)
        out = {name: np.ascontiguousarray(getattr(self, name)) for name in self._state_names}
        forest = getattr(self, "forest_", None)
        if forest is not None:
            out.update(forest.to_arrays("forest."))
        return out

    def load_state(self, arrays: dict[str, np.ndarray], classes: list, n_features_in: int) -> ArtifactClassifier:
        """Set the learned state from :meth:`state_arrays` output; checks names and shapes."""
        missing = [n for n in self._state_names if n not in arrays]
        if missing:
            raise ValueError(f"model arrays missing for {self.recipe}: {missing}")
        for n in self._state_names:
            setattr(self, n, np.asarray(arrays[n]))
        if any(k.startswith("forest.") for k in arrays):
            self.forest_ = TreeEnsemble.from_arrays(arrays, "forest.")
        self.classes_ = np.asarray(classes)
        if self.classes_.shape[0] != 2:
            raise ValueError(f"a binary model needs 2 classes, the file lists {list(classes)}")
        self.n_features_in_ = int(n_features_in)
        self._check_state()
        return self

    def _check_state(self) -> None:
        """Shape checks after loading (subclasses add theirs)."""


# =============================================================================================== default
class LogDistanceClassifier(ArtifactClassifier):
    """The pack's default: u = log(max(1 - z, eps)), standardised, L2-regularised logistic regression.

    A linear model on the log distance to 1 of every value: it learns which phases of the run are "still
    changing" in images with artifacts (the middle of the run) and "already frozen" (the very end, the first steps).
    Strong regularisation (C = 0.01) keeps 50 correlated weights stable with a few hundred examples.
    """

    recipe = "log_distance"
    _state_names = ("mean_", "scale_", "coef_", "intercept_")
    # The features assume similarities <= 1 (log of 1 - z); on scikit-learn's generic test data (blobs around
    # +-10) every value above 1 maps to the same log(eps), so the generic accuracy check cannot pass.
    poor_score = True

    def __init__(self, C: float = 0.01, eps: float = 1e-8, max_iter: int = 5000):
        self.C = C
        self.eps = eps
        self.max_iter = max_iter

    def _features(self, X: np.ndarray) -> np.ndarray:
        return (log_distance(X, self.eps) - self.mean_) / self.scale_

    def _fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        u = log_distance(X, self.eps)
        self.mean_, self.scale_ = _scaler_fit(u)
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            lr.fit((u - self.mean_) / self.scale_, y)
        self.coef_ = lr.coef_.reshape(-1).astype(np.float64)
        self.intercept_ = lr.intercept_.reshape(-1).astype(np.float64)
        self.n_iter_ = np.asarray(lr.n_iter_).reshape(-1)  # not stored in model files (diagnostic only)

    def _proba(self, X):
        return _sigmoid(self._features(X) @ self.coef_ + self.intercept_[0])

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        return self._features(X) @ self.coef_ + self.intercept_[0]

    def feature_names(self, length=None):
        return [f"log(1-z{j})" for j in range(length if length is not None else self.n_features_in_)]

    def _check_state(self):
        L = self.n_features_in_
        for n in ("mean_", "scale_", "coef_"):
            if getattr(self, n).shape != (L,):
                raise ValueError(f"{n} has shape {getattr(self, n).shape}, expected ({L},)")
        if self.intercept_.shape != (1,):
            raise ValueError("intercept_ must hold one value")


# =============================================================================================== paper, vanilla
class PaperForestClassifier(ArtifactClassifier):
    """Menn et al.'s committed pipeline: StandardScaler + RandomForestClassifier on the raw series.

    ``dims=(start, stop)`` keeps a slice of the series (the authors' script used (9, 38); their 72.35 % is with all
    50 values). All forest settings are scikit-learn defaults except n_estimators and random_state.
    """

    recipe = "paper_rf"
    _state_names = ("mean_", "scale_", "feature_importances_")

    def __init__(self, dims=None, n_estimators: int = 1000, random_state: int | None = 0, n_jobs: int | None = None):
        self.dims = dims
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _scaled(self, X):
        return (_slice(X, self.dims) - self.mean_) / self.scale_

    def _fit(self, X, y):
        from sklearn.ensemble import RandomForestClassifier

        Xd = _slice(X, self.dims)
        self.mean_, self.scale_ = _scaler_fit(Xd)
        rf = RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.random_state,
                                    n_jobs=self.n_jobs).fit((Xd - self.mean_) / self.scale_, y)
        self.forest_ = TreeEnsemble.from_sklearn(rf.estimators_)
        self.feature_importances_ = rf.feature_importances_.astype(np.float64)

    def _proba(self, X):
        return self.forest_.predict_proba(self._scaled(X))[:, 1]

    def feature_names(self, length=None):
        return [f"z{j}" for j in _dims_range(self.dims, length if length is not None else self.n_features_in_)]

    def _check_state(self):
        k = len(_dims_range(self.dims, self.n_features_in_))
        for n in ("mean_", "scale_", "feature_importances_"):
            if getattr(self, n).shape != (k,):
                raise ValueError(f"{n} has shape {getattr(self, n).shape}, expected ({k},)")
        self.forest_.validate(n_features=k)


# =============================================================================================== paper, transform
def cosine_knn_fraction(train: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int,
                        leave_self_out: bool = False) -> np.ndarray:
    """Fraction of label-1 rows among the k nearest training rows by cosine distance (1 - cos).

    ``leave_self_out``: ``query`` is ``train`` itself and each row's own entry is excluded (its k nearest *other*
    rows). Zero vectors have cosine 0 to everything (distance 1). Ties go to the lower training index.
    """
    def unit(a):
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(n == 0, 1.0, n)

    d = 1.0 - unit(query) @ unit(train).T
    if leave_self_out:
        np.fill_diagonal(d, np.inf)
    k = min(k, train.shape[0] - (1 if leave_self_out else 0))
    if k < 1:
        raise ValueError("the kNN feature needs at least 2 training rows")
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return labels[idx].astype(np.float64).mean(axis=1)


class PaperHaarKNNClassifier(ArtifactClassifier):
    """The transform variant of Menn et al. (docs/methods.md §1.3), 122 features -> RandomForest.

    1. StandardScaler on the (sliced) series.  2. kNN feature: fraction of artifacts among the ``n_neighbors``
    nearest training rows (cosine) on the last ``knn_dims`` scaled values; for training rows the row itself is left
    out (``n_neighbors - 1`` others), exactly the paper's "counts - own label, / 12".  3. Haar pyramid (pad to 64
    with 1 in scaled units, /2 averaging) + 3 time bins + the whole series, 11 statistics each.  4. RF(1000).
    """

    recipe = "paper_haar_knn"
    _state_names = ("mean_", "scale_", "knn_X_", "knn_y_", "feature_importances_")

    def __init__(self, dims=None, n_neighbors: int = 13, knn_dims: int = 32, n_estimators: int = 1000,
                 random_state: int | None = 0, n_jobs: int | None = None):
        self.dims = dims
        self.n_neighbors = n_neighbors
        self.knn_dims = knn_dims
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _scaled(self, X):
        return (_slice(X, self.dims) - self.mean_) / self.scale_

    def _features(self, S: np.ndarray, knn_p: np.ndarray) -> np.ndarray:
        return np.column_stack([haar_statistics(S), knn_p])

    def _fit(self, X, y):
        from sklearn.ensemble import RandomForestClassifier

        if X.shape[0] < 3:
            raise ValueError(f"the paper's kNN feature needs at least 3 training rows, got {X.shape[0]}")
        Xd = _slice(X, self.dims)
        if Xd.shape[1] > 64:
            raise ValueError(f"the Haar pyramid pads series to 64 values; these have {Xd.shape[1]} (use dims)")
        self.mean_, self.scale_ = _scaler_fit(Xd)
        S = (Xd - self.mean_) / self.scale_
        self.knn_X_ = S[:, -self.knn_dims:].copy()
        self.knn_y_ = y.astype(np.int64)
        p = cosine_knn_fraction(self.knn_X_, self.knn_y_, self.knn_X_, self.n_neighbors - 1, leave_self_out=True)
        rf = RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.random_state,
                                    n_jobs=self.n_jobs).fit(self._features(S, p), y)
        self.forest_ = TreeEnsemble.from_sklearn(rf.estimators_)
        self.feature_importances_ = rf.feature_importances_.astype(np.float64)

    def knn_feature(self, X: np.ndarray) -> np.ndarray:
        """The kNN feature of new series (all ``n_neighbors`` neighbours, nobody left out)."""
        S = self._scaled(X)
        return cosine_knn_fraction(self.knn_X_, self.knn_y_, S[:, -self.knn_dims:], self.n_neighbors)

    def _proba(self, X):
        S = self._scaled(X)
        p = cosine_knn_fraction(self.knn_X_, self.knn_y_, S[:, -self.knn_dims:], self.n_neighbors)
        return self.forest_.predict_proba(self._features(S, p))[:, 1]

    def feature_names(self, length=None):
        return haar_feature_names() + ["knn_p_artifact"]

    def _check_state(self):
        k = len(_dims_range(self.dims, self.n_features_in_))
        for n in ("mean_", "scale_"):
            if getattr(self, n).shape != (k,):
                raise ValueError(f"{n} has shape {getattr(self, n).shape}, expected ({k},)")
        if self.knn_X_.ndim != 2 or self.knn_X_.shape[1] != min(self.knn_dims, k):
            raise ValueError(f"knn_X_ has shape {self.knn_X_.shape}, expected (n, {min(self.knn_dims, k)})")
        if self.knn_y_.shape != (self.knn_X_.shape[0],):
            raise ValueError("knn_y_ must hold one label per kNN row")
        self.forest_.validate(n_features=len(self.feature_names()))


# =============================================================================================== model-free rule
# The shipped rule is the *relative* late drop: D_max over the last 60 % of the series divided by the series' own
# range (values from 1 in the noise-frame layout). Calibrated once on the 544 shared trajectories (DreamSim,
# SD 2.1-base, DDIM 50, noise-frame layout): the threshold is the training-accuracy optimum, chosen within 0.001 in
# every fold of a 10-fold CV (nested CV accuracy 0.697 on 5 seeds, AUC 0.716; the absolute D_max gives 0.690 /
# 0.708); the slope is the log-loss optimum with the centre fixed at the threshold. Being scale-free (a + b z gives
# the same value), it runs on any similarity metric without a threshold of its own; on latent_cosine and
# pixel_ssim series it is UNCALIBRATED (no labelled data of those metrics exists here): P there is a ranking.
# Compared forms: `python benchmarks/artifact_rule_forms.py --data train.csv`.
# Reproduce: `python -m classifiers train --model dmax_rule --data train.csv --out rule.safetensors`.
RULE_DEFAULTS = {"start_fraction": LATE_WINDOW_START, "threshold": 0.086, "slope": 0.60, "eps": 1e-4,
                 "relative": True, "range_start": 1}
# The absolute form (the rule before it was made scale-free), calibrated the same way: for DreamSim series only.
ABSOLUTE_RULE_DEFAULTS = {"start_fraction": LATE_WINDOW_START, "threshold": 0.017, "slope": 0.57, "eps": 1e-4,
                          "relative": False, "range_start": 1}
RULE_TRAINED_FOR = {"metric": "dreamsim", "noise_frame": True, "length": 50}
RULE_CALIBRATION = {"data": "544 labelled DreamSim trajectories (SD 2.1-base, DDIM 50 steps, CFG 9)",
                    "nested_cv_accuracy": 0.697, "auc": 0.716, "majority_class": 0.625}


class DmaxRuleClassifier(ArtifactClassifier):
    """Model-free rule on D_max, the largest drop from a running peak over the values from ``start_fraction`` of
    the series on (the last 60 % by default).

    ``relative=True`` (default) scores D_max / (max - min of the series from value ``range_start`` on), a number
    in [0, 1] that does not depend on the similarity metric's scale; ``relative=False`` scores D_max itself.
    P(artifact) = sigmoid(slope * (ln(score + eps) - ln(threshold + eps))), so P = 0.5 exactly at the threshold.
    ``fit`` learns the threshold (training-accuracy optimum) and the slope (log-loss optimum) where they are None;
    unfitted, :meth:`calibrated` gives the shipped constants (``RULE_DEFAULTS``, calibrated on DreamSim series).
    Files written before ``relative`` existed are absolute rules (the loader sets ``relative=False`` for them).
    """

    recipe = "dmax_rule"
    _state_names = ("threshold_", "slope_")
    poor_score = True

    def __init__(self, start_fraction: float = LATE_WINDOW_START, threshold: float | None = None,
                 slope: float | None = None, eps: float = 1e-4, relative: bool = True, range_start: int = 1):
        self.start_fraction = start_fraction
        self.threshold = threshold
        self.slope = slope
        self.eps = eps
        self.relative = relative
        self.range_start = range_start

    @classmethod
    def calibrated(cls, length: int = RULE_TRAINED_FOR["length"], absolute: bool = False,
                   range_start: int = 1) -> DmaxRuleClassifier:
        """The rule with the shipped constants, ready to predict (no data needed). ``absolute``: the D_max form
        (DreamSim only); ``range_start``: 1 for the noise-frame layout, 0 without the noise frame."""
        d = ABSOLUTE_RULE_DEFAULTS if absolute else RULE_DEFAULTS
        return cls.with_threshold(d["threshold"], d["slope"], length, relative=d["relative"],
                                  start_fraction=d["start_fraction"], eps=d["eps"], range_start=range_start)

    @classmethod
    def with_threshold(cls, threshold: float, slope: float, length: int, relative: bool, start_fraction: float = 0.4,
                       eps: float = 1e-4, range_start: int = 1) -> DmaxRuleClassifier:
        """A ready rule with the given constants."""
        rule = cls(start_fraction=start_fraction, threshold=float(threshold), slope=float(slope), eps=eps,
                   relative=bool(relative), range_start=int(range_start))
        rule.classes_ = np.array([0, 1])
        rule.n_features_in_ = int(length)
        rule.threshold_ = np.array([float(threshold)], dtype=np.float64)
        rule.slope_ = np.array([float(slope)], dtype=np.float64)
        return rule

    def drawdown(self, X: np.ndarray) -> np.ndarray:
        """D_max of every row over the late window (the absolute drop, in similarity units)."""
        return late_drawdown(np.asarray(X, dtype=np.float64), self.start_fraction)

    def rule_score(self, X: np.ndarray) -> np.ndarray:
        """What the threshold applies to: the relative late drop, or D_max for ``relative=False``."""
        X = np.asarray(X, dtype=np.float64)
        if self.relative:
            return relative_late_drop(X, self.start_fraction, int(self.range_start))
        return self.drawdown(X)

    def _fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        d = self.rule_score(X)
        if self.threshold is not None:
            thr = float(self.threshold)
        else:
            thr = best_threshold(d, y)
        lthr = np.log(thr + self.eps)
        if self.slope is not None:
            slope = float(self.slope)
        else:
            t = (np.log(d + self.eps) - lthr).reshape(-1, 1)
            lr = LogisticRegression(C=1e4, fit_intercept=False, max_iter=1000).fit(t, y)
            slope = float(max(lr.coef_[0, 0], 0.05))  # the rule says "larger drop = artifact": keep it increasing
        self.threshold_ = np.array([thr], dtype=np.float64)
        self.slope_ = np.array([slope], dtype=np.float64)

    def _proba(self, X):
        d = self.rule_score(X)
        return _sigmoid(self.slope_[0] * (np.log(d + self.eps) - np.log(self.threshold_[0] + self.eps)))

    def feature_names(self, length=None):
        return ["late_d_max_relative" if self.relative else "late_d_max"]

    def _check_state(self):
        if self.threshold_.shape != (1,) or self.slope_.shape != (1,):
            raise ValueError("the D_max rule stores one threshold and one slope")
        if not (np.isfinite(self.threshold_).all() and self.threshold_[0] >= 0 and np.isfinite(self.slope_).all()):
            raise ValueError("the D_max rule's threshold must be finite and >= 0, its slope finite")


def best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    """Threshold t maximising the accuracy of (score > t); midpoints between sorted values (ties -> lowest t)."""
    s = np.unique(score)
    cands = np.concatenate([[s[0] - 1e-12], (s[:-1] + s[1:]) / 2.0]) if s.shape[0] > 1 else s
    accs = [np.mean((score > t) == (y == 1)) for t in cands]
    return float(max(cands[int(np.argmax(accs))], 0.0))


# =============================================================================================== transformers
class LogDistanceFeatures(TransformerMixin, BaseEstimator):
    """Stateless transformer: series -> log(max(1 - z, eps)) (the default classifier's features)."""

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def fit(self, X, y=None):
        _validate_data(self, X, dtype=np.float64)
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        return log_distance(X, self.eps)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags


class HaarStatisticsFeatures(TransformerMixin, BaseEstimator):
    """Stateless transformer: series (already scaled, at most 64 values) -> the paper's 121 Haar/bin statistics."""

    def __init__(self, size: int = 64, pad_value: float = 1.0, n_bins: int = 3):
        self.size = size
        self.pad_value = pad_value
        self.n_bins = n_bins

    def fit(self, X, y=None):
        X = _validate_data(self, X, dtype=np.float64)
        if X.shape[1] > self.size:
            raise ValueError(f"series have {X.shape[1]} values; the Haar pyramid pads to at most {self.size}")
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        return haar_statistics(X, self.size, self.pad_value, self.n_bins)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(haar_feature_names(self.size, self.n_bins), dtype=object)


# =============================================================================================== registry
RECIPES: dict[str, type[ArtifactClassifier]] = {
    "log_distance": LogDistanceClassifier,
    "paper_rf": PaperForestClassifier,
    "paper_haar_knn": PaperHaarKNNClassifier,
    "dmax_rule": DmaxRuleClassifier,
}
DEFAULT_RECIPE = "log_distance"
ALIASES = {"default": DEFAULT_RECIPE}


def recipe_names() -> list[str]:
    return ["default", *RECIPES]


def make_model(name: str = "default", **params: Any) -> ArtifactClassifier:
    """A fresh estimator of a named recipe ("default" = the pack's default) with optional parameters."""
    key = ALIASES.get(name, name)
    if key not in RECIPES:
        raise ValueError(f"unknown classifier recipe {name!r}; choose one of {', '.join(recipe_names())}")
    cls = RECIPES[key]
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameter for recipe {key!r}: {e}. Valid: {sorted(cls().get_params())}") from e
