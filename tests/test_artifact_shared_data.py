"""Figures on the 544 shared labelled trajectories (../shared/data; skipped when absent). Reduced configurations
keep this fast; the full 1000-tree, 10-fold x 5-seed figures come from `python -m classifiers cv` (README)."""

from __future__ import annotations

import numpy as np
import pytest
from diffusion_sentinel.classifiers import DmaxRuleClassifier, cross_validate, read_dataset
from diffusion_sentinel.classifiers.estimators import RULE_DEFAULTS
from diffusion_sentinel.classifiers.evaluation import evaluate_probabilities


@pytest.fixture(scope="module")
def shared(shared_data):
    path = shared_data / "similarity-trajectories-680" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return read_dataset(path)


def test_shared_data_layout(shared):
    assert shared.X.shape == (544, 50) and int(shared.y.sum()) == 204
    assert shared.metric == "dreamsim" and shared.noise_frame
    assert 0.15 < shared.X[:, 0].mean() < 0.35  # value 0 compares the decoded starting noise


def test_rule_constants_are_the_calibration_on_this_data(shared):
    from diffusion_sentinel.classifiers.estimators import ABSOLUTE_RULE_DEFAULTS

    # the shipped relative rule (late D_max / series range): threshold and slope are the fit on this data
    fitted = DmaxRuleClassifier().fit(shared.X, shared.y)
    assert fitted.threshold_[0] == pytest.approx(RULE_DEFAULTS["threshold"], abs=5e-4)
    assert DmaxRuleClassifier(threshold=RULE_DEFAULTS["threshold"]).fit(shared.X, shared.y).slope_[0] == \
        pytest.approx(RULE_DEFAULTS["slope"], abs=0.01)
    ev = evaluate_probabilities(shared.y, DmaxRuleClassifier.calibrated().predict_proba(shared.X)[:, 1])
    assert 0.69 < ev.accuracy < 0.71 and 0.71 < ev.auc < 0.72  # majority class alone: 0.625
    # the absolute form, calibrated the same way, is a little weaker
    fitted_abs = DmaxRuleClassifier(relative=False).fit(shared.X, shared.y)
    assert fitted_abs.threshold_[0] == pytest.approx(ABSOLUTE_RULE_DEFAULTS["threshold"], abs=5e-4)
    ev_abs = evaluate_probabilities(shared.y, DmaxRuleClassifier.calibrated(absolute=True).predict_proba(shared.X)[:, 1])
    assert 0.68 < ev_abs.accuracy < 0.70 and 0.70 < ev_abs.auc < 0.71 and ev_abs.auc < ev.auc
    # the whole-series drawdown (window from value 1) is NOT predictive here: that is why D_max looks late
    whole = DmaxRuleClassifier(start_fraction=0.02, relative=False).fit(shared.X, shared.y)
    assert evaluate_probabilities(shared.y, whole.predict_proba(shared.X)[:, 1]).auc < 0.5


def test_relative_rule_nested_cv(shared):
    """The threshold chosen inside each training fold generalises: nested CV of the fitted relative rule."""
    res = cross_validate(shared.X, shared.y, "dmax_rule", folds=10, seeds=[0, 1, 2, 3, 4])
    assert 0.69 < res.accuracy_mean < 0.71 and 0.70 < res.auc_mean < 0.73


def test_default_recipe_cv_band(shared):
    res = cross_validate(shared.X, shared.y, "default", folds=10, seeds=[100])
    assert 0.73 < res.accuracy_mean < 0.77 and 0.79 < res.auc_mean < 0.83


def test_paper_forest_reduced_cv_band(shared):
    res = cross_validate(shared.X, shared.y, "paper_rf", {"n_estimators": 100}, folds=5, seeds=[100])
    assert 0.69 < res.accuracy_mean < 0.76 and 0.74 < res.auc_mean < 0.82


def test_prefix_classifier_band(shared):
    res = cross_validate(shared.X[:, :25], shared.y, "default", folds=10, seeds=[100])
    assert 0.68 < res.accuracy_mean < 0.76 and np.isfinite(res.auc_mean) and res.auc_mean > 0.72
