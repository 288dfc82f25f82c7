"""Seed Tournament: model evaluations saved at equal artifact rate, against best-of-N, as ratios.

(a) Simulation on the shared labelled runs (held-out probabilities). For every CV seed, 10-fold CV gives each of
the 544 runs a full-length P(artifact) (the default recipe on all 50 values) and a prefix P at every check step K
(the same recipe on the first K values), each from models that never saw the run. Then many draws of N runs
(with replacement) are played:

- best-of-N: all N runs to the end, keep the lowest full P; artifact rate r(N), cost N*S;
- tournament(N, schedule): at each check (K_j, n_j) keep the n_j lowest prefix P; finish the survivors; keep the
  lowest full P among them; cost sum_j n_(j-1) (K_j - K_(j-1)) + k (S - K_m)  (N K + k (S - K) for one check).

saved at equal rate = 1 - cost / (N* S), N* = the smallest best-of-N (interpolated) whose artifact rate is no
higher than the tournament's. Medians and spread (min..max) over CV seeds. Schedules are *selected* on one set
of CV seeds (--select-seeds) and *reported* on another (--seeds): fresh splits and fresh draws, the same 544 runs
(so the figure still carries some selection optimism; the independent hold-out in review is the real check).

(b) --learning-curve: accuracy and AUC of the default classifier against the number of training labels.

(c) --comfy: a real ComfyUI run (tiny random checkpoint, CPU): the model evaluations counted equal the cost model,
and the finished seeds equal a plain KSampler's outputs.

    python benchmarks/seed_tournament.py --data ../shared/data/similarity-trajectories-680/train.csv
    python benchmarks/seed_tournament.py --data ... --learning-curve
    COMFYUI_PATH=... python benchmarks/seed_tournament.py --comfy

The last line is ``RESULT saved_at_equal_rate=... n=... k=... check_at=K/S artifact_rate=... best_of_n_equiv=...``
for the recommended default (with ``schedule=K1:n1,K2:n2,...`` when it checks more than once).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from classifiers import make_model, read_dataset  # noqa: E402
from classifiers.simulation import (  # noqa: E402
    best_of_n_rates,
    equivalent_n,
    saved_at_equal_rate,
    tournament_cost,
    tournament_rate,
)

DEFAULT_SCHEDULE = None  # filled from the selection below; see RECOMMENDED


def splits(y, groups, seed, folds, grouped):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if grouped:
        return StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups)
    return StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)


def oof(X, y, folds_list, recipe="default"):
    p = np.zeros(len(y))
    for tr, te in folds_list:
        p[te] = make_model(recipe).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return p


def parse_schedule(text):
    """'15:2' or '5:4,15:2,25:1' -> [(5, 4), (15, 2), (25, 1)]."""
    out = []
    for part in text.split(","):
        k, n = part.split(":")
        out.append((int(k), int(n)))
    return out


def schedule_text(schedule):
    return ",".join(f"{k}:{n}" for k, n in schedule)


def candidate_schedules(n, ks, max_checks=3):
    """Single cuts (k = 1..3) and successive-halving-like schedules with 2 or 3 checks (survivors decreasing)."""
    out = []
    for k in ks:
        for keep in (1, 2, 3):
            if keep < n:
                out.append([(k, keep)])
    for m in range(2, max_checks + 1):
        for kk in itertools.combinations(ks, m):
            for counts in itertools.combinations(range(n - 1, 0, -1), m):  # strictly decreasing survivors
                if counts[-1] <= 2:
                    out.append(list(zip(kk, counts)))
    return out


def oof_distilled(X, y, folds_list, k, seed):
    """Prefix P from a model of the *full classifier's* judgement: within each training fold, the full recipe's
    inner out-of-fold logits are regressed (ridge, standardised log distances of the first k values) and the held-out
    prefixes get sigmoid(prediction). Aligns the early ranking with the final pick (lowest full P)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from classifiers.features import log_distance

    U = log_distance(X)
    p = np.zeros(len(y))
    for tr, te in folds_list:
        inner = np.zeros(len(tr))
        for a, b in StratifiedKFold(5, shuffle=True, random_state=seed).split(tr, y[tr]):
            inner[b] = make_model("default").fit(X[tr[a]], y[tr[a]]).predict_proba(X[tr[b]])[:, 1]
        inner = np.clip(inner, 1e-6, 1 - 1e-6)
        reg = make_pipeline(StandardScaler(), Ridge(alpha=100.0)).fit(U[tr][:, :k], np.log(inner / (1 - inner)))
        p[te] = 1.0 / (1.0 + np.exp(-reg.predict(U[te][:, :k])))
    return p


