"""The artifact estimators: scikit-learn's estimator checks, and each recipe against an independent
implementation built from scikit-learn parts on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _artifact import synthetic_series
from diffusion_sentinel.classifiers.estimators import (
    DmaxRuleClassifier,
    HaarStatisticsFeatures,
    LogDistanceClassifier,
    LogDistanceFeatures,
    PaperForestClassifier,
    PaperHaarKNNClassifier,
    best_threshold,
    cosine_knn_fraction,
    make_model,
)
from diffusion_sentinel.classifiers.features import haar_statistics, late_drawdown, log_distance
from diffusion_sentinel.classifiers.forest import TreeEnsemble
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks


# All checks pass; none is expected to fail. LogDistanceClassifier and DmaxRuleClassifier carry the
# `poor_score` tag: their features assume similarities <= 1 (log(1 - z), drawdowns of a converging curve), so
# the generic accuracy check on blobs around +-10 does not apply to them.
@parametrize_with_checks([LogDistanceClassifier(), PaperForestClassifier(n_estimators=10),
                          PaperHaarKNNClassifier(n_estimators=10), DmaxRuleClassifier(), LogDistanceFeatures(),
                          HaarStatisticsFeatures()])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = synthetic_series(160, seed=3)
    Xt, yt = synthetic_series(60, seed=4)
    return X, y, Xt, yt


def test_log_distance_equals_sklearn_pipeline(data):
    X, y, Xt, _ = data
    ours = LogDistanceClassifier().fit(X, y)
    ref = make_pipeline(FunctionTransformer(lambda a: log_distance(a, 1e-8)), StandardScaler(),
                        LogisticRegression(C=0.01, max_iter=5000)).fit(X, y)
    assert np.allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), rtol=0, atol=1e-9)
    assert np.array_equal(ours.predict(Xt), ref.predict(Xt))
    assert np.allclose(ours.decision_function(Xt), ref.decision_function(Xt), atol=1e-8)


def test_tree_ensemble_reproduces_sklearn_forest(data):
    X, y, Xt, _ = data
    rf = RandomForestClassifier(n_estimators=25, random_state=0).fit(X, y)
    ens = TreeEnsemble.from_sklearn(rf.estimators_)
    assert ens.n_trees == 25
    assert np.array_equal(ens.predict_proba(Xt), rf.predict_proba(Xt))  # same float operations, same order
    leaves = ens.leaves(Xt)
    own = np.stack([e.apply(Xt.astype(np.float32)) for e in rf.estimators_], axis=1)
    offsets = ens.roots[None, :]
    assert np.array_equal(leaves - offsets, own)


def test_paper_rf_equals_scaler_plus_forest(data):
    X, y, Xt, _ = data
    ours = PaperForestClassifier(n_estimators=40).fit(X, y)
    sc = StandardScaler().fit(X)
    rf = RandomForestClassifier(n_estimators=40, random_state=0).fit(sc.transform(X), y)
    # P(artifact) bit for bit; column 0 is 1 - P(artifact) here (scikit-learn sums it separately: last-ulp noise)
    assert np.array_equal(ours.predict_proba(Xt)[:, 1], rf.predict_proba(sc.transform(Xt))[:, 1])
    assert np.allclose(ours.predict_proba(Xt), rf.predict_proba(sc.transform(Xt)), rtol=0, atol=1e-12)
    assert np.allclose(ours.feature_importances_, rf.feature_importances_)
    sliced = PaperForestClassifier(dims=(9, 38), n_estimators=5).fit(X, y)
    assert sliced.mean_.shape == (29,) and sliced.feature_names() == [f"z{j}" for j in range(9, 38)]


def test_knn_feature_matches_the_papers_count_trick(data):
    X, y, Xt, _ = data
    S = StandardScaler().fit_transform(X)[:, -32:]
    knn = KNeighborsClassifier(n_neighbors=13, metric="cosine").fit(S, y)
    counts = knn.predict_proba(S)[:, 1] * 13 - y  # the paper: counts[own label] -= 1, then / 12
    assert np.allclose(cosine_knn_fraction(S, y, S, 12, leave_self_out=True), counts / 12)
    St = StandardScaler().fit(X).transform(Xt)[:, -32:]
    assert np.allclose(cosine_knn_fraction(S, y, St, 13), knn.predict_proba(St)[:, 1])


def test_paper_haar_knn_equals_its_recipe_by_hand(data):
    X, y, Xt, _ = data
    ours = PaperHaarKNNClassifier(n_estimators=30).fit(X, y)
    sc = StandardScaler().fit(X)
    S, St = sc.transform(X), sc.transform(Xt)
    knn = KNeighborsClassifier(n_neighbors=13, metric="cosine").fit(S[:, -32:], y)
    p_train = (knn.predict_proba(S[:, -32:])[:, 1] * 13 - y) / 12
    F = np.column_stack([haar_statistics(S), p_train])
    assert F.shape[1] == 122
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(F, y)
    Ft = np.column_stack([haar_statistics(St), knn.predict_proba(St[:, -32:])[:, 1]])
    assert np.allclose(ours.predict_proba(Xt), rf.predict_proba(Ft), atol=1e-12)
    assert len(ours.feature_names()) == 122 and ours.feature_names()[-1] == "knn_p_artifact"


def test_dmax_rule(data):
    X, y, Xt, _ = data
    # the default is the relative (scale-free) form: late D_max / range of values 1..
    rule = DmaxRuleClassifier().fit(X, y)
    r = late_drawdown(X, 0.4) / (X[:, 1:].max(1) - X[:, 1:].min(1))
    assert rule.threshold_[0] == pytest.approx(best_threshold(r, y))
    acc_at = np.mean((r > rule.threshold_[0]) == (y == 1))
    assert acc_at >= max(np.mean((r > t) == (y == 1)) for t in np.unique(r)) - 1e-12
    rt = late_drawdown(Xt, 0.4) / (Xt[:, 1:].max(1) - Xt[:, 1:].min(1))
    assert np.array_equal(rule.predict_proba(Xt)[:, 1] > 0.5, rt > rule.threshold_[0])  # P = 0.5 at the threshold
    # scale-free: an affine change of the similarity scale gives the same probabilities
    assert np.allclose(rule.predict_proba(0.3 + 0.5 * Xt), rule.predict_proba(Xt), atol=1e-12)
    # the absolute form
    absolute = DmaxRuleClassifier(relative=False).fit(X, y)
    d = late_drawdown(X, 0.4)
    assert absolute.threshold_[0] == pytest.approx(best_threshold(d, y))
    dt = late_drawdown(Xt, 0.4)
    assert np.array_equal(absolute.predict_proba(Xt)[:, 1] > 0.5, dt > absolute.threshold_[0])
    fixed = DmaxRuleClassifier(threshold=0.02, slope=1.0, relative=False).fit(X, y)
    expected = 1 / (1 + np.exp(-(np.log(dt + 1e-4) - np.log(0.02 + 1e-4))))
    assert np.allclose(fixed.predict_proba(Xt)[:, 1], expected)
    cal = DmaxRuleClassifier.calibrated()
    assert cal.threshold_[0] == 0.086 and cal.relative and cal.n_features_in_ == 50
    cal_abs = DmaxRuleClassifier.calibrated(absolute=True)
    assert cal_abs.threshold_[0] == 0.017 and not cal_abs.relative
    # the range starts at value 1 (noise-frame layout) or 0 (no noise frame)
    r0 = late_drawdown(Xt, 0.4) / (Xt.max(1) - Xt.min(1))
    assert np.allclose(DmaxRuleClassifier.calibrated(range_start=0).rule_score(Xt), r0)


def test_labels_and_binary_only():
    X, y = synthetic_series(60, seed=1)
    names = np.where(y == 1, "unnatural", "natural")
    m = LogDistanceClassifier().fit(X, names)
    assert list(m.classes_) == ["natural", "unnatural"]  # the larger label is "artifact"
    assert set(m.predict(X)) <= {"natural", "unnatural"}
    with pytest.raises(ValueError, match="Only binary classification"):
        LogDistanceClassifier().fit(X, np.arange(60) % 3)
    with pytest.raises(ValueError, match="one class"):
        LogDistanceClassifier().fit(X, np.zeros(60))


def test_make_model_and_errors():
    assert isinstance(make_model(), LogDistanceClassifier)
    assert make_model("paper_rf", n_estimators=7).n_estimators == 7
    with pytest.raises(ValueError, match="unknown classifier recipe"):
        make_model("svm")
    with pytest.raises(ValueError, match="bad parameter"):
        make_model("default", trees=3)


def test_reduced_paper_forest_beats_chance_on_synthetic_data(data):
    X, y, Xt, yt = data
    for est in (PaperForestClassifier(n_estimators=50), PaperHaarKNNClassifier(n_estimators=50),
                LogDistanceClassifier()):
        acc = np.mean(est.fit(X, y).predict(Xt) == yt)
        assert acc > 0.75, type(est).__name__
