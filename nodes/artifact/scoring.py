"""P(artifact) for every item of a similarity series, with a trained classifier or the model-free D_max rule.

Pure (numpy/torch + the classifiers package); the nodes compute the series and hand it here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...classifiers import ArtifactModel, DmaxRuleClassifier, MetricMismatch, TrainedFor, default_rule_model
from ...classifiers.estimators import RULE_DEFAULTS, RULE_TRAINED_FOR


@dataclass
class ArtifactScores:
    """Per item: P(artifact) and the decision at ``threshold``; what produced them; notes to show the user."""

    p: list[float]
    threshold: float
    model: str
    metric: str
    notes: list[str] = field(default_factory=list)

    @property
    def is_artifact(self) -> list[bool]:
        return [bool(v >= self.threshold) for v in self.p]

    def as_dict(self) -> dict:
        return {"p_artifact": self.p, "is_artifact": self.is_artifact, "threshold": self.threshold,
                "model": self.model, "metric": self.metric, "notes": self.notes}


def rule_model(metric: str, noise_frame: bool, length: int, dmax_threshold: float = 0.0) -> ArtifactModel:
    """The D_max rule as a model for series of this metric/layout/length.

    ``dmax_threshold`` <= 0 means the calibrated default, which exists for DreamSim series only (the metric of the
    labelled data); for other metrics the caller must give a threshold.
    """
    if dmax_threshold is None or dmax_threshold <= 0:
        if metric != RULE_TRAINED_FOR["metric"]:
            raise MetricMismatch(
                f"the model-free D_max rule is calibrated for DreamSim similarity series only (threshold "
                f"{RULE_DEFAULTS['threshold']}, accuracy 0.69 on the labelled data); this series uses {metric}. Set "
                f"'dmax_threshold' for {metric} series (the D_max above which an image counts as an artifact; the "
                "'d_max' output of Similarity Trajectory shows typical values, and Train Artifact Classifier with "
                "recipe 'dmax_rule' fits it from labelled images), choose a classifier trained on "
                f"{metric} series, or compute the series with the dreamsim metric.")
        model = default_rule_model()
        model.trained_for = TrainedFor(metric, noise_frame, length)
        model.estimator.n_features_in_ = int(length)
        return model
    d = RULE_DEFAULTS
    est = DmaxRuleClassifier(start_fraction=d["start_fraction"], threshold=float(dmax_threshold), slope=d["slope"],
                             eps=d["eps"])
    est.classes_ = np.array([0, 1])
    est.n_features_in_ = int(length)
    est.threshold_ = np.array([float(dmax_threshold)])
    est.slope_ = np.array([d["slope"]])
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
    if model is None:
        m = rule_model(metric, noise_frame, v.shape[1], dmax_threshold)
        if (dmax_threshold is None or dmax_threshold <= 0) and v.shape[1] != RULE_TRAINED_FOR["length"]:
            notes.append(f"the D_max rule's threshold was calibrated on {RULE_TRAINED_FOR['length']}-step runs; "
                         f"this run has {v.shape[1]} values")
        # the rule only reads the late part of the series: the layout (value 0) does not matter to it
        p, more = m.p_artifact(v, metric, noise_frame, finite=fin)
    else:
        m = model
        p, more = model.p_artifact(v, metric, noise_frame, finite=fin, run_length=run_length)
    p = [float(x) if math.isfinite(float(x)) else 1.0 for x in p]
    return ArtifactScores(p=p, threshold=float(threshold), model=m.name or m.recipe, metric=metric,
                          notes=notes + more)


def score_series(series, model: ArtifactModel | None = None, threshold: float = 0.5, dmax_threshold: float = 0.0,
                 run_length: int | None = None) -> ArtifactScores:
    """P(artifact) per item of a SimilaritySeries (values, metric, noise_frame, finite)."""
    return score_values(series.values, series.metric, series.noise_frame, series.finite, model, threshold,
                        dmax_threshold, run_length)