class Pool:
    """Held-out probabilities of one CV seed, and the draws played on them."""

    def __init__(self, ds, seed, ks, folds, grouped, draws, n_max, prefix="labels"):
        f = list(splits(ds.y, np.asarray(ds.groups), seed, folds, grouped))
        self.y = ds.y
        self.steps = ds.length
        self.p_full = oof(ds.X, ds.y, f)
        if prefix == "distill":
            self.p_prefix = {k: oof_distilled(ds.X, ds.y, f, k, seed) for k in ks}
        else:
            self.p_prefix = {k: oof(ds.X[:, :k], ds.y, f) for k in ks}
        rng = np.random.default_rng(10_000 + seed)
        self.draws = rng.integers(0, len(ds.y), size=(draws, n_max))
        self.rates = best_of_n_rates(self.p_full, ds.y == 1, self.draws)

    def play(self, n, schedule):
        rate = tournament_rate(self.p_full, self.p_prefix, self.y == 1, n, schedule, self.draws)
        cost = tournament_cost(n, schedule, self.steps)
        ns = equivalent_n(self.rates, rate)
        return rate, cost, ns, saved_at_equal_rate(cost, ns, self.steps)


def summarize(vals):
    v = np.asarray(vals, dtype=np.float64)
    return float(np.median(v)), float(v.min()), float(v.max())


def simulate(args, ds):
    ks = [int(v) for v in args.checks.split(",")]
    n_max = args.n_max
    t0 = time.perf_counter()
    print(f"data: {ds.summary()}; {args.draws} draws per cell; CV {'grouped by prompt' if args.grouped else 'stratified'}"
          f" {args.folds}-fold; prefix model: {args.prefix}; selection seeds {args.select_seeds}, report seeds "
          f"{args.seeds}", flush=True)
    sel = [Pool(ds, s, ks, args.folds, args.grouped, args.draws, n_max, args.prefix)
           for s in _seeds(args.select_seeds)]
    rep = [Pool(ds, s, ks, args.folds, args.grouped, args.draws, n_max, args.prefix) for s in _seeds(args.seeds)]
    S = ds.length
    print("best-of-N artifact rate r(N) (median over report seeds): " + " ".join(
        f"{n}:{np.median([p.rates[n - 1] for p in rep]):.3f}" for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if n <= n_max))
    from classifiers.evaluation import roc_auc

    print("prefix AUC (median over report seeds): " + " ".join(
        f"K={k}:{np.median([roc_auc(ds.y, p.p_prefix[k]) for p in rep]):.3f}" for k in ks)
        + f" full:{np.median([roc_auc(ds.y, p.p_full) for p in rep]):.3f}")
    best = {}
    for n in [int(v) for v in args.ns.split(",") if v.strip()]:
        scores = []
        for sch in candidate_schedules(n, ks, args.max_checks):
            saved = [p.play(n, sch)[3] for p in sel]
            scores.append((float(np.median(saved)), sch))
        scores.sort(key=lambda t: -t[0])
        best[n] = scores[: args.top]
        print(f"\nN={n}: best schedules on the selection seeds, then on the report seeds (median [min..max])")
        print(f"  {'schedule':<22} {'cost':>5} {'sel saved':>9} {'rate':>6} {'N*':>5} {'saved':>22}")
        for s_sel, sch in best[n]:
            res = [p.play(n, sch) for p in rep]
            rate, ns, sv = (summarize([r[i] for r in res]) for i in (0, 2, 3))
            print(f"  {schedule_text(sch):<22} {res[0][1]:>5} {s_sel:>9.3f} {rate[0]:>6.3f} {ns[0]:>5.2f} "
                  f"{sv[0]:>7.3f} [{sv[1]:.3f}..{sv[2]:.3f}]", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f}s)")
    return rep, S


