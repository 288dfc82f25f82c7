"""Trajectory featurisers: pure numpy, no ComfyUI, no scikit-learn.

A *series* is one similarity trajectory z_0..z_{L-1} (higher = consecutive x0 predictions agree more); a batch of
series is an array [n, L]. Everything here is a function of the values only.

- :func:`log_distance`: u = log(max(1 - z, eps)), the features of the pack's default classifier. Similarities of a
  converging sampler crowd just below 1 (0.99, 0.999, 0.9999); the log of the distance to 1 spreads them out
  linearly (a per-step "log rate of change"), which is what a linear model needs.
- :func:`haar_pyramid`, :func:`paper_statistics`, :func:`haar_statistics`: the transform variant of Menn et al.
  (docs/methods.md §1.3), reimplemented from the description. Paper quirks kept on purpose (this IS the paper
  recipe): the Haar step divides by 2, not sqrt(2), so it is an averaging pyramid rather than an orthonormal
  transform; the series is padded to 64 with the constant 1 *after* standard scaling, so the pad value is in scaled
  units; the "entropy" is the Shannon entropy of the counts of exact float values, which for continuous data is
  simply log(n) (it only varies where the padding produces repeated values).
- :func:`late_drawdown`: D_max, the largest drop from a running peak over the last 60 % of the series (from
  ``LATE_WINDOW_START`` = 0.4 of it on). This is the one D_max of the pack: Similarity Trajectory's ``d_max``
  output, the rule of Artifact Predict and every report use it. :func:`relative_late_drop` divides it by the
  series' own range (scale-free: unchanged by any affine change a + b z of the similarity scale, b > 0).
- :func:`resample_series`: linear resampling to another length (trajectories of another step count).
"""

from __future__ import annotations

import numpy as np

STAT_NAMES = ("entropy", "zero_crossings", "mean_crossings", "p5", "p25", "p75", "p95", "median", "mean", "var",
              "rms")
HAAR_LEVELS = ("avg1", "diff1", "diff2", "diff4", "diff8", "diff16", "diff32")


# ----------------------------------------------------------------------------------------------- log distance
def log_distance(X: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """u = log(max(1 - z, eps)) elementwise (float64). z = 1 (identical frames) maps to log(eps)."""
    X = np.asarray(X, dtype=np.float64)
    return np.log(np.maximum(1.0 - X, eps))


# ----------------------------------------------------------------------------------------------- Haar pyramid
def haar_pyramid(x: np.ndarray, size: int = 64, pad_value: float = 1.0) -> list[np.ndarray]:
    """The paper's Haar pyramid of one series: pad to ``size`` with ``pad_value``, then repeatedly
    avg = (x[0::2] + x[1::2]) / 2, diff = (x[0::2] - x[1::2]) / 2 on the averages until one value is left.

    Returns coarse to fine: [avg(1), diff(1), diff(2), diff(4), ..., diff(size/2)] (7 arrays for size 64).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if size & (size - 1) or size < 2:
        raise ValueError(f"Haar size must be a power of two >= 2, got {size}")
    if x.shape[0] > size:
        raise ValueError(f"the Haar pyramid pads series to {size} values; this series has {x.shape[0]}. "
                         f"Use a shorter series (dims) or a larger size.")
    data = np.concatenate([x, np.full(size - x.shape[0], float(pad_value))])
    details = []
    while data.shape[0] > 1:
        even, odd = data[0::2], data[1::2]
        details.append((even - odd) / 2.0)
        data = (even + odd) / 2.0
    return [data] + details[::-1]


def time_bins(x: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """``n_bins`` consecutive bins of length len(x) // n_bins (the remainder at the end is dropped, as in the paper).

    A series shorter than ``n_bins`` (never the case for real runs) gets one-value bins, the last value repeated.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] == 0 or n_bins < 1:
        raise ValueError(f"cannot split a series of {x.shape[0]} values into {n_bins} bins")
    w = x.shape[0] // n_bins
    if w < 1:
        return [x[min(i, x.shape[0] - 1):min(i, x.shape[0] - 1) + 1] for i in range(n_bins)]
    return [x[i * w:(i + 1) * w] for i in range(n_bins)]


