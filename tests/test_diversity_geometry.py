"""Batch geometry on constructed embeddings: pairwise statistics, centroid, conformity, near-duplicates, and the
comparison with a reference batch (centroid distance, k-NN precision/recall/coverage) against brute-force loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from diffusion_sentinel.nodes.diversity.geometry import (
    centroid_norm,
    compare_to_reference,
    conformity,
    duplicate_flags,
    knn_precision_recall,
    knn_radii,
    near_duplicates,
    pairwise_stats,
)
from diffusion_sentinel.nodes.diversity.summary import format_pairs, summarize
from diffusion_sentinel.nodes.diversity.vendi import DiversityInputError, as_embeddings


def unit(*v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def at_cosine(base: torch.Tensor, other: torch.Tensor, c: float) -> torch.Tensor:
    """A unit vector with cosine exactly c to unit ``base``, in the plane of base and other."""
    perp = other - (other @ base) * base
    perp = perp / perp.norm()
    return c * base + math.sqrt(1 - c * c) * perp


def test_pairwise_stats_match_loops():
    f = as_embeddings(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) + 0.5)
    vals = [float(f[i] @ f[j]) for i, j in itertools.combinations(range(7), 2)]
    mean = sum(vals) / len(vals)
    st = pairwise_stats(f)
    assert st.pairs == 21
    assert st.mean == pytest.approx(mean, rel=1e-12)
    assert st.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)), rel=1e-10)
    assert (st.min, st.max) == (pytest.approx(min(vals)), pytest.approx(max(vals)))


def test_centroid_norm_identity_with_mean_similarity():
    """‖μ‖² = (1 + (n-1)·mean s_ij)/n, a second route to the same number."""
    for seed in range(5):
        f = as_embeddings(torch.randn(9, 6, generator=torch.Generator().manual_seed(seed)) + seed * 0.3)
        n = 9
        assert centroid_norm(f) ** 2 == pytest.approx((1 + (n - 1) * pairwise_stats(f).mean) / n, rel=1e-10)


def test_collapsed_and_orthogonal_batches():
    same = as_embeddings(torch.ones(4, 3))
    assert centroid_norm(same) == pytest.approx(1.0)
    assert torch.allclose(conformity(same), torch.ones(4, dtype=torch.float64))
    eye = as_embeddings(torch.eye(4))
    assert centroid_norm(eye) == pytest.approx(0.5)  # ‖(1,1,1,1)/4‖
    assert torch.allclose(conformity(eye), torch.full((4,), 0.5, dtype=torch.float64))
    assert pairwise_stats(eye).mean == pytest.approx(0.0)


def test_conformity_on_constructed_vectors():
    """Three copies of e1 and one e2: μ = (3e1 + e2)/4, cos(e1, μ) = 3/√10, cos(e2, μ) = 1/√10."""
    f = as_embeddings(torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]]))
    c = conformity(f)
    assert c[[0, 1, 3]].tolist() == pytest.approx([3 / math.sqrt(10)] * 3, rel=1e-12)
    assert float(c[2]) == pytest.approx(1 / math.sqrt(10), rel=1e-12)
    assert int(torch.argmin(c)) == 2  # the outlier
    # relation to the mean cosine to the others (Levi & Gilboa): (n‖μ‖c_i - 1)/(n-1)
    n, mu = 4, centroid_norm(f)
    loo = [(float(f[i] @ f.sum(0)) - 1) / (n - 1) for i in range(n)]
    assert [(n * mu * float(ci) - 1) / (n - 1) for ci in c] == pytest.approx(loo, rel=1e-12)


def test_conformity_of_a_balanced_batch_is_zero():
    f = as_embeddings(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert conformity(f).tolist() == [0.0, 0.0]


def test_near_duplicates_on_constructed_vectors():
    a, other = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    b = at_cosine(a, other, 0.97)
    c = at_cosine(a, unit(0, 0, 1, 0), 0.95)  # exactly at the threshold: included
    d = unit(0, 0, 0, 1)
    f = torch.stack([a, d, b, c])
    pairs = near_duplicates(f, 0.95)
    # s(b, c) = 0.97 * 0.95 = 0.9215 (their perpendicular parts are orthogonal)
    assert [(i, j) for i, j, _ in pairs] == [(0, 2), (0, 3)]
    assert [s for _, _, s in pairs] == pytest.approx([0.97, 0.95], abs=1e-12)
    assert duplicate_flags(4, pairs) == [False, False, True, True]
    assert near_duplicates(f, 0.96) == [(0, 2, pytest.approx(0.97))]
    assert near_duplicates(f, 0.99) == []
    assert [(i, j) for i, j, _ in near_duplicates(f, 0.9)] == [(0, 2), (0, 3), (2, 3)]
    with pytest.raises(DiversityInputError, match="threshold"):
        near_duplicates(f, 1.5)


def test_exact_duplicates_and_text():
    f = as_embeddings(torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]]))
    pairs = near_duplicates(f, 0.999)
    assert [(i, j) for i, j, _ in pairs] == [(0, 2), (0, 3), (2, 3)]
    assert duplicate_flags(4, pairs) == [False, False, True, True]
    assert format_pairs(pairs) == "0-2 (1.0000), 0-3 (1.0000), 2-3 (1.0000)"
    assert format_pairs(pairs, limit=1) == "0-2 (1.0000), ... (+2 more)"


# ----------------------------------------------------------------------------- reference batch
def brute_force_prc(gen, ref, k):
    """Kynkäänniemi precision/recall and Naeem coverage with plain Python loops (independent of geometry.py)."""
    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))

    def radii(xs):
        out = []
        for i, a in enumerate(xs):
            ds = sorted(dist(a, b) for j, b in enumerate(xs) if j != i)
            out.append(ds[k - 1])
        return out

    g, r = gen.tolist(), ref.tolist()
    rho, gam = radii(r), radii(g)
    prec = sum(any(dist(x, y) <= rho[j] for j, y in enumerate(r)) for x in g) / len(g)
    rec = sum(any(dist(y, x) <= gam[i] for i, x in enumerate(g)) for y in r) / len(r)
    cov = sum(any(dist(x, y) <= rho[j] for x in g) for j, y in enumerate(r)) / len(r)
    return prec, rec, cov


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3])
def test_knn_precision_recall_match_brute_force(seed, k):
    g = torch.Generator().manual_seed(seed)
    gen = as_embeddings(torch.randn(9, 5, generator=g, dtype=torch.float64) + 1.0)
    ref = as_embeddings(torch.randn(11, 5, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0.5, 0, 0, 0],
                                                                                             dtype=torch.float64))
    p, r, c = knn_precision_recall(gen, ref, k)
    bp, br, bc = brute_force_prc(gen, ref, k)
    assert (p, r, c) == (pytest.approx(bp), pytest.approx(br), pytest.approx(bc))


def test_knn_on_a_constructed_configuration():
    """Reference: 4 points spread on a cap; generated: 2 inside the cap, 2 far away on the opposite side."""
    e = torch.eye(4, dtype=torch.float64)
    ref = as_embeddings(torch.stack([e[0] + 0.2 * e[1], e[0] - 0.2 * e[1], e[0] + 0.2 * e[2], e[0] - 0.2 * e[2]]))
    gen = as_embeddings(torch.stack([e[0], e[0] + 0.05 * e[1], e[3], e[3] + 0.01 * e[2]]))
    p, r, c = knn_precision_recall(gen, ref, k=1)
    assert p == 0.5  # the two near e0 are inside the reference manifold, the two near e3 are not
    # generated radii (k=1): the e0 pair is 0.05 apart, the e3 pair 0.01: no reference point is that close
    assert r == 0.0
    assert c == 1.0  # e0, the centre of the cap, lies in every reference ball (radius 0.277 > distance 0.197)
    assert (p, r, c) == brute_force_prc(gen, ref, 1)


def test_identical_batches_have_full_precision_recall_and_zero_centroid_distance():
    f = torch.randn(8, 6, generator=torch.Generator().manual_seed(3))
    fig = compare_to_reference(f, f.clone(), k=3)
    assert (fig.precision, fig.recall, fig.coverage) == (1.0, 1.0, 1.0)
    assert fig.centroid_distance == pytest.approx(0.0, abs=1e-12)
    assert fig.centroid_cosine_distance == pytest.approx(0.0, abs=1e-12)


def test_centroid_distance_by_hand():
    gen = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ref = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # normalised: (0, 1) twice
    fig = compare_to_reference(gen, ref, k=1)
    assert fig.centroid_distance == pytest.approx(math.sqrt(2))
    assert fig.centroid_cosine_distance == pytest.approx(1.0)
    assert (fig.precision, fig.recall) == (0.0, 0.0)


def test_knn_radius_counts_duplicates():
    x = as_embeddings(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]]))
    assert knn_radii(x, 1).tolist() == pytest.approx([0.0, 0.0, math.sqrt(2)])


def test_mismatched_reference_dimensions_are_a_clear_error():
    with pytest.raises(DiversityInputError, match="512 dimensions but the batch's have 768.*same CLIP vision"):
        compare_to_reference(torch.randn(8, 768), torch.randn(8, 512))
    with pytest.raises(DiversityInputError, match="512 dimensions"):
        summarize(torch.randn(8, 768), "enc", reference=torch.randn(8, 512))


def test_too_few_images_for_k_is_a_clear_error():
    with pytest.raises(DiversityInputError, match="more than 3 reference images; the reference batch has 3"):
        knn_precision_recall(as_embeddings(torch.randn(8, 4)), as_embeddings(torch.randn(3, 4)), 3)
    with pytest.raises(DiversityInputError, match="more than 3 generated images; the batch has 2"):
        knn_precision_recall(as_embeddings(torch.randn(2, 4)), as_embeddings(torch.randn(9, 4)), 3)


def test_summary_collects_everything_and_warns_on_small_batches():
    f = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    s = summarize(f, "CLIP test #00000000", q=1, duplicate_threshold=0.99)
    assert s.n == 4 and s.dim == 3
    assert s.vendi == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert s.duplicates == [(0, 2, pytest.approx(1.0))] and s.is_duplicate == [False, False, True, False]
    assert s.reference is None and s.warnings and "noisy" in s.warnings[0]
    text = s.text()
    assert "encoder: CLIP test #00000000" in text and "0-2 (1.0000)" in text and "warning:" in text
    p = s.payload()
    assert p["duplicate_count"] == 1 and p["order"] == "1" and p["encoder"] == "CLIP test #00000000"
    assert s.payload()["reference"] is None
    with pytest.raises(DiversityInputError, match="got a batch of 1"):
        summarize(torch.randn(1, 3), "enc")
