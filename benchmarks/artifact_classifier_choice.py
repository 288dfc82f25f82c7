"""Is there a better default classifier? Candidates against the default recipe, paired over many CV seeds.

Every candidate is cross-validated on the same splits as the default (10-fold, stratified and grouped by prompt),
for each of --seeds CV seeds; the figure is the paired difference (candidate - default) of pooled out-of-fold
accuracy and ROC AUC, median and [min..max] over seeds, and how many seeds it wins. A change of the default needs a
gain on both protocols in (nearly) every seed: no candidate is tuned on one split.

    python benchmarks/artifact_classifier_choice.py --data ../shared/data/similarity-trajectories-680/train.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from classifiers import make_model, read_dataset  # noqa: E402
from classifiers.evaluation import roc_auc  # noqa: E402
from classifiers.features import log_distance  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def _lr(C, features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(FunctionTransformer(features), StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def _diff_features(X):
    u = log_distance(X)
    return np.hstack([u, np.diff(u, axis=1)])


CANDIDATES = {
    "default (log_distance, C=0.01)": lambda: make_model("default"),
    "log_distance C=0.003": lambda: make_model("default", C=0.003),
    "log_distance C=0.03": lambda: make_model("default", C=0.03),
    "log_distance C=0.1": lambda: make_model("default", C=0.1),
    "log_distance + diffs, C=0.01": lambda: _lr(0.01, _diff_features),
    "raw similarity LR, C=0.01": lambda: _lr(0.01, lambda X: X),
    "paper_rf (200 trees)": lambda: make_model("paper_rf", n_estimators=200, n_jobs=1),
}


def oof(make, X, y, splits):
    p = np.zeros(len(y))
    for tr, te in splits:
        p[te] = make().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return p


def main():
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=300)
    ap.add_argument("--skip", default="", help="comma-separated candidate name prefixes to leave out (slow RF)")
    args = ap.parse_args()
    ds = read_dataset(args.data)
    X, y, groups = ds.X, ds.y, np.asarray(ds.groups)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    names = [n for n in CANDIDATES if not any(n.startswith(s) for s in args.skip.split(",") if s)]
    print(f"{ds.summary()}; {len(set(groups))} prompts; 10-fold CV, {len(seeds)} seeds ({seeds[0]}..{seeds[-1]})")
    for protocol in ("stratified", "grouped by prompt"):
        res = {n: ([], []) for n in names}
        for s in seeds:
            if protocol == "stratified":
                sp = list(StratifiedKFold(10, shuffle=True, random_state=s).split(X, y))
            else:
                sp = list(StratifiedGroupKFold(10, shuffle=True, random_state=s).split(X, y, groups))
            for n in names:
                p = oof(CANDIDATES[n], X, y, sp)
                res[n][0].append(float(((p > 0.5) == (y == 1)).mean()))
                res[n][1].append(roc_auc(y, p))
        base_acc, base_auc = (np.asarray(v) for v in res[names[0]])
        print(f"\n{protocol}: accuracy / AUC, median [min..max] over seeds; paired difference to the default "
              "(median, seeds won)")
        for n in names:
            acc, auc = (np.asarray(v) for v in res[n])
            da, du = acc - base_acc, auc - base_auc
            print(f"  {n:<32} acc {np.median(acc):.3f} [{acc.min():.3f}..{acc.max():.3f}]  AUC {np.median(auc):.3f} "
                  f"[{auc.min():.3f}..{auc.max():.3f}]  d_acc {np.median(da):+.3f} ({int((da > 0).sum())}/{len(da)})"
                  f"  d_AUC {np.median(du):+.3f} ({int((du > 0).sum())}/{len(du)})", flush=True)


if __name__ == "__main__":
    main()
