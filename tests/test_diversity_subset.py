"""Diverse-subset selection: never worse than random subsets on synthetic clusters (many seeds), close to the
brute-force optimum, exact on constructed cases; latents and masks kept in step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from diffusion_sentinel.nodes.diversity.subset import (
    MAX_GREEDY_WORK,
    METHODS,
    SAME_IMAGE_COS,
    check_greedy_budget,
    greedy_work,
    largest_arrowhead_eigenvalue,
    max_greedy_k,
    pick_best,
    select_diverse,
    take_latent,
    take_mask,
)
from diffusion_sentinel.nodes.diversity.vendi import DiversityInputError, as_embeddings, hill_numbers, vendi_score

N_CLUSTERS = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run thousands of tiny float64 products; on a busy 2-core machine torch's thread pool makes
    each one ~100x slower than a single thread does."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def clusters(seed: int, sigma: float, separated: bool, d: int = 32, offset: float = 1.0):
    """CLIP-like synthetic batch: 6 clusters of 2..9 points around unit centres plus a shared direction (so all
    cosines are positive, as with CLIP). ``separated``: orthonormal centres; else random unit centres."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 10, (N_CLUSTERS,), generator=g)
    common = torch.randn(d, generator=g, dtype=torch.float64)
    common = offset * common / common.norm()
    raw = torch.randn(d, d, generator=g, dtype=torch.float64)
    centres = torch.linalg.qr(raw)[0][:N_CLUSTERS] if separated else \
        torch.nn.functional.normalize(raw[:N_CLUSTERS], dim=1)
    pts = torch.cat([centres[i] + common + sigma * torch.randn(int(sizes[i]), d, generator=g, dtype=torch.float64)
                     for i in range(N_CLUSTERS)])
    labels = torch.cat([torch.full((int(sizes[i]),), i) for i in range(N_CLUSTERS)])
    perm = torch.randperm(pts.shape[0], generator=g)
    return pts[perm], labels[perm]


