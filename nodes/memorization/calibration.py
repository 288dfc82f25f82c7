"""Calibrating the memorization guard: weights and threshold from labelled prompts (pure numpy + scikit-learn).

The paper fits gamma (the weights of the norm and cosine terms) "once by a small logistic regression" on memorized
prompts (docs/methods.md §4.1); its released evaluation (``detect_eval.py``) then hard-codes the weights and
reports AUC and the TPR at the ROC point whose FPR is *closest* to 1 % (which may lie above 1 %). Here:

- :func:`fit_weights` fits ``P(memorized) = sigmoid(w_n N + w_c C + b)`` (features standardised before the fit so
  the L2 penalty does not depend on their scales; coefficients mapped back to raw units) and rescales so that
  gamma_n = 1 when the norm weight is positive: ``M = N + gamma_c C``, flagged when ``M > threshold``. With
  ``class_weight=None`` it is the plain (lightly penalised) maximum-likelihood fit, which recovers the weights of a
  logistic model; ``"balanced"`` only moves the intercept by log(n_non / n_mem), making the p = 0.5 threshold
  independent of how many prompts each list holds.
- Two threshold rules: ``"logistic"`` (the p = 0.5 boundary of the fit) and ``"fpr"`` (the lowest threshold that
  flags at most ``target_fpr`` of the non-memorized prompts given).
- :func:`tpr_at_fpr` is the standard "best TPR with FPR <= target"; ``closest=True`` reproduces the paper's rule.

Calibrations are stored as JSON (never pickle): :func:`save_calibration` / :func:`load_calibration`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FORMAT_NAME = "diffusion-sentinel/memorization-calibration"
FORMAT_VERSION = 1
THRESHOLD_RULES = ("logistic", "fpr")
MAX_FILE_BYTES = 4 * 1024 * 1024  # a calibration is a few kB; anything this large is not one
REMAKE = "select another calibration or re-run 'Calibrate Memorization Guard' to write it again"


class CalibrationError(ValueError):
    """Bad calibration input or file; the message says what to do."""


CalibrationError.__module__ = "sentinel"  # ComfyUI titles errors with the class's module path


def tpr_at_fpr(labels, scores, target_fpr: float = 0.01, closest: bool = False) -> float:
    """TPR at the ROC point with FPR <= target (highest such TPR), or with FPR closest to target (paper's rule)."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise CalibrationError("need both memorized and non-memorized examples")
    fpr, tpr, _ = roc_curve(labels, np.asarray(scores, dtype=np.float64))
    if closest:
        return float(tpr[int(np.argmin(np.abs(fpr - target_fpr)))])
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels), np.asarray(scores, dtype=np.float64)))


