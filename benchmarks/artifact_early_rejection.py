"""Early rejection in KSampler (Auto-Reject): model evaluations saved in simulated runs, as a ratio.

Held-out probabilities for the 544 shared trajectories come from 10-fold CV (the default recipe for the full
series, the same recipe on the first K values for the prefix classifier), so every simulated image is judged by
models that never saw it. Then thousands of auto-reject runs (up to 4 tries, tau 0.5) are played twice on the same
random draws: without early rejection, and with a try stopped after K of 50 steps when P_prefix >= early_tau.

    python benchmarks/artifact_early_rejection.py --data ../shared/data/similarity-trajectories-680/train.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from classifiers import make_model, read_dataset  # noqa: E402
from classifiers.simulation import simulate_auto_reject  # noqa: E402


def oof(X, y, seed, folds=10):
    from sklearn.model_selection import StratifiedKFold

    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        p[te] = make_model("default").fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--prefixes", default="20,25,30")
    ap.add_argument("--early-taus", default="0.6,0.7,0.8")
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--max-tries", type=int, default=4)
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=3, help="CV seeds (repetitions); the median is reported")
    args = ap.parse_args()
    ds = read_dataset(args.data)
    steps = ds.length  # noise-frame layout: one value per step
    t0 = time.perf_counter()
    print(f"data: {ds.summary()}; {args.runs} simulated runs per cell, up to {args.max_tries} tries, tau {args.tau}")
    print(f"{'K':>3} {'early_tau':>9} {'evals plain':>11} {'evals early':>11} {'saved':>7} {'stopped':>8} "
          f"{'artifacts single':>16} {'plain':>6} {'early':>6}")
    for k in [int(v) for v in args.prefixes.split(",")]:
        for et in [float(v) for v in args.early_taus.split(",")]:
            rows = []
            for s in range(args.seeds):
                pf = oof(ds.X, ds.y, 100 + s)
                pp = oof(ds.X[:, :k], ds.y, 100 + s)
                rows.append(simulate_auto_reject(pf, pp, ds.y == 1, steps, k, args.tau, et, args.max_tries,
                                                 args.runs, seed=s))
            med = {key: float(np.median([getattr(r, key) if key != "saved_ratio" else r.saved_ratio
                                         for r in rows]))
                   for key in ("evals_plain", "evals_early", "saved_ratio", "stopped_share",
                               "artifact_rate_single", "artifact_rate_plain", "artifact_rate_early")}
            print(f"{k:>3} {et:>9.2f} {med['evals_plain']:>11.1f} {med['evals_early']:>11.1f} "
                  f"{med['saved_ratio']:>7.1%} {med['stopped_share']:>8.1%} {med['artifact_rate_single']:>16.1%} "
                  f"{med['artifact_rate_plain']:>6.1%} {med['artifact_rate_early']:>6.1%}")
    print(f"({time.perf_counter() - t0:.0f}s; medians over {args.seeds} CV seeds)")


if __name__ == "__main__":
    main()
