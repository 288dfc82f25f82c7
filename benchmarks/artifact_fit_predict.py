"""Fit time on the 544 shared trajectories and predict latency per trajectory, for every recipe, side by side.

Medians over repetitions; ratios relative to the default recipe. Predict latency is measured for one trajectory
at a time (what Artifact Predict does per image), through the full model path (ArtifactModel.p_artifact: checks,
featurisation, prediction), and for the whole set at once (per trajectory). The array forest used by the paper
recipes is also timed against scikit-learn's own RandomForest.predict_proba on the same trees.

    python benchmarks/artifact_fit_predict.py --data ../shared/data/similarity-trajectories-680/train.csv
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from classifiers import ArtifactModel, TrainedFor, make_model, read_dataset  # noqa: E402
from classifiers.forest import TreeEnsemble  # noqa: E402


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each fit (median)")
    ap.add_argument("--predict-reps", type=int, default=50, help="single-trajectory predictions timed (median)")
    args = ap.parse_args()
    ds = read_dataset(args.data)
    print(f"data: {ds.summary()}; median of {args.reps} fits, {args.predict_reps} single predictions")
    recipes = ["default", "dmax_rule", "paper_rf", "paper_haar_knn"]
    fit_s, one_ms, batch_ms, models = {}, {}, {}, {}
    for r in recipes:
        fit_s[r] = timed(lambda r=r: models.__setitem__(r, make_model(r).fit(ds.X, ds.y)), args.reps)
        m = ArtifactModel(models[r], TrainedFor(ds.metric, ds.noise_frame, ds.length))
        one = [ds.X[i:i + 1] for i in range(args.predict_reps)]
        one_ms[r] = 1000 * statistics.median(
            [timed(lambda x=x, m=m: m.p_artifact(x, ds.metric, ds.noise_frame), 1) for x in one])
        batch_ms[r] = 1000 * timed(lambda m=m: m.p_artifact(ds.X, ds.metric, ds.noise_frame), args.reps) / ds.n
    base = "default"
    print(f"{'recipe':>15} {'fit [s]':>9} {'x default':>10} {'predict 1 [ms]':>15} {'x default':>10} "
          f"{'predict/traj in batch [ms]':>27}")
    for r in recipes:
        print(f"{r:>15} {fit_s[r]:>9.3f} {fit_s[r] / fit_s[base]:>10.1f} {one_ms[r]:>15.3f} "
              f"{one_ms[r] / one_ms[base]:>10.1f} {batch_ms[r]:>27.4f}")

    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=1000, random_state=0).fit(ds.X, ds.y)
    ens = TreeEnsemble.from_sklearn(rf.estimators_)
    x1 = ds.X[:1]
    t_sk1 = timed(lambda: rf.predict_proba(x1), args.predict_reps)
    t_ar1 = timed(lambda: ens.predict_proba(x1), args.predict_reps)
    t_skn = timed(lambda: rf.predict_proba(ds.X), args.reps)
    t_arn = timed(lambda: ens.predict_proba(ds.X), args.reps)
    same = np.array_equal(rf.predict_proba(ds.X), ens.predict_proba(ds.X))
    print(f"1000-tree forest, 1 trajectory: scikit-learn {1000 * t_sk1:.2f} ms, arrays {1000 * t_ar1:.2f} ms "
          f"(ratio {t_ar1 / t_sk1:.2f}); 544 at once: {1000 * t_skn:.1f} ms vs {1000 * t_arn:.1f} ms "
          f"(ratio {t_arn / t_skn:.2f}); identical probabilities: {same}")


if __name__ == "__main__":
    main()
