"""Vendi score of order q: exact values on constructed embeddings, primal = dual, order limits, an independent
numpy implementation, and clear errors for unusable input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.diversity.vendi import (
    DiversityInputError,
    as_embeddings,
    hill_number,
    parse_order,
    spectrum,
    vendi_from_kernel,
    vendi_score,
)

ORDERS = [0, 0.5, 1, 2, math.inf]


def numpy_vendi(x: np.ndarray, q: float) -> float:
    """Independent reference: numpy float64, primal form, the textbook formulas written out."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = x.shape[0]
    lam = np.linalg.eigvalsh(x @ x.T / n)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    if q == 0:
        return float(len(lam))
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    if math.isinf(q):
        return float(1 / lam.max())
    return float(np.sum(lam**q) ** (1 / (1 - q)))


def _gauss(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("q", ORDERS)
def test_identical_embeddings_score_one(q):
    f = torch.tensor([[0.3, -1.2, 2.0, 0.5]]).repeat(7, 1)
    assert vendi_score(f, q) == pytest.approx(1.0, abs=1e-12)
    assert vendi_score(f * torch.arange(1, 8)[:, None], q) == pytest.approx(1.0, abs=1e-12)  # scale does not matter


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("n", [2, 5, 16])
def test_orthonormal_embeddings_score_n(q, n):
    basis = torch.linalg.qr(_gauss(32, 32, n))[0][:n]  # n orthonormal rows in 32-d
    assert vendi_score(basis, q) == pytest.approx(n, rel=1e-10)
    assert vendi_score(torch.eye(n), q) == pytest.approx(n, rel=1e-12)


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("n,d", [(40, 8), (8, 40), (33, 32), (64, 3)])
def test_dual_and_primal_forms_agree(q, n, d):
    f = _gauss(n, d, 7 * n + d)
    p, du = vendi_score(f, q, form="primal"), vendi_score(f, q, form="dual")
    assert p == pytest.approx(du, rel=1e-10)
    assert vendi_score(f, q) == pytest.approx(p, rel=1e-10)  # auto picks one of them
    lp, ld = spectrum(f, "primal"), spectrum(f, "dual")
    r = min(n, d)
    assert torch.allclose(lp[:r], ld[:r], atol=1e-12)
    assert lp.sum().item() == pytest.approx(1.0) and (lp >= 0).all()


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("seed", range(4))
def test_matches_independent_numpy_implementation(q, seed):
    x = _gauss(12, 6, seed).numpy() + 0.8  # positively correlated, CLIP-like
    assert vendi_score(torch.from_numpy(x), q) == pytest.approx(numpy_vendi(x, q), rel=1e-9)


@pytest.mark.parametrize("s", [0.0, 0.3, -0.6, 0.95, 1.0])
def test_two_vectors_closed_form(s):
    """Two unit vectors with cosine s: eigenvalues of K/2 are (1 ± |s|)/2."""
    f = torch.tensor([[1.0, 0.0], [s, math.sqrt(max(0.0, 1 - s * s))]], dtype=torch.float64)
    a, b = (1 + abs(s)) / 2, (1 - abs(s)) / 2
    shannon = math.exp(-sum(v * math.log(v) for v in (a, b) if v > 0))
    assert vendi_score(f, 1) == pytest.approx(shannon, rel=1e-12)
    assert vendi_score(f, 2) == pytest.approx(1 / (a * a + b * b), rel=1e-12)
    assert vendi_score(f, math.inf) == pytest.approx(1 / a, rel=1e-12)
    assert vendi_score(f, 0.5) == pytest.approx((math.sqrt(a) + math.sqrt(b)) ** 2, rel=1e-12)


def test_order_two_equals_frobenius_closed_form():
    """VS_2 = 1/Σλ² = n² / ‖K‖_F², computed without any eigendecomposition."""
    f = as_embeddings(_gauss(15, 9, 3) + 0.5)
    k = f @ f.T
    assert vendi_score(f, 2) == pytest.approx(15**2 / float((k**2).sum()), rel=1e-10)


def test_order_one_is_the_limit_of_nearby_orders():
    f = _gauss(20, 10, 1) + 0.3
    v1 = vendi_score(f, 1)
    for eps in (1e-3, 1e-5, 1e-7):
        assert vendi_score(f, 1 - eps) == pytest.approx(v1, rel=5 * eps)
        assert vendi_score(f, 1 + eps) == pytest.approx(v1, rel=5 * eps)


def test_large_order_tends_to_one_over_largest_eigenvalue():
    f = _gauss(20, 10, 2) + 0.3
    lam = spectrum(f)
    assert vendi_score(f, math.inf) == pytest.approx(1 / float(lam.max()), rel=1e-12)
    assert vendi_score(f, 400) == pytest.approx(vendi_score(f, math.inf), rel=1e-2)


def test_order_zero_counts_the_rank():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 50, generator=g, dtype=torch.float64)
    f = torch.randn(10, 3, generator=g, dtype=torch.float64) @ basis  # 10 vectors in a 3-d subspace
    assert vendi_score(f, 0) == 3
    assert vendi_score(f, 0, form="dual") == 3
    assert vendi_score(torch.cat([f, f]), 0) == 3  # duplicates add no rank
    assert vendi_score(_gauss(6, 50, 1), 0) == 6


