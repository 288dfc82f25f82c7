"""Featurisers checked against hand computations (docs/methods.md §1.3) and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diffusion_sentinel.classifiers.features import (
    STAT_NAMES,
    crossings,
    haar_components,
    haar_feature_names,
    haar_pyramid,
    haar_statistics,
    late_drawdown,
    log_distance,
    max_drawdown,
    paper_statistics,
    resample_series,
    time_bins,
    value_entropy,
)


def test_haar_pyramid_by_hand():
    # [2, 4, 6, 8] padded with 60 ones; every level: avg = (a+b)/2, diff = (a-b)/2 (the paper's /2, not /sqrt 2)
    levels = haar_pyramid(np.array([2.0, 4.0, 6.0, 8.0]))
    assert [len(v) for v in levels] == [1, 1, 2, 4, 8, 16, 32]
    assert levels[0].tolist() == [1.25]                     # avg of [1.5, 1]
    assert levels[1].tolist() == [0.25]                     # (1.5 - 1) / 2
    assert levels[2].tolist() == [0.5, 0.0]                 # (2 - 1) / 2, (1 - 1) / 2
    assert levels[3].tolist() == [1.0, 0.0, 0.0, 0.0]       # (3 - 1) / 2
    assert levels[4].tolist() == [2.0] + [0.0] * 7          # (5 - 1) / 2
    assert levels[5].tolist() == [-2.0] + [0.0] * 15        # (3 - 7) / 2
    assert levels[6].tolist() == [-1.0, -1.0] + [0.0] * 30  # (2 - 4) / 2, (6 - 8) / 2


def test_haar_pyramid_small_size_and_inverse():
    lv = haar_pyramid(np.array([1.0, 3.0]), size=4)  # [1, 3, 1, 1]
    assert [v.tolist() for v in lv] == [[1.5], [0.5], [-1.0, 0.0]]
    # the /2 pyramid is invertible: a = avg + diff, b = avg - diff
    x = np.random.default_rng(0).normal(size=64)
    lv = haar_pyramid(x)
    avg = lv[0]
    for d in lv[1:]:
        avg = np.stack([avg + d, avg - d], axis=1).reshape(-1)
    assert np.allclose(avg, x)
    with pytest.raises(ValueError, match="pads series to 64"):
        haar_pyramid(np.zeros(65))


def test_statistics_by_hand():
    v = np.array([-1.0, 2.0, 0.5, 2.0])
    s = dict(zip(STAT_NAMES, paper_statistics(v)))
    assert s["entropy"] == pytest.approx(1.5 * math.log(2))  # values -1, 0.5 once, 2 twice: p = 1/4, 1/4, 1/2
    assert s["zero_crossings"] == 1                        # F T T T
    assert s["mean_crossings"] == 3                        # mean 0.875: F T F T
    assert s["p5"] == pytest.approx(-0.775)                # sorted -1, 0.5, 2, 2; position 0.15
    assert s["p25"] == pytest.approx(0.125)                # position 0.75
    assert s["p75"] == pytest.approx(2.0) and s["p95"] == pytest.approx(2.0)
    assert s["median"] == pytest.approx(1.25)
    assert s["mean"] == pytest.approx(0.875)
    assert s["var"] == pytest.approx(2.3125 - 0.875**2)    # population variance
    assert s["rms"] == pytest.approx(math.sqrt(2.3125))
    # the paper's "entropy" of exact float counts is log(n) for distinct values
    assert value_entropy(np.arange(50) / 7.0) == pytest.approx(math.log(50))
    assert crossings(np.array([0.0, 0.0]), 0.0) == 0


def test_haar_statistics_layout_and_one_entry_independently():
    x = np.random.default_rng(1).normal(size=(3, 50))
    F = haar_statistics(x)
    names = haar_feature_names()
    assert F.shape == (3, 121) and len(names) == 121 and len(set(names)) == 121
    comps = haar_components(x[1])
    assert [len(c) for c in comps] == [1, 1, 2, 4, 8, 16, 32, 16, 16, 16, 50]
    # bin 2 of 3 = values 16..31 (len // 3 = 16, the last two values are dropped)
    j = names.index("bin2of3.p75")
    assert F[1, j] == pytest.approx(np.percentile(x[1, 16:32], 75))
    j = names.index("whole.rms")
    assert F[2, j] == pytest.approx(np.sqrt(np.mean(x[2] ** 2)))
    j = names.index("diff32.mean")
    assert F[0, j] == pytest.approx(np.mean(np.r_[x[0], np.ones(14)].reshape(32, 2) @ [0.5, -0.5]))


def test_time_bins():
    assert [b.tolist() for b in time_bins(np.arange(7.0), 3)] == [[0, 1], [2, 3], [4, 5]]
    assert [b.tolist() for b in time_bins(np.array([5.0, 6.0]), 3)] == [[5], [6], [6]]


def test_log_distance_and_drawdown():
    z = np.array([[0.5, 0.99, 1.0, 1.2]])
    assert np.allclose(log_distance(z, eps=1e-8), [[math.log(0.5), math.log(0.01), math.log(1e-8), math.log(1e-8)]])
    assert max_drawdown(np.array([0.2, 0.9, 0.8, 0.95, 0.7, 0.99])) == pytest.approx(0.25)
    assert max_drawdown(np.array([0.1, 0.2, 0.3])) == 0.0
    assert math.isnan(max_drawdown(np.array([np.nan])))
    X = np.array([[0.2, 0.9, 0.8, 0.95, 0.99, 0.97, 0.98, 0.99, 0.95, 0.99]])
    assert late_drawdown(X, 0.4).tolist() == pytest.approx([0.99 - 0.95])  # window = values 4..9
    assert late_drawdown(X, 0.0).tolist() == pytest.approx([0.1])         # whole series: 0.9 -> 0.8
    assert late_drawdown(X, 0.0)[0] == pytest.approx(max_drawdown(X[0]))


def test_resample():
    X = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    assert np.allclose(resample_series(X, 9), [np.linspace(0, 4, 9)])
    assert np.allclose(resample_series(X, 3), [[0.0, 2.0, 4.0]])
    kept = resample_series(np.array([[9.0, 1.0, 2.0, 3.0]]), 5, keep_first=True)
    assert kept[0, 0] == 9.0 and np.allclose(kept[0, 1:], np.linspace(1.0, 3.0, 4))
    assert resample_series(X, 5) is not X and np.array_equal(resample_series(X, 5), X)
