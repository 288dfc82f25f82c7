"""Fit a recipe on a dataset and wrap it as an ArtifactModel (what the CLI and the Train node both call)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .data import Dataset
from .estimators import ALIASES, RULE_TRAINED_FOR, DmaxRuleClassifier, make_model
from .evaluation import cross_validate
from .modelfile import ArtifactModel, TrainedFor


def train_model(data: Dataset, recipe: str = "default", params: dict[str, Any] | None = None,
                prefix: int | None = None, cv_folds: int = 10, cv_seeds: int = 1, first_seed: int = 0,
                on_fold: Callable[[int, int], None] | None = None, name: str = "") -> ArtifactModel:
    """Optionally cross-validate (``cv_seeds`` > 0), then fit on all of ``data`` (its first ``prefix`` values for a
    prefix classifier). The CV figures go into the model's metadata."""
    params = layout_params(recipe, params, data.noise_frame)
    full_length = data.length
    if prefix:
        data = data.prefix(int(prefix))
    cv = None
    if cv_seeds > 0:
        res = cross_validate(data.X, data.y, recipe, params, folds=cv_folds,
                             seeds=list(range(first_seed, first_seed + cv_seeds)), on_fold=on_fold)
        cv = res.as_dict()
    est = make_model(recipe, **params).fit(data.X, data.y)
    tf = TrainedFor(data.metric, data.noise_frame, data.length, full_length)
    training = data.training_info()
    if data.notes:
        training["notes"] = list(data.notes)
    return ArtifactModel(estimator=est, trained_for=tf, training=training, cv=cv, name=name)


def layout_params(recipe: str, params: dict[str, Any] | None, noise_frame: bool) -> dict[str, Any]:
    """Recipe parameters that follow the series layout: the relative D_max rule measures the series' range from
    value 1 in the noise-frame layout (value 0 compares the starting noise) and from value 0 otherwise."""
    params = dict(params or {})
    if ALIASES.get(recipe, recipe) == "dmax_rule":
        params.setdefault("range_start", 1 if noise_frame else 0)
    return params


def default_rule_model(metric: str = RULE_TRAINED_FOR["metric"], noise_frame: bool = RULE_TRAINED_FOR["noise_frame"],
                       length: int = RULE_TRAINED_FOR["length"]) -> ArtifactModel:
    """The shipped model-free rule (relative late drop; constants calibrated on DreamSim series of 50-step runs),
    set up for series of this metric, layout and length (the rule reads any length: no resampling)."""
    est = DmaxRuleClassifier.calibrated(int(length), range_start=1 if noise_frame else 0)
    calibrated = metric == RULE_TRAINED_FOR["metric"]
    return ArtifactModel(estimator=est, trained_for=TrainedFor(metric, bool(noise_frame), int(length)),
                         training={"source": "shipped constants (calibrated on the 544 shared DreamSim trajectories)",
                                   "calibrated_for_this_metric": calibrated},
                         name="relative D_max rule")