def threshold_at_fpr(non_memorized_scores, target_fpr: float = 0.01) -> float:
    """Lowest threshold with ``score > threshold`` flagging at most ``target_fpr`` of the given non-memorized scores."""
    s = np.sort(np.asarray(non_memorized_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise CalibrationError("no non-memorized scores to set a false-positive threshold on")
    k = int(math.floor(target_fpr * s.size + 1e-9))  # false positives allowed
    return float(s[min(k, s.size - 1)])


@dataclass
class LogisticFit:
    """Raw-unit logistic model ``w . x + b`` and its rescaled form ``gamma . x > threshold``."""

    coef: list[float]
    intercept: float
    gamma: list[float]
    threshold: float
    scale: float


def fit_logistic(x, y, class_weight: str | None = None, c: float = 1.0) -> LogisticFit:
    """Logistic regression on standardised features, mapped back to raw units; gamma rescaled so gamma[0] = 1."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(int)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != y.shape[0]:
        raise CalibrationError(f"{x.shape[0]} feature rows but {y.shape[0]} labels")
    if not np.isfinite(x).all():
        raise CalibrationError("some scores are NaN or infinite; check the model (random or broken weights?)")
    if len(set(y.tolist())) != 2:
        raise CalibrationError("need both memorized and non-memorized examples")
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    clf = LogisticRegression(C=c, class_weight=class_weight, max_iter=10_000)
    clf.fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * mu / sd))
    scale = abs(w[0]) if abs(w[0]) > 1e-12 else float(np.abs(w).max())
    if scale <= 0:
        raise CalibrationError("the fitted weights are all zero: the scores do not separate the two lists")
    return LogisticFit(coef=[float(v) for v in w], intercept=b, gamma=[float(v / scale) for v in w],
                       threshold=float(-b / scale), scale=float(scale))


@dataclass
class Calibration:
    """Weights and thresholds of the guard for one model, with the settings and the evidence they came from."""

    gamma_norm: float
    gamma_cos: float
    threshold: float
    wen_threshold: float
    threshold_rule: str = "logistic"
    target_fpr: float = 0.01
    metrics: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    created: str = ""

    def score(self, norm, cosine):
        return self.gamma_norm * np.asarray(norm) + self.gamma_cos * np.asarray(cosine)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **_jsonable(d)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise CalibrationError("not a Diffusion Sentinel memorization calibration (missing or wrong 'format'); "
                                   "create one with the 'Calibrate Memorization Guard' node")
        version = d.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise CalibrationError(f"calibration field 'format_version' must be a whole number, got {version!r}: the "
                                   f"file is damaged; {REMAKE}")
        if version > FORMAT_VERSION:
            raise CalibrationError(f"this calibration has format version {version}, written by a newer Diffusion "
                                   f"Sentinel (this one reads up to {FORMAT_VERSION}); update the pack")
        kw = {}
        for name in ("gamma_norm", "gamma_cos", "threshold", "wen_threshold"):
            v = d.get(name)
            if name == "wen_threshold" and v is None:  # calibrated without Wen scores
                kw[name] = float("nan")
                continue
            if not _finite_number(v):
                raise CalibrationError(f"calibration field {name!r} must be a finite number, got {_short(v)}; {REMAKE}")
            kw[name] = float(v)
        rule = d.get("threshold_rule", "logistic")
        if not isinstance(rule, str) or rule not in THRESHOLD_RULES:
            raise CalibrationError(f"calibration threshold_rule must be one of {THRESHOLD_RULES}, got {_short(rule)}; "
                                   f"{REMAKE}")
        fpr = d.get("target_fpr", 0.01)
        if not _finite_number(fpr) or not 0.0 <= float(fpr) <= 1.0:
            raise CalibrationError(f"calibration field 'target_fpr' must be a number in [0, 1], got {_short(fpr)}; "
                                   f"{REMAKE}")
        for name in ("metrics", "model", "settings"):
            if not isinstance(d.get(name, {}), dict):
                raise CalibrationError(f"calibration field {name!r} must be an object; {REMAKE}")
        for name in ("name", "created"):
            if not isinstance(d.get(name, ""), str):
                raise CalibrationError(f"calibration field {name!r} must be a string, got {_short(d.get(name))}; "
                                       f"{REMAKE}")
        return cls(threshold_rule=rule, target_fpr=float(fpr), metrics=dict(d.get("metrics", {})),
                   model=dict(d.get("model", {})), settings=dict(d.get("settings", {})), name=d.get("name", ""),
                   created=d.get("created", ""), **kw)


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _short(v, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def calibrate(
    memorized: np.ndarray,
    normal: np.ndarray,
    memorized_wen: np.ndarray | None = None,
    normal_wen: np.ndarray | None = None,
    threshold_rule: str = "logistic",
    target_fpr: float = 0.01,
    class_weight: str | None = "balanced",
    c: float = 1.0,
    cv_folds: int = 5,
) -> Calibration:
    """Fit the guard from per-prompt [N, C] features of memorized and normal prompts (rows = prompts)."""
    if threshold_rule not in THRESHOLD_RULES:
        raise CalibrationError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {threshold_rule!r}")
    mem, non = np.asarray(memorized, dtype=np.float64), np.asarray(normal, dtype=np.float64)
    if mem.ndim != 2 or non.ndim != 2 or mem.shape[1] != 2 or non.shape[1] != 2:
        raise CalibrationError("features must be [prompts, 2] arrays of (norm term, cosine term)")
    if len(mem) < 2 or len(non) < 2:
        raise CalibrationError(f"give at least 2 memorized and 2 non-memorized prompts (got {len(mem)} and "
                               f"{len(non)}); the paper used 20 memorized prompts, more is better")
    x = np.concatenate([mem, non])
    y = np.concatenate([np.ones(len(mem), int), np.zeros(len(non), int)])
    fit = fit_logistic(x, y, class_weight=class_weight, c=c)
    gn, gc = fit.gamma
    m = gn * x[:, 0] + gc * x[:, 1]
    threshold = fit.threshold if threshold_rule == "logistic" else threshold_at_fpr(m[y == 0], target_fpr)
    paper_sd1 = x[:, 0] + 2.0 * x[:, 1]
    metrics: dict[str, Any] = {
        "n_memorized": int(len(mem)), "n_normal": int(len(non)),
        "auc": auc(y, m), "tpr_at_fpr": tpr_at_fpr(y, m, target_fpr),
        "tpr_at_fpr_closest": tpr_at_fpr(y, m, target_fpr, closest=True),
        "auc_norm_only": auc(y, x[:, 0]), "auc_cosine_only": auc(y, x[:, 1]), "auc_paper_sd1_weights": auc(y, paper_sd1),
        "flagged_memorized": int((m[y == 1] > threshold).sum()), "flagged_normal": int((m[y == 0] > threshold).sum()),
        "logistic_coef": fit.coef, "logistic_intercept": fit.intercept, "class_weight": class_weight or "none",
    }
    cv = cross_validated_auc(x, y, folds=cv_folds, class_weight=class_weight, c=c)
    if cv is not None:
        metrics["auc_cv"] = cv
    wen_threshold = float("nan")
    if memorized_wen is not None and normal_wen is not None:
        w = np.concatenate([np.asarray(memorized_wen, np.float64), np.asarray(normal_wen, np.float64)])
        if w.shape != (len(y),):
            raise CalibrationError("Wen scores must have one value per prompt")
        wfit = fit_logistic(w[:, None], y, class_weight=class_weight, c=c)
        wen_threshold = wfit.threshold if threshold_rule == "logistic" else threshold_at_fpr(w[y == 0], target_fpr)
        metrics.update({"wen_auc": auc(y, w), "wen_tpr_at_fpr": tpr_at_fpr(y, w, target_fpr)})
    return Calibration(gamma_norm=float(gn), gamma_cos=float(gc), threshold=float(threshold),
                       wen_threshold=wen_threshold, threshold_rule=threshold_rule, target_fpr=float(target_fpr),
                       metrics=metrics, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def cross_validated_auc(x, y, folds: int = 5, class_weight=None, c: float = 1.0) -> float | None:
    """AUC of out-of-fold logistic scores (an honest estimate; the in-sample AUC is optimistic). None if too few."""
    y = np.asarray(y)
    k = min(folds, int(np.bincount(y).min()))
    if k < 2:
        return None
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(x, y):
        f = fit_logistic(x[train], y[train], class_weight=class_weight, c=c)
        oof[test] = np.asarray(x[test]) @ np.asarray(f.coef) + f.intercept
    return auc(y, oof)


def save_calibration(cal: Calibration, path: str) -> str:
    """Write JSON atomically: the text is made (and checked to load back) before anything touches the disk, then
    written to a temporary file renamed over the target; a failure leaves any existing file as it was."""
    text = json.dumps(cal.to_dict(), indent=1, sort_keys=True, allow_nan=False)
    Calibration.from_dict(json.loads(text))  # what we write must be readable
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_calibration(path: str) -> Calibration:
    """Read a calibration written by :func:`save_calibration`. Only JSON is parsed (a pickle or any other binary
    is refused before decoding, nothing in the file is executed); every field is checked."""
    base = os.path.basename(path)
    if not os.path.isfile(path):
        raise CalibrationError(f"calibration file not found: {path}")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CalibrationError(f"{base} is {size} bytes, not a calibration (those are a few kB); {REMAKE}")
    with open(path, "rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise CalibrationError(f"{base} is a binary file (a Python pickle or a zip/torch archive), not a calibration; "
                               f"it was not loaded (pickles can run code). {REMAKE}")
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{base} is not a text file (a calibration is JSON); {REMAKE}") from e
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{base} is not valid JSON (damaged or cut short: {e}); {REMAKE}") from e
    except RecursionError as e:
        raise CalibrationError(f"{base} nests its JSON too deeply to be a calibration; {REMAKE}") from e
    cal = Calibration.from_dict(d)
    if not cal.name:
        cal.name = os.path.splitext(base)[0]
    return cal


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)