class _Subset:
    """The runs of some prompts (what Pool reads of a Dataset)."""

    def __init__(self, ds, idx):
        self.X, self.y = ds.X[idx], ds.y[idx]
        self.groups = [ds.groups[i] for i in idx]
        self.length = ds.length


def split_half(args, ds):
    """Selection optimism: choose the best N=8 schedule on the runs of half of the prompts (OOF within that half),
    then play it on the other half (OOF within it), next to fixed schedules chosen beforehand. Repeated over
    random halvings; the difference between the chosen schedule's saving on its own half and on the other half is
    what selecting among many schedules adds."""
    ks = [int(v) for v in args.checks.split(",")]
    n = 8
    fixed = [parse_schedule(t) for t in args.fixed.split(";")] if args.fixed else []
    prompts = sorted(set(ds.groups))
    print(f"split-half check: N={n}; {len(prompts)} prompts halved {args.split_half} times; selection on one half "
          f"(CV seeds {args.select_seeds}), evaluation on the other (CV seeds {args.seeds})", flush=True)
    for r in range(args.split_half):
        rng = np.random.default_rng(500 + r)
        half = set(rng.permutation(prompts)[: len(prompts) // 2].tolist())
        a = np.array([i for i, g in enumerate(ds.groups) if g in half])
        b = np.array([i for i, g in enumerate(ds.groups) if g not in half])
        sa, sb = _Subset(ds, a), _Subset(ds, b)
        pa = [Pool(sa, s, ks, args.folds, args.grouped, args.draws, args.n_max, args.prefix)
              for s in _seeds(args.select_seeds)]
        pb = [Pool(sb, s, ks, args.folds, args.grouped, args.draws, args.n_max, args.prefix)
              for s in _seeds(args.seeds)]
        best = max(candidate_schedules(n, ks, args.max_checks), key=lambda sch: np.median([p.play(n, sch)[3] for p in pa]))
        on_a = np.median([p.play(n, best)[3] for p in pa])
        on_b = np.median([p.play(n, best)[3] for p in pb])
        fx = "  ".join(f"{schedule_text(f)}: {np.median([p.play(n, f)[3] for p in pb]):.3f}" for f in fixed)
        print(f"  halving {r}: chosen {schedule_text(best):<16} saved on its half {on_a:.3f}, on the other half "
              f"{on_b:.3f}; fixed on the other half: {fx}", flush=True)


def _seeds(text):
    a, b = (int(v) for v in text.split(".."))
    return list(range(a, b + 1))


def report_default(rep, S, n, schedule, result_line=True):
    res = [p.play(n, schedule) for p in rep]
    rate, ns, sv = (summarize([r[i] for r in res]) for i in (0, 2, 3))
    cost = res[0][1]
    print(f"{'default' if result_line else 'also   '} N={n} schedule {schedule_text(schedule)}: cost {cost} of {n * S} steps; artifact rate {rate[0]:.4f} "
          f"[{rate[1]:.4f}..{rate[2]:.4f}]; best-of-N equivalent {ns[0]:.2f} [{ns[1]:.2f}..{ns[2]:.2f}]; saved at equal "
          f"rate {sv[0]:.3f} [{sv[1]:.3f}..{sv[2]:.3f}] (median [min..max] over {len(rep)} CV seeds)")
    if not result_line:
        return
    k = schedule[-1][1]
    extra = f" schedule={schedule_text(schedule)}" if len(schedule) > 1 else ""
    print(f"RESULT saved_at_equal_rate={sv[0]:.3f} n={n} k={k} check_at={schedule[-1][0]}/{S} artifact_rate={rate[0]:.4f} "
          f"best_of_n_equiv={ns[0]:.2f}{extra}")


# ------------------------------------------------------------------------------------------------ (b) learning curve
def learning_curve(args, ds, sizes=(25, 50, 100, 200, None)):
    """Accuracy and AUC of the default recipe trained on n labels: 10-fold CV, each training fold subsampled
    (stratified) to n runs, the held-out fold judged in full; pooled out-of-fold figures, per CV seed."""
    from sklearn.model_selection import StratifiedKFold

    from classifiers.evaluation import roc_auc

    seeds = _seeds(args.seeds)
    print(f"learning curve of the default recipe ({ds.summary()}); {args.folds}-fold CV, training folds subsampled "
          f"to n labels (stratified); median [min..max] over {len(seeds)} CV seeds")
    print(f"{'labels':>7} {'accuracy':>24} {'AUC':>24}")
    rows = []
    for n in sizes:
        acc, auc = [], []
        for s in seeds:
            rng = np.random.default_rng(s)
            p = np.zeros(len(ds.y))
            for tr, te in StratifiedKFold(args.folds, shuffle=True, random_state=s).split(ds.X, ds.y):
                if n is not None and n < len(tr):
                    tr = _stratified_subsample(tr, ds.y, n, rng)
                p[te] = make_model("default").fit(ds.X[tr], ds.y[tr]).predict_proba(ds.X[te])[:, 1]
            acc.append(float(((p > 0.5) == (ds.y == 1)).mean()))
            auc.append(roc_auc(ds.y, p))
        a, u = summarize(acc), summarize(auc)
        label = "all" if n is None else str(n)
        rows.append((label, a, u))
        print(f"{label:>7} {a[0]:>8.3f} [{a[1]:.3f}..{a[2]:.3f}] {u[0]:>8.3f} [{u[1]:.3f}..{u[2]:.3f}]", flush=True)
    return rows


def _stratified_subsample(idx, y, n, rng):
    """n of the indices ``idx``, the classes in their proportions (at least 2 of each)."""
    pos = idx[y[idx] == 1]
    neg = idx[y[idx] == 0]
    n_pos = int(round(n * len(pos) / len(idx)))
    n_pos = min(max(n_pos, 2), len(pos), n - 2)
    return np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n - n_pos, replace=False)])


