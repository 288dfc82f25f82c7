"""Diversity maths timings, measured side by side in one run (median of several repetitions, CPU, float64 eigs).

1. Vendi score: the primal n×n eigendecomposition vs the dual d×d one when n > d (same result, checked).
2. Diverse-subset selection: greedy_vendi vs farthest_point for a few (n, k), and the q = 2 closed form.
3. Selection quality: the chosen subset's Vendi score as a fraction of the brute-force optimum (n = 11, k = 3 and
   4, 20 seeds), and its rank among 20 random subsets on synthetic clusters (100 seeds).
4. greedy_vendi before/after (issue 9): the released implementation (kept below as ``released_greedy``) against
   the current one, same embeddings, same run, with torch's default thread count as ComfyUI has it; the ratio
   released/now, whether both chose the same images, and one ``RESULT`` line per case.

    python benchmarks/diversity_speed.py            # add --quick for a shorter run, --threads N to pin torch
    python benchmarks/diversity_speed.py --only-greedy   # section 4 only
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_pack():
    """Import the pack's pure modules as ``diffusion_sentinel`` without running its ComfyUI entry point."""
    if "diffusion_sentinel" not in sys.modules:
        spec = importlib.machinery.ModuleSpec("diffusion_sentinel", None, is_package=True)
        mod = importlib.util.module_from_spec(spec)
        mod.__path__ = [str(ROOT)]
        sys.modules["diffusion_sentinel"] = mod
    from diffusion_sentinel.nodes.diversity.subset import select_diverse
    from diffusion_sentinel.nodes.diversity.vendi import vendi_score

    return vendi_score, select_diverse


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clip_like(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 2.0 * torch.randn(1, d, generator=g)  # shared direction, as with CLIP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--only-greedy", action="store_true", help="only section 4 (greedy_vendi before/after)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    vendi_score, select_diverse = _import_pack()
    reps = 3 if a.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {reps}")
    if a.only_greedy:
        greedy_before_after(select_diverse, a.quick)
        return

    print("\n1. Vendi score (q=1): primal (n×n) vs dual (d×d), n > d")
    print(f"{'n':>6} {'d':>5} {'primal s':>10} {'dual s':>10} {'primal/dual':>12} {'|diff|':>9}")
    sizes = [(1024, 768), (2048, 768)] if a.quick else [(1024, 768), (2048, 768), (2048, 1024), (4096, 768)]
    for n, d in sizes:
        f = clip_like(n, d)
        tp = median_time(lambda f=f: vendi_score(f, 1, form="primal"), reps)
        td = median_time(lambda f=f: vendi_score(f, 1, form="dual"), reps)
        diff = abs(vendi_score(f, 1, form="primal") - vendi_score(f, 1, form="dual"))
        print(f"{n:>6} {d:>5} {tp:>10.3f} {td:>10.3f} {tp / td:>12.1f} {diff:>9.1e}")

    print("\n2. Select Diverse Subset (embedding dim 768)")
    print(f"{'n':>6} {'k':>4} {'greedy q=1 s':>13} {'greedy q=2 s':>13} {'farthest s':>11} {'greedy/farthest':>16} "
          f"{'VS greedy':>10} {'VS farthest':>12}")
    cases = [(64, 8), (256, 16)] if a.quick else [(64, 8), (64, 16), (256, 16), (256, 32), (1024, 16)]
    for n, k in cases:
        f = clip_like(n, 768, seed=n + k)
        tg = median_time(lambda f=f, k=k: select_diverse(f, k, "greedy_vendi"), reps)
        t2 = median_time(lambda f=f, k=k: select_diverse(f, k, "greedy_vendi", q=2), reps)
        tf = median_time(lambda f=f, k=k: select_diverse(f, k, "farthest_point"), reps)
        vg = select_diverse(f, k, "greedy_vendi").score_after
        vf = select_diverse(f, k, "farthest_point").score_after
        print(f"{n:>6} {k:>4} {tg:>13.3f} {t2:>13.3f} {tf:>11.3f} {tg / tf:>16.1f} {vg:>10.3f} {vf:>12.3f}")

    print("\n3. Selection quality (q=1)")
    quality(vendi_score, select_diverse)
    greedy_before_after(select_diverse, a.quick)


def released_greedy(f: torch.Tensor, k: int, q: float) -> list[int]:
    """greedy_vendi as released (before issue 9): every step rebuilds every candidate's (m+1)² kernel and runs one
    batched eigvalsh (q = 2: the closed form recomputed from scratch), with torch's thread count; no repeat rule."""
    import math

    from diffusion_sentinel.nodes.diversity.vendi import as_embeddings, hill_numbers

    x = as_embeddings(f)
    s = (x @ x.T).clamp(-1.0, 1.0)
    s.fill_diagonal_(1.0)
    n = s.shape[0]
    v = s * s
    v.fill_diagonal_(float("inf"))
    i, j = divmod(int(torch.argmin(v)), n)
    order = sorted((i, j))
    while len(order) < k:
        taken = torch.zeros(n, dtype=torch.bool)
        taken[order] = True
        cand = torch.nonzero(~taken).flatten()
        m = len(order)
        ch = torch.tensor(order)
        if q == 2.0:
            scores = (m + 1) ** 2 / (float((s[ch][:, ch] ** 2).sum()) + 2.0 * (s[cand][:, ch] ** 2).sum(dim=1) + 1.0)
        else:
            scores = torch.empty(cand.numel(), dtype=torch.float64)
            for b0 in range(0, cand.numel(), 256):
                c = cand[b0:b0 + 256]
                kk = torch.empty(c.numel(), m + 1, m + 1, dtype=torch.float64)
                kk[:, :m, :m] = s[ch][:, ch]
                kk[:, m, :m] = s[c][:, ch]
                kk[:, :m, m] = s[c][:, ch]
                kk[:, m, m] = 1.0
                lam = torch.linalg.eigvalsh(kk / (m + 1)).clamp_min(0.0)
                scores[b0:b0 + 256] = hill_numbers(lam, math.inf if math.isinf(q) else q)
        order.append(int(cand[int(torch.argmax(scores))]))
    return order


def greedy_before_after(select_diverse, quick: bool) -> None:
    import math

    print("\n4. greedy_vendi: released vs now (same embeddings, same run; d = 768, CLIP-like)")
    print(f"{'n':>6} {'k':>5} {'q':>4} {'released s':>11} {'now s':>9} {'released/now':>13} {'same choice':>12}")
    cases = [(256, 32, 1.0), (256, 64, 1.0), (256, 64, 2.0), (256, 64, math.inf)]
    if not quick:
        cases += [(256, 128, 1.0), (256, 128, 2.0), (256, 128, math.inf), (1024, 256, 2.0)]
    for n, k, q in cases:
        f = clip_like(n, 768, seed=n + k)
        t0 = time.perf_counter()
        old = released_greedy(f, k, q)
        t_old = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = select_diverse(f, k, "greedy_vendi", q=q, work_budget=None).order
        t_new = time.perf_counter() - t0
        qs = "inf" if math.isinf(q) else f"{q:g}"
        print(f"{n:>6} {k:>5} {qs:>4} {t_old:>11.2f} {t_new:>9.2f} {t_old / t_new:>13.1f} {str(old == new):>12}")
        print(f"RESULT diversity_greedy n={n} k={k} q={qs} threads={torch.get_num_threads()} released_s={t_old:.3f} "
              f"now_s={t_new:.3f} ratio={t_old / t_new:.2f} same_choice={old == new}")


def quality(vendi_score, select_diverse) -> None:
    import itertools

    for method in ("greedy_vendi", "farthest_point"):
        ratios = []
        for seed in range(20):
            g = torch.Generator().manual_seed(seed)
            f = torch.randn(11, 8, generator=g, dtype=torch.float64) + 1.5 * torch.randn(1, 8, generator=g,
                                                                                           dtype=torch.float64)
            for k in (3, 4):
                best = max(vendi_score(f[list(c)]) for c in itertools.combinations(range(11), k))
                ratios.append(select_diverse(f, k, method).score_after / best)
        exact = sum(r > 1 - 1e-9 for r in ratios)
        print(f"  {method:15s} vs brute-force optimum (n=11, k=3,4, 20 seeds): mean {statistics.mean(ratios):.3f}, "
              f"worst {min(ratios):.3f}, optimal in {exact}/{len(ratios)}")
    for method in ("greedy_vendi", "farthest_point"):
        beaten = total = 0
        for seed in range(100):
            g = torch.Generator().manual_seed(seed)
            sizes = torch.randint(2, 10, (6,), generator=g)
            centres = torch.nn.functional.normalize(torch.randn(6, 32, generator=g, dtype=torch.float64), dim=1)
            common = torch.nn.functional.normalize(torch.randn(32, generator=g, dtype=torch.float64), dim=0)
            f = torch.cat([centres[i] + common + 0.1 * torch.randn(int(sizes[i]), 32, generator=g, dtype=torch.float64)
                           for i in range(6)])
            for k in (3, 6, 9):
                chosen = select_diverse(f, k, method).score_after
                rng = torch.Generator().manual_seed(10_000 + seed)
                for _ in range(20):
                    beaten += chosen >= vendi_score(f[torch.randperm(f.shape[0], generator=rng)[:k]]) - 1e-9
                    total += 1
        print(f"  {method:15s} beats {beaten}/{total} = {beaten / total:.1%} of random subsets (6 overlapping "
              "clusters, sigma 0.1, k = 3, 6, 9, 100 seeds x 20 draws)")


if __name__ == "__main__":
    main()