def random_scores(f, k, seed, count=20) -> list[float]:
    """Vendi (q=1) of ``count`` random k-subsets, by a batched eigendecomposition of the sub-kernels."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x = as_embeddings(f)
    s = x @ x.T
    idx = torch.stack([torch.randperm(f.shape[0], generator=g)[:k] for _ in range(count)])
    sub = s[idx[:, :, None], idx[:, None, :]]
    return hill_numbers(torch.linalg.eigvalsh(sub / k), 1).tolist()


@pytest.mark.parametrize("method", METHODS)
def test_never_below_a_random_subset_on_duplicate_groups(method):
    """Groups of identical embeddings (orthonormal centres): over 100 seeds the choice scores at least as high
    as each of 20 random k-subsets, for k below, at and above the number of groups (farthest_point: up to the
    number of groups; past it, it does not balance how many copies of each group it keeps)."""
    ks = (3, 6, 9) if method == "greedy_vendi" else (3, 6)
    worst = math.inf
    for seed in range(100):
        f, _ = clusters(seed, sigma=0.0, separated=True)
        for k in ks:
            sel = select_diverse(f, k, method)
            worst = min(worst, sel.score_after - max(random_scores(f, k, seed)))
    assert worst >= -1e-9, worst


def test_farthest_point_past_the_number_of_groups_is_unbalanced():
    """Documented limit: 9 of 6 duplicate groups; greedy keeps the copies balanced, farthest_point may not."""
    gaps = []
    for seed in range(20):
        f, _ = clusters(seed, sigma=0.0, separated=True)
        gaps.append(select_diverse(f, 9, "greedy_vendi").score_after
                    - select_diverse(f, 9, "farthest_point").score_after)
    assert min(gaps) >= -1e-9 and max(gaps) > 0.1


@pytest.mark.parametrize("method", METHODS)
def test_near_duplicate_groups_lose_at_most_the_noise(method):
    """Groups with a little noise (σ = 0.01): which member of a group is kept then moves the score by about σ.
    Over 100 seeds: never more than 0.01 below the best of 20 random subsets, and strictly above all of them once
    k reaches the number of groups (greedy)."""
    worst_small, worst_large = math.inf, math.inf
    for seed in range(100):
        f, _ = clusters(seed, sigma=0.01, separated=True)
        for k in (3, 6) if method == "farthest_point" else (3, 6, 9):
            margin = select_diverse(f, k, method).score_after - max(random_scores(f, k, seed))
            if k < N_CLUSTERS:
                worst_small = min(worst_small, margin)
            else:
                worst_large = min(worst_large, margin)
    assert worst_small >= -0.01, worst_small
    assert worst_large >= (0.0 if method == "greedy_vendi" else -0.01), worst_large


@pytest.mark.parametrize("method", METHODS)
def test_beats_random_subsets_on_loose_clusters(method):
    """Overlapping clusters (σ = 0.1, random centres), k = 3, 6, 9, 100 seeds: above the mean of 20 random
    subsets for every seed, and above at least 95 % (greedy: 98 %) of all the random subsets drawn. A heuristic
    can lose to a lucky draw here: which member of each cluster to keep is decided by the noise."""
    beaten = total = 0
    for seed in range(100):
        f, _ = clusters(seed, sigma=0.1, separated=False)
        for k in (3, 6, 9):
            sel = select_diverse(f, k, method)
            rnd = random_scores(f, k, seed)
            assert sel.score_after > sum(rnd) / len(rnd), (seed, k)
            beaten += sum(sel.score_after >= r - 1e-9 for r in rnd)
            total += len(rnd)
    assert beaten / total >= (0.98 if method == "greedy_vendi" else 0.95), beaten / total


def test_greedy_takes_one_image_per_cluster():
    for seed in range(30):
        f, labels = clusters(seed, sigma=0.05, separated=True)
        sel = select_diverse(f, N_CLUSTERS, "greedy_vendi")
        assert sorted(labels[sel.indices].tolist()) == list(range(N_CLUSTERS)), seed


@pytest.mark.parametrize("method,floor", [("greedy_vendi", 0.9), ("farthest_point", 0.85)])
def test_close_to_the_brute_force_optimum(method, floor):
    ratios = []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        f = torch.randn(11, 8, generator=g, dtype=torch.float64) + 1.5 * torch.randn(1, 8, generator=g,
                                                                                       dtype=torch.float64)
        for k in (3, 4):
            best = max(vendi_score(f[list(c)]) for c in itertools.combinations(range(11), k))
            ratios.append(select_diverse(f, k, method).score_after / best)
    assert min(ratios) >= floor, min(ratios)
    assert sum(ratios) / len(ratios) >= (0.98 if method == "greedy_vendi" else 0.95), sum(ratios) / len(ratios)
    assert max(ratios) <= 1 + 1e-9


def test_two_of_n_is_the_exact_optimum():
    for seed in range(10):
        f = torch.randn(9, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.7
        best = max(vendi_score(f[list(c)]) for c in itertools.combinations(range(9), 2))
        for method in METHODS:
            assert select_diverse(f, 2, method).score_after == pytest.approx(best, rel=1e-12)


def test_duplicates_are_dropped_first():
    """Three distinct directions, each three times: any 3-subset with one of each scores 3 and equals the batch's."""
    base = torch.eye(3, dtype=torch.float64)
    f = base.repeat(3, 1)  # 0,1,2,0,1,2,...
    for method in METHODS:
        sel = select_diverse(f, 3, method)
        assert sorted(set(int(i) % 3 for i in sel.indices)) == [0, 1, 2]
        assert sel.score_after == pytest.approx(3.0) and sel.score_before == pytest.approx(3.0)


def test_order_two_greedy_matches_closed_form_greedy():
    """For q = 2 the greedy step minimises Σ_{i in S} s_ic² (independent re-implementation)."""
    f = as_embeddings(torch.randn(25, 6, generator=torch.Generator().manual_seed(3)) + 0.5)
    s2 = (f @ f.T) ** 2
    k = 7
    sel = select_diverse(f, k, "greedy_vendi", q=2)
    order = sel.order[:2]
    while len(order) < k:
        rest = [c for c in range(25) if c not in order]
        order.append(min(rest, key=lambda c: float(s2[c, order].sum())))
    assert sel.order == order


