"""Candidate forms of the model-free artifact rule on labelled similarity series: ROC AUC and nested-CV accuracy.

Each form is one number per series; the rule flags an artifact above a threshold. The threshold is chosen on the
training folds only (training-accuracy optimum), so the accuracy is an honest out-of-fold figure (10-fold
stratified CV, 5 seeds). The shipped rule is the form chosen here: "D_max / range", the late drop relative to the
series' own range, because it is scale-free (an a + b z change of the similarity scale leaves it unchanged: a
threshold calibrated on DreamSim series keeps its meaning as "how much of the curve's movement is a late drop" on
any metric) and it is at least as good as the absolute late D_max on the data it can be calibrated on.

    python benchmarks/artifact_rule_forms.py --data /path/to/train.csv      # the paper's 544 DreamSim series
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def forms(X: np.ndarray, start: float = 0.4) -> dict[str, np.ndarray]:
    from classifiers.features import late_window_start, max_drawdown

    s = late_window_start(X.shape[1], start)
    late, body = X[:, s:], X[:, 1:]
    d = np.array([max_drawdown(v) for v in late])
    diffs = np.diff(late, axis=1)
    u = np.log(np.maximum(1 - X, 1e-8))
    return {
        "D_max (last 60 %), absolute": d,
        "D_max (whole series from value 1)": np.array([max_drawdown(v) for v in body]),
        "D_max / range (values 1..)  [shipped]": d / (body.max(1) - body.min(1)),
        "D_max / range of the late window": d / np.maximum(late.max(1) - late.min(1), 1e-12),
        "D_max / (1 - min of the late window)": d / (1 - late.min(1)),
        "D_max / median(1 - z) of the late window": d / np.median(1 - late, 1),
        "rise of log(1 - z) in the late window": np.array([max_drawdown(-v) for v in u[:, s:]]),
        "D_max / std of late step differences": d / diffs.std(1),
        "D_max / std of the late window": d / np.maximum(late.std(1), 1e-12),
    }


def best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    v = np.unique(score)
    cands = np.concatenate([[v[0] - 1e-12], (v[:-1] + v[1:]) / 2])
    return float(cands[int(np.argmax([np.mean((score > t) == (y == 1)) for t in cands]))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CSV in the Similarity-Trajectory format (or a dataset folder)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--folds", type=int, default=10)
    a = ap.parse_args()
    from sklearn.model_selection import StratifiedKFold

    from classifiers.data import read_dataset
    from classifiers.evaluation import roc_auc

    ds = read_dataset(a.data)
    X, y = ds.X, ds.y
    print(f"data: {ds.summary()}; majority class alone: {max(y.mean(), 1 - y.mean()):.3f}")
    print(f"{'form':44s} {'AUC':>6s} {'nested CV acc':>14s}  threshold (median over folds)")
    for name, sc in forms(X).items():
        accs, thrs = [], []
        for seed in range(a.seeds):
            pred = np.zeros_like(y)
            for tr, te in StratifiedKFold(a.folds, shuffle=True, random_state=seed).split(sc, y):
                t = best_threshold(sc[tr], y[tr])
                thrs.append(t)
                pred[te] = sc[te] > t
            accs.append(np.mean(pred == y))
        print(f"{name:44s} {roc_auc(y, sc):6.3f} {np.mean(accs):14.3f}  {np.median(thrs):.4g}")


if __name__ == "__main__":
    main()
