"""P(artifact) for every item of a similarity series, with a trained classifier or the model-free D_max rule.

D_max is always the one definition of classifiers/features.py: the largest drop from a running peak over the last
60 % of the series.

Pure (numpy/torch + the classifiers package); the nodes compute the series and hand it here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...classifiers import ArtifactModel, DmaxRuleClassifier, TrainedFor, default_rule_model
from ...classifiers.estimators import ABSOLUTE_RULE_DEFAULTS, RULE_CALIBRATION, RULE_DEFAULTS, RULE_TRAINED_FOR
from ...classifiers.features import late_drawdown, relative_late_drop

RULE_NAME = "relative D_max rule"


def rule_uncalibrated_note(metric: str) -> str:
    """What the shipped rule means on a metric it was not calibrated on (shown on the node and in reports)."""
    return (f"the {RULE_NAME} (late D_max / the series' range > {RULE_DEFAULTS['threshold']}) is calibrated on "
            f"DreamSim series ({RULE_CALIBRATION['data']}: accuracy {RULE_CALIBRATION['nested_cv_accuracy']:.2f}, AUC "
            f"{RULE_CALIBRATION['auc']:.2f}); on {metric} series it is UNCALIBRATED: it is scale-free, so it runs, "
            "but read P(artifact) as a ranking of the batch's items, and for decisions calibrate it on your own "
            "labels (Train Artifact Classifier, recipe dmax_rule) or use the dreamsim metric")


@dataclass
class ArtifactScores:
    """Per item: P(artifact) and the decision at ``threshold``; the item's D_max (late window) and relative late
    drop; what produced them; notes to show the user."""

    p: list[float]
    threshold: float
    model: str
    metric: str
    notes: list[str] = field(default_factory=list)
    d_max: list[float] = field(default_factory=list)
    d_max_relative: list[float] = field(default_factory=list)
    calibrated: bool = True

    @property
    def is_artifact(self) -> list[bool]:
        return [bool(v >= self.threshold) for v in self.p]

    def batch_summary(self) -> dict:
        """Batch-level values: any/all flagged, how many, the item with the lowest P (ties: lower index)."""
        flags = self.is_artifact
        best = min(range(len(self.p)), key=lambda i: (self.p[i], i)) if self.p else -1
        return {"any_artifact": any(flags), "all_artifact": bool(flags) and all(flags), "n_artifacts": sum(flags),
                "best_index": best}

    def as_dict(self) -> dict:
        return {"p_artifact": self.p, "is_artifact": self.is_artifact, "threshold": self.threshold,
                "model": self.model, "metric": self.metric, "d_max": self.d_max,
                "d_max_relative": self.d_max_relative, "calibrated_for_metric": self.calibrated,
                **self.batch_summary(), "notes": self.notes}


def rule_model(metric: str, noise_frame: bool, length: int, dmax_threshold: float = 0.0) -> ArtifactModel:
    """The model-free rule as a model for series of this metric/layout/length.

    ``dmax_threshold`` <= 0: the shipped relative rule (late D_max / the series' range, threshold 0.086, calibrated
    on DreamSim series; scale-free, so it runs on every metric). ``dmax_threshold`` > 0: the absolute rule, D_max of
    the late window above that threshold (in the metric's own units; what Similarity Trajectory's d_max shows).
    """
    if dmax_threshold is None or dmax_threshold <= 0:
        return default_rule_model(metric, noise_frame, length)
    d = ABSOLUTE_RULE_DEFAULTS
    est = DmaxRuleClassifier.with_threshold(float(dmax_threshold), d["slope"], length, relative=False,
                                            start_fraction=d["start_fraction"], eps=d["eps"],
                                            range_start=1 if noise_frame else 0)
    return ArtifactModel(estimator=est, trained_for=TrainedFor(metric, noise_frame, length),
                         training={"source": "user threshold"}, name=f"D_max rule (threshold {dmax_threshold:g})")


def score_values(values, metric: str, noise_frame: bool, finite=None, model: ArtifactModel | None = None,
                 threshold: float = 0.5, dmax_threshold: float = 0.0, run_length: int | None = None) -> ArtifactScores:
    """P(artifact) per row of ``values`` [B, L] (a tensor or array of similarities)."""
    v = values.detach().cpu().double().numpy() if hasattr(values, "detach") else np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"similarity series must be [batch, length], got shape {tuple(v.shape)}")
    fin = None
    if finite is not None:
        fin = finite.detach().cpu().numpy() if hasattr(finite, "detach") else np.asarray(finite)
    notes: list[str] = []
    calibrated = True
    if model is None:
        m = rule_model(metric, noise_frame, v.shape[1], dmax_threshold)
        if dmax_threshold is None or dmax_threshold <= 0:
            if metric != RULE_TRAINED_FOR["metric"]:
                calibrated = False
                notes.append(rule_uncalibrated_note(metric))
            elif v.shape[1] != RULE_TRAINED_FOR["length"]:
                notes.append(f"the {RULE_NAME}'s threshold was calibrated on {RULE_TRAINED_FOR['length']}-step runs; "
                             f"this run has {v.shape[1]} values")
        # the rule only reads the late part of the series and its range: no resampling needed
        p, more = m.p_artifact(v, metric, noise_frame, finite=fin)
    else:
        m = model
        p, more = model.p_artifact(v, metric, noise_frame, finite=fin, run_length=run_length)
    p = [float(x) if math.isfinite(float(x)) else 1.0 for x in p]
    rs = 1 if noise_frame else 0
    return ArtifactScores(p=p, threshold=float(threshold), model=m.name or m.recipe, metric=metric,
                          notes=notes + more, d_max=[float(x) for x in late_drawdown(v)],
                          d_max_relative=[float(x) for x in relative_late_drop(v, range_start=rs)],
                          calibrated=calibrated)


def score_series(series, model: ArtifactModel | None = None, threshold: float = 0.5, dmax_threshold: float = 0.0,
                 run_length: int | None = None) -> ArtifactScores:
    """P(artifact) per item of a SimilaritySeries (values, metric, noise_frame, finite)."""
    return score_values(series.values, series.metric, series.noise_frame, series.finite, model, threshold,
                        dmax_threshold, run_length)