def test_general_order_matches_eigen_recomputation():
    f = torch.randn(14, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.4
    for q in (0.5, 1, math.inf):
        sel = select_diverse(f, 5, "greedy_vendi", q=q)
        assert sel.score_after == pytest.approx(vendi_score(f[sel.indices], q), rel=1e-12)
        # each greedy step took the best candidate
        for m in range(2, 5):
            chosen = sel.order[:m]
            best = max(vendi_score(f[chosen + [c]], q) for c in range(14) if c not in chosen)
            assert vendi_score(f[sel.order[:m + 1]], q) == pytest.approx(best, rel=1e-9)


def test_k_one_is_the_medoid_and_k_n_keeps_everything():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    x = as_embeddings(f)
    mu = x.mean(0)
    by_hand = max(range(4), key=lambda i: float(x[i] @ mu) / float(mu.norm()))  # the most typical image
    assert by_hand == 2
    assert select_diverse(f, 1, "greedy_vendi").indices == [2]
    sel = select_diverse(f, 10, "farthest_point")
    assert sel.indices == [0, 1, 2, 3] and sel.score_after == sel.score_before


def test_indices_are_ascending_unique_and_progress_is_reported():
    f = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    calls = []
    sel = select_diverse(f, 6, "greedy_vendi", on_step=lambda done, total: calls.append((done, total)))
    assert sel.indices == sorted(set(sel.indices)) and len(sel.indices) == 6
    assert sorted(sel.order) == sel.indices
    assert calls[0] == (2, 6) and calls[-1] == (6, 6) and len(calls) == 5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 5, 12, 40])
def test_progress_ends_at_its_total(method, k):
    """The last progress call is (total, total) with total = min(k, n), for k = 1, 2, some, n and past n."""
    f = torch.randn(12, 6, generator=torch.Generator().manual_seed(k))
    calls = []
    select_diverse(f, k, method, on_step=lambda done, total: calls.append((done, total)))
    total = min(k, 12)
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bad_selection_input_is_a_clear_error():
    f = torch.randn(5, 4)
    with pytest.raises(DiversityInputError, match="k must be at least 1"):
        select_diverse(f, 0)
    with pytest.raises(DiversityInputError, match="unknown selection method"):
        select_diverse(f, 2, "random")
    with pytest.raises(DiversityInputError, match="got a batch of 1"):
        select_diverse(f[:1], 1)


# ----------------------------------------------------------------------------- batches in step
def test_latent_and_mask_stay_in_step():
    n = 5
    samples = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 4, 2, 2).clone()
    latent = {"samples": samples, "batch_index": [10, 11, 12, 13, 14],
              "noise_mask": torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), "other": "kept"}
    out = take_latent(latent, [1, 4], n)
    assert out["samples"][:, 0, 0, 0].tolist() == [1.0, 4.0]
    assert out["batch_index"] == [11, 14] and out["noise_mask"].flatten().tolist() == [1.0, 4.0]
    assert out["other"] == "kept" and latent["samples"].shape[0] == n  # the input is not modified
    single = {"samples": samples, "noise_mask": torch.ones(1, 1, 2, 2)}
    assert take_latent(single, [0, 2], n)["noise_mask"].shape[0] == 1

    masks = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 3, 3)
    assert take_mask(masks, [0, 3], n)[:, 0, 0].tolist() == [0.0, 3.0]
    assert take_mask(torch.ones(1, 3, 3), [0, 3], n).shape == (1, 3, 3)  # one mask for all images
    assert take_mask(torch.ones(3, 3), [0, 3], n).shape == (3, 3)


def test_mismatched_latent_or_mask_is_a_clear_error():
    with pytest.raises(DiversityInputError, match="latent has a batch of 3 but the images have 5"):
        take_latent({"samples": torch.zeros(3, 4, 2, 2)}, [0], 5)
    with pytest.raises(DiversityInputError, match="mask has a batch of 2 but the images have 5"):
        take_mask(torch.zeros(2, 3, 3), [0], 5)
    with pytest.raises(DiversityInputError, match="LATENT"):
        take_latent(torch.zeros(5, 4, 2, 2), [0], 5)


# ----------------------------------------------------------------------------- repeats, ties, devices (issue 9)
def arc(theta: float = 0.1, copies: int = 3, dtype=torch.float64) -> torch.Tensor:
    """Three unit vectors at angles 0, θ/2, θ (b lies between a and c), each ``copies`` times: a, b, c, a, b, c..."""
    ang = torch.tensor([0.0, theta / 2, theta], dtype=torch.float64)
    base = torch.stack([ang.cos(), ang.sin()], dim=1)
    return base.repeat(copies, 1).to(dtype)


def test_the_vendi_score_itself_prefers_a_repeat_here():
    """Why the CUDA run kept groups [0, 0, 2]: for nearly collinear embeddings the Vendi score of {a, a, c} beats
    {a, b, c} when b lies between a and c (across-line variance 2θ²/9 vs θ²/6), at every order."""
    f = arc()
    for q in (0.5, 1, 2, math.inf):
        assert vendi_score(f[[0, 3, 2]], q) > vendi_score(f[[0, 1, 2]], q)


