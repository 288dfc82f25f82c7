"""Fit a recipe on a dataset and wrap it as an ArtifactModel (what the CLI and the Train node both call)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .data import Dataset
from .estimators import RULE_TRAINED_FOR, DmaxRuleClassifier, make_model
from .evaluation import cross_validate
from .modelfile import ArtifactModel, TrainedFor


def train_model(data: Dataset, recipe: str = "default", params: dict[str, Any] | None = None,
                prefix: int | None = None, cv_folds: int = 10, cv_seeds: int = 1, first_seed: int = 0,
                on_fold: Callable[[int, int], None] | None = None, name: str = "") -> ArtifactModel:
    """Optionally cross-validate (``cv_seeds`` > 0), then fit on all of ``data`` (its first ``prefix`` values for a
    prefix classifier). The CV figures go into the model's metadata."""
    params = dict(params or {})
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


def default_rule_model() -> ArtifactModel:
    """The model-free D_max rule with its shipped constants (calibrated on DreamSim series of 50-step runs)."""
    return ArtifactModel(estimator=DmaxRuleClassifier.calibrated(RULE_TRAINED_FOR["length"]),
                         trained_for=TrainedFor(**{k: RULE_TRAINED_FOR[k] for k in ("metric", "noise_frame",
                                                                                     "length")}),
                         training={"source": "shipped constants (calibrated on the 544 shared trajectories)"},
                         name="D_max rule")