def test_scores_do_not_increase_with_order_and_stay_in_bounds():
    for seed in range(10):
        f = _gauss(12, 5, seed) + (seed % 3) * 0.5
        vals = [vendi_score(f, q) for q in (0, 0.25, 0.5, 1, 1.5, 2, 4, math.inf)]
        assert all(a >= b - 1e-9 for a, b in zip(vals, vals[1:])), vals
        assert 1 - 1e-12 <= vals[-1] and vals[0] <= min(12, 5)


def test_invariant_to_order_sign_and_scale_of_embeddings():
    f = _gauss(9, 4, 5) + 0.2
    v = vendi_score(f, 1)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    signs = torch.tensor([1, -1, 1, 1, -1, 1, -1, 1, 1], dtype=torch.float64)[:, None]
    assert vendi_score(f[perm], 1) == pytest.approx(v, rel=1e-12)
    assert vendi_score(f * signs * 3.7, 1) == pytest.approx(v, rel=1e-12)  # linear kernel: f and -f are alike


def test_duplicating_a_batch_does_not_change_the_score():
    f = _gauss(6, 8, 9) + 0.4
    for q in ORDERS:
        assert vendi_score(torch.cat([f, f, f]), q) == pytest.approx(vendi_score(f, q), rel=1e-9)


def test_float32_embeddings_give_the_same_score():
    f = _gauss(30, 16, 4) + 0.5
    assert vendi_score(f.float(), 1) == pytest.approx(vendi_score(f, 1), rel=1e-6)


def test_kernel_form_matches_embedding_form():
    f = as_embeddings(_gauss(10, 4, 8))
    for q in ORDERS:
        assert vendi_from_kernel(f @ f.T, q) == pytest.approx(vendi_score(f, q), rel=1e-10)
    with pytest.raises(DiversityInputError, match="diagonal"):
        vendi_from_kernel(2 * torch.eye(3))
    with pytest.raises(DiversityInputError, match="symmetric"):
        vendi_from_kernel(torch.tensor([[1.0, 0.5], [0.1, 1.0]]))


def test_hill_number_zero_log_zero_is_zero():
    assert hill_number(torch.tensor([0.5, 0.5, 0.0, 0.0]), 1) == pytest.approx(2.0)
    assert hill_number(torch.tensor([1.0, 0.0]), 0.5) == pytest.approx(1.0)
    assert hill_number(torch.tensor([0.25] * 4), math.inf) == pytest.approx(4.0)
    # round-off negative eigenvalues are clipped
    assert hill_number(torch.tensor([0.5, 0.5, -1e-17]), 1) == pytest.approx(2.0)


def test_parse_order():
    assert parse_order("1") == 1.0 and parse_order("0.5") == 0.5 and parse_order("inf") == math.inf
    assert parse_order(math.inf) == math.inf and parse_order(2) == 2.0
    with pytest.raises(DiversityInputError, match=">= 0"):
        parse_order(-1)


def test_batch_of_one_is_a_clear_error():
    with pytest.raises(DiversityInputError, match="at least 2 images, got a batch of 1"):
        vendi_score(torch.randn(1, 8))


@pytest.mark.parametrize("bad,msg", [
    (torch.randn(8), "2-D"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
    (torch.tensor([[0.0, 0.0], [0.0, 1.0]]), "zero vectors"),
])
def test_unusable_embeddings_are_clear_errors(bad, msg):
    with pytest.raises(DiversityInputError, match=msg):
        vendi_score(bad)
    assert issubclass(DiversityInputError, ValueError)


def test_unknown_form_is_an_error():
    with pytest.raises(DiversityInputError, match="form"):
        vendi_score(torch.randn(3, 3), form="fast")