@pytest.mark.parametrize("q", [0.5, 1, 2, math.inf])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_an_image_is_not_repeated_while_another_is_left(q, dtype):
    """Three images three times, b between a and c: one of each is kept (before the fix: a copy of c), for
    embeddings in float64, float32 and float16 (what a CUDA encoder gives), and any batch order."""
    f = arc(dtype=dtype)
    for seed in range(5):
        perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed)) if seed else torch.arange(9)
        for method in METHODS:
            sel = select_diverse(f[perm], 3, method, q=q)
            groups = sorted(int(perm[i]) % 3 for i in sel.indices)
            assert groups == [0, 1, 2], (method, seed, groups)
            assert len(set(sel.indices)) == 3
            assert sel.score_after == pytest.approx(sel.score_before, rel=1e-9)  # one of each = the whole batch


def test_repeats_are_taken_only_when_nothing_else_is_left():
    """k = 5 of three images three times: every image once, then the copies that help most (balanced)."""
    f = arc()
    sel = select_diverse(f, 5, "greedy_vendi")
    groups = [int(i) % 3 for i in sel.order]
    assert sorted(groups[:3]) == [0, 1, 2] and len(set(sel.indices)) == 5
    everything = torch.ones(6, 4, dtype=torch.float64)  # all the same image
    for method in METHODS:
        for k in (1, 2, 4):
            sel = select_diverse(everything, k, method)
            assert sel.indices == list(range(k)) and sel.score_after == pytest.approx(1.0)  # ties: lowest index


def test_near_copies_within_embedding_precision_count_as_repeats():
    """A copy perturbed at fp16 rounding level (cos ≈ 1 - 1e-8) is the same image; 1e-3 apart is not."""
    f = arc(copies=1)
    noisy = torch.cat([f, f[:1] + torch.tensor([[0.0, 1e-4]], dtype=torch.float64)])  # a, b, c, a'
    x = as_embeddings(noisy)
    assert float(x[0] @ x[3]) >= SAME_IMAGE_COS
    sel = select_diverse(noisy, 3, "greedy_vendi")
    assert sorted(sel.indices) == [0, 1, 2] or sorted(sel.indices) == [1, 2, 3]
    apart = torch.cat([f, torch.tensor([[math.cos(0.1 + 0.05), math.sin(0.15)]], dtype=torch.float64)])
    assert 3 in select_diverse(apart, 3, "greedy_vendi").indices  # a genuinely new direction is taken


def test_ties_break_to_the_lowest_index_and_nan_never_wins():
    assert pick_best(torch.tensor([1.0, 3.0, 3.0, 2.0])) == 1
    assert pick_best(torch.tensor([1.0, 3.0, 3.0 * (1 - 1e-14), 3.0 * (1 + 1e-14)], dtype=torch.float64)) == 1
    assert pick_best(torch.tensor([1.0, 3.0, 3.0 + 1e-9], dtype=torch.float64)) == 2  # a real difference wins
    assert pick_best(torch.tensor([float("nan"), 0.5, float("nan")])) == 1
    assert pick_best(torch.tensor([2.0, 1.0, 1.0]), largest=False) == 1
    with pytest.raises(DiversityInputError, match="NaN"):
        pick_best(torch.tensor([float("nan"), float("nan")]))