# ------------------------------------------------------------------------------------------------ (c) real ComfyUI
def comfy_check(args):
    """Seed Tournament in an in-process ComfyUI (CPU; tiny random U-Net, or --checkpoint): model evaluations counted
    against the cost model, finished seeds against a plain KSampler."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    import conftest  # noqa: F401  (the package alias diffusion_sentinel)
    from _comfy import boot_comfy, conditioning, empty_latent, run_node, run_v3, tiny_model

    boot_comfy(os.environ["COMFYUI_PATH"])
    import comfy.utils
    import torch
    from diffusion_sentinel.nodes.artifact.tournament import parse_check_at, planned_cost
    from diffusion_sentinel.nodes.artifact.tournament_node import SeedTournament

    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm bars in the report
    model = tiny_model(0)
    pos, neg = conditioning(1), conditioning(2)
    steps, n, k, check_at = args.comfy_steps, 8, 1, "0.1,0.3,0.5"
    checks = parse_check_at(check_at, steps, n, k)
    print(f"Seed Tournament in ComfyUI (tiny random SD1.5 U-Net, CPU, 8x8 latent): N={n} k={k} check_at={check_at} "
          f"-> {[(c.step, c.keep) for c in checks]} of {steps} steps")
    ok_all = True
    for sampler in args.comfy_samplers.split(","):
        out = run_v3(SeedTournament, model=model, seed=100, steps=steps, cfg=6.0, sampler_name=sampler,
                     scheduler="normal", positive=pos, negative=neg, latent_image=empty_latent(1), denoise=1.0,
                     candidates=n, keep=k, check_at=check_at, signal="cfg_asd")
        rep = json.loads(out.args[7])
        per_run = rep["model_evaluations_per_full_run"][0]
        model_cost = planned_cost(n, checks, steps) if per_run == steps else \
            sum(c["model_evals"] for c in rep["kept"] + rep["rejected"])
        equal, diff = [], 0.0
        for i, s in enumerate(out.args[1]):
            ref = run_node("KSampler", model=model, seed=s, steps=steps, cfg=6.0, sampler_name=sampler,
                           scheduler="normal", positive=pos, negative=neg, latent_image=empty_latent(1),
                           denoise=1.0)[0]["samples"][0]
            got = out.args[0]["samples"][i]
            equal.append(bool(torch.equal(got, ref)))
            diff = max(diff, float((got - ref).abs().max() / ref.abs().max()))
        # the report says whether bit identity is promised; where it is not (sa_solver), rounding-level agreement
        same = all(equal) if rep["bit_identical_to_plain_ksampler"] else diff < 1e-5
        ok = rep["model_evaluations"] == model_cost and same
        ok_all &= ok
        print(f"COMFY sampler={sampler} evals={rep['model_evaluations']} cost_model={model_cost:g} "
              f"all_to_the_end={rep['model_evaluations_all_to_the_end']} saved={rep['saved_ratio']:.3f} "
              f"evals_per_run={per_run} noise={rep['per_step_noise']} bit_identical={all(equal)} "
              f"max_rel_diff={diff:.1e} promised_bit_identical={rep['bit_identical_to_plain_ksampler']} "
              f"{'OK' if ok else 'MISMATCH'}", flush=True)
    print("COMFY all samplers: " + ("OK" if ok_all else "MISMATCH"))
    return ok_all


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="labelled runs (the paper's CSV format)")
    ap.add_argument("--ns", default="4,6,8", help="numbers of candidates N to search ('' = no search)")
    ap.add_argument("--checks", default="3,5,8,10,12,15,20,25,30", help="check steps K to consider")
    ap.add_argument("--max-checks", type=int, default=3)
    ap.add_argument("--n-max", type=int, default=32, help="largest best-of-N in the reference curve")
    ap.add_argument("--draws", type=int, default=40000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--select-seeds", default="0..4")
    ap.add_argument("--seeds", default="100..109")
    ap.add_argument("--grouped", action="store_true", help="CV folds grouped by prompt")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--default", default="8@5:4,15:2,25:1",
                    help="the recommended N and schedule (the node's default: 8 candidates, checks at 10/30/50 %% of "
                         "the steps); its RESULT line is printed last")
    ap.add_argument("--also", default="8@15:2;8@15:1;8@3:4,15:2,20:1;4@5:2,15:1;6@5:3,15:2,25:1",
                    help="other configurations to report (';'-separated N@schedule), before the default")
    ap.add_argument("--prefix", choices=("labels", "distill"), default="labels",
                    help="prefix model: the default recipe on the labels, or distilled from the full classifier")
    ap.add_argument("--split-half", type=int, default=0, help="selection-optimism check over this many halvings")
    ap.add_argument("--fixed", default="", help="schedules to play on the other half, e.g. '3:4,15:2,20:1;5:4,15:2,25:1'")
    ap.add_argument("--learning-curve", action="store_true", help="(b) accuracy/AUC against the number of labels")
    ap.add_argument("--comfy", action="store_true", help="(c) a real ComfyUI run (needs COMFYUI_PATH)")
    ap.add_argument("--comfy-steps", type=int, default=20)
    ap.add_argument("--comfy-samplers", default="euler,ddim,dpmpp_2m,uni_pc,lms,heun,euler_ancestral,dpmpp_2s_ancestral,"
                                               "dpmpp_sde,dpmpp_2m_sde,dpmpp_3m_sde,lcm,er_sde,ddpm,"
                                               "res_multistep_ancestral,seeds_2,dpmpp_2m_sde_gpu,deis,ipndm,"
                                               "gradient_estimation,euler_cfg_pp,sa_solver")
    args = ap.parse_args()
    if args.comfy:
        sys.exit(0 if comfy_check(args) else 1)
    if not args.data:
        ap.error("--data is required")
    ds = read_dataset(args.data)
    if args.learning_curve:
        learning_curve(args, ds)
        return
    if args.split_half:
        split_half(args, ds)
        return
    rep, S = simulate(args, ds)
    if args.also:
        for item in args.also.split(";"):
            n, sch = item.split("@")
            report_default(rep, S, int(n), parse_schedule(sch), result_line=False)
    if args.default:
        n, sch = args.default.split("@")
        report_default(rep, S, int(n), parse_schedule(sch))


if __name__ == "__main__":
    main()