# ----------------------------------------------------------------------------------------------- statistics
def value_entropy(v: np.ndarray) -> float:
    """Shannon entropy (nats) of the empirical distribution of exact values (the paper's Counter entropy)."""
    _, counts = np.unique(np.asarray(v, dtype=np.float64), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def crossings(v: np.ndarray, level: float) -> int:
    """How often the series passes from <= level to > level or back (sign changes of v > level)."""
    above = np.asarray(v, dtype=np.float64) > level
    return int(np.count_nonzero(above[1:] != above[:-1]))


def paper_statistics(v: np.ndarray) -> np.ndarray:
    """The 11 statistics of one array, in STAT_NAMES order: value entropy, zero crossings, mean crossings,
    5/25/75/95th percentiles (linear interpolation), median, mean, population variance, root mean square."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    mean = float(v.mean())
    p5, p25, p75, p95, med = np.percentile(v, [5, 25, 75, 95, 50])
    return np.array([value_entropy(v), crossings(v, 0.0), crossings(v, mean), p5, p25, p75, p95, med, mean,
                     float(v.var()), float(np.sqrt(np.mean(v * v)))], dtype=np.float64)


def haar_components(x: np.ndarray, size: int = 64, pad_value: float = 1.0, n_bins: int = 3) -> list[np.ndarray]:
    """The 11 arrays the paper takes statistics of: 7 Haar levels, ``n_bins`` time bins, the whole series."""
    return haar_pyramid(x, size, pad_value) + time_bins(x, n_bins) + [np.asarray(x, dtype=np.float64).reshape(-1)]


def haar_component_names(n_bins: int = 3, size: int = 64) -> list[str]:
    levels = ["avg1"] + [f"diff{2 ** i}" for i in range(int(np.log2(size)))]
    return levels + [f"bin{i + 1}of{n_bins}" for i in range(n_bins)] + ["whole"]


def haar_statistics(X: np.ndarray, size: int = 64, pad_value: float = 1.0, n_bins: int = 3) -> np.ndarray:
    """[n, L] -> [n, 11 * (log2(size) + 1 + n_bins + 1)] (121 features for the paper's settings)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"series must be a 2-D array [n, length], got shape {X.shape}")
    rows = [np.concatenate([paper_statistics(c) for c in haar_components(x, size, pad_value, n_bins)]) for x in X]
    n_feat = len(STAT_NAMES) * (int(np.log2(size)) + 1 + n_bins + 1)
    return np.vstack(rows) if rows else np.zeros((0, n_feat))


def haar_feature_names(size: int = 64, n_bins: int = 3) -> list[str]:
    return [f"{c}.{s}" for c in haar_component_names(n_bins, size) for s in STAT_NAMES]


# ----------------------------------------------------------------------------------------------- drawdown
def max_drawdown(v: np.ndarray) -> float:
    """max_k (max_{j<=k} v_j - v_k): the largest drop from a running peak; 0 if never decreasing; NaNs skipped."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float((np.maximum.accumulate(v) - v).max())


LATE_WINDOW_START = 0.4  # D_max is measured over the values from 40 % of the series on (the last 60 %)


def late_window_start(length: int, start_fraction: float = LATE_WINDOW_START) -> int:
    """First index of the late window: round(start_fraction * length), kept inside the series."""
    return int(min(max(0, round(float(start_fraction) * length)), max(0, length - 1)))


def late_drawdown(X: np.ndarray, start_fraction: float = LATE_WINDOW_START) -> np.ndarray:
    """D_max of every series over its values from ``start_fraction`` of the run to the end. [n, L] -> [n]."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None]
    s = late_window_start(X.shape[1], start_fraction)
    return np.array([max_drawdown(x[s:]) for x in X], dtype=np.float64)


def series_range(X: np.ndarray, range_start: int = 1) -> np.ndarray:
    """max - min of every series over its values from index ``range_start`` on (NaNs skipped). [n, L] -> [n].

    ``range_start`` = 1 in the noise-frame layout (value 0 compares the starting noise and is not a comparison
    of two predictions), 0 otherwise.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None]
    out = np.full(X.shape[0], np.nan)
    for i, x in enumerate(X[:, min(range_start, max(0, X.shape[1] - 1)):]):
        v = x[np.isfinite(x)]
        if v.size:
            out[i] = float(v.max() - v.min())
    return out


def relative_late_drop(X: np.ndarray, start_fraction: float = LATE_WINDOW_START, range_start: int = 1) -> np.ndarray:
    """D_max (late window) / the series' own range: the late drop in units of how much the series moves at all.

    In [0, 1]; 0 for a flat series (range 0) or one that never drops late. Scale-free: ``a + b * X`` (b > 0) gives
    the same values, so a threshold on it does not depend on the units of the similarity metric. [n, L] -> [n].
    """
    d = late_drawdown(X, start_fraction)
    r = series_range(X, range_start)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(r > 0, d / np.where(r > 0, r, 1.0), 0.0)
    return np.where(np.isfinite(d) & np.isfinite(r), out, np.nan)


# ----------------------------------------------------------------------------------------------- resampling
def resample_series(X: np.ndarray, length: int, keep_first: bool = False) -> np.ndarray:
    """Linear resampling of every series to ``length`` values over the same span of the run.

    ``keep_first``: value 0 is kept as is and only values 1.. are resampled (the paper layout, where value 0
    compares the starting noise and is unlike every other value).
    """
    X = np.asarray(X, dtype=np.float64)
    n, L = X.shape
    if length < 1:
        raise ValueError(f"cannot resample to {length} values")
    if L == length:
        return X.copy()
    if keep_first and L >= 2 and length >= 2:
        return np.concatenate([X[:, :1], resample_series(X[:, 1:], length - 1)], axis=1)
    if L == 1:
        return np.repeat(X, length, axis=1)
    src = np.linspace(0.0, 1.0, L)
    dst = np.linspace(0.0, 1.0, length)
    return np.vstack([np.interp(dst, src, x) for x in X]) if n else np.zeros((0, length))