@pytest.mark.parametrize("method", METHODS)
def test_no_index_is_ever_chosen_twice(method):
    """Heavily repeated batches in float32 and float16 (few distinct images, many copies, round-off differences
    between copies as on a GPU): the chosen indices are distinct for every k."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(int(torch.randint(1, 5, (1,), generator=g)), 8, generator=g) + 1.0
        reps = base[torch.randint(0, base.shape[0], (14,), generator=g)]
        jitter = 1e-4 * torch.randn(reps.shape, generator=g) * (seed % 2)
        for dtype in (torch.float32, torch.float16):
            f = (reps + jitter).to(dtype)
            for k in (2, 5, 13):
                sel = select_diverse(f, k, method, q=(1, 2, math.inf)[seed % 3])
                assert len(set(sel.order)) == k == len(sel.indices), (seed, dtype, k)


# ----------------------------------------------------------------------------- cost (issue 9)
def _reference_greedy(f, k, q):
    """The greedy_vendi of the released version (every step: batched eigvalsh of every candidate's kernel, or
    the q = 2 closed form recomputed from scratch), kept here to check the faster version chooses the same."""
    x = as_embeddings(f)
    s = (x @ x.T).clamp(-1, 1)
    s.fill_diagonal_(1.0)
    n = s.shape[0]
    v = s * s
    v.fill_diagonal_(float("inf"))
    i, j = divmod(int(torch.argmin(v)), n)
    order = sorted((i, j))
    while len(order) < k:
        cand = torch.tensor([c for c in range(n) if c not in order])
        ch = torch.tensor(order)
        m = len(order)
        if q == 2:
            scores = (m + 1) ** 2 / (float((s[ch][:, ch] ** 2).sum()) + 2.0 * (s[cand][:, ch] ** 2).sum(1) + 1.0)
        else:
            kk = torch.empty(cand.numel(), m + 1, m + 1, dtype=torch.float64)
            kk[:, :m, :m] = s[ch][:, ch]
            kk[:, m, :m] = s[cand][:, ch]
            kk[:, :m, m] = s[cand][:, ch]
            kk[:, m, m] = 1.0
            scores = hill_numbers(torch.linalg.eigvalsh(kk / (m + 1)).clamp_min(0.0), q)
        order.append(int(cand[int(torch.argmax(scores))]))
    return order


@pytest.mark.parametrize("q", [1, 0.5, 2, math.inf])
def test_same_choices_as_the_released_greedy(q):
    """Random batches without repeated images (sizes, dims, k random; 25 seeds): the incremental order-2 sums and
    the order-inf secular equation choose exactly what the released full recomputation chose."""
    for seed in range(25):
        g = torch.Generator().manual_seed(seed)
        n, d = int(torch.randint(8, 40, (1,), generator=g)), int(torch.randint(3, 24, (1,), generator=g))
        f = torch.randn(n, d, generator=g, dtype=torch.float64) + float(torch.rand(1, generator=g)) * 2 \
            * torch.randn(1, d, generator=g, dtype=torch.float64)
        k = int(torch.randint(2, n, (1,), generator=g))
        assert select_diverse(f, k, "greedy_vendi", q=q).order == _reference_greedy(f, k, q), (seed, n, d, k)


def test_largest_arrowhead_eigenvalue_matches_eigvalsh():
    g = torch.Generator().manual_seed(0)
    for m in (1, 2, 7, 30):
        for alpha in (1.0, 0.1, 5.0):
            d = torch.rand(m, generator=g, dtype=torch.float64) * 3
            d[0] = d[-1] if m > 2 else d[0]  # a repeated eigenvalue
            w = torch.randn(6, m, generator=g, dtype=torch.float64)
            w[0] = 0.0  # no coupling: the answer is max(d_max, alpha)
            w[1, : m // 2] = 0.0
            a = torch.zeros(6, m + 1, m + 1, dtype=torch.float64)
            a[:, :m, :m] = torch.diag(d)
            a[:, :m, m] = w
            a[:, m, :m] = w
            a[:, m, m] = alpha
            expect = torch.linalg.eigvalsh(a)[:, -1]
            got = largest_arrowhead_eigenvalue(d, w, alpha)
            assert torch.allclose(got, expect, rtol=1e-13, atol=1e-13), (m, alpha, got - expect)


def test_greedy_cost_is_bounded_with_a_clear_message():
    assert greedy_work(256, 128, 1) == pytest.approx(sum((256 - m) * (m + 1) ** 3 for m in range(2, 128)))
    assert greedy_work(256, 128, 2) == 0 and greedy_work(256, 128, "inf") == 0 and greedy_work(10, 10, 1) == 0
    kmax = max_greedy_k(256)
    assert greedy_work(256, kmax, 1) <= MAX_GREEDY_WORK < greedy_work(256, kmax + 1, 1)
    assert max_greedy_k(40) == 40  # small batches: every k fits
    check_greedy_budget(256, kmax, 1)
    f = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DiversityInputError, match=rf"k=4000 of 256|k={kmax + 1} of 256") as e:
        select_diverse(f, kmax + 1, "greedy_vendi", q=1)
    assert f"k <= {kmax}" in str(e.value) and "vendi_order 2 or inf" in str(e.value) and "farthest_point" in str(e.value)
    assert len(select_diverse(f, kmax + 1, "greedy_vendi", q=2).indices) == kmax + 1  # the closed form is not bounded
