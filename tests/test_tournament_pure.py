"""Seed Tournament, pure parts: the check schedule, its cost, the signals (CFG-Rejection's ASD, ranks, rank
average) and the best-of-N / tournament simulation, each against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusion_sentinel.classifiers.simulation import (
    best_of_n_rates,
    equivalent_n,
    saved_at_equal_rate,
    tournament_cost,
    tournament_rate,
)
from diffusion_sentinel.nodes.artifact.signals import (
    HIGHER,
    LOWER,
    SIGNALS,
    SignalUnavailable,
    accumulated_score_difference,
    badness_ranks,
    cfg_score_differences,
    keep_best,
    rank_average,
)
from diffusion_sentinel.nodes.artifact.tournament import Check, parse_check_at, planned_cost, schedule_text


# ------------------------------------------------------------------------------------------------ schedule
def test_fraction_and_step_forms():
    assert parse_check_at("0.3", 50, 8, 2) == [Check(15, 2)]
    assert parse_check_at("15", 50, 8, 2) == [Check(15, 2)]
    assert parse_check_at(" 0.3 ", 20, 8, 1) == [Check(6, 1)]
    assert parse_check_at("0.01", 20, 8, 1) == [Check(1, 1)]  # never step 0


def test_successive_halving_default_counts():
    # 8 -> ceil(8/2)=4 -> ceil(4/2)=2 -> the last check leaves keep
    assert parse_check_at("0.1,0.3,0.5", 50, 8, 1) == [Check(5, 4), Check(15, 2), Check(25, 1)]
    # never below keep: 8 -> max(3, 4) = 4 -> last = 3
    assert parse_check_at("5,15", 50, 8, 3) == [Check(5, 4), Check(15, 3)]
    assert parse_check_at("5,10,15", 50, 5, 2) == [Check(5, 3), Check(10, 2), Check(15, 2)]


def test_explicit_survivors():
    assert parse_check_at("5:5,15:2,25:1", 50, 8, 1) == [Check(5, 5), Check(15, 2), Check(25, 1)]
    assert schedule_text(parse_check_at("5:5,15:2,25:1", 50, 8, 1)) == "5:5,15:2,25:1"


@pytest.mark.parametrize("text,msg", [
    ("", "empty"), ("abc", "not a number"), ("15.0", "fraction must be below 1"), ("0", "positive"),
    ("-3", "positive"), ("50", "1..49"), ("20,10", "increase strictly"), ("0.3,15", "increase strictly"),
    ("5:3,15:2", "last check must leave keep = 1"), ("5:9,15:1", "between keep"), ("5:x", "whole number"),
    ("5,,15", "empty entry"),
])
def test_bad_check_at_is_named(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_check_at(text, 50, 8, 1)


def test_bad_counts():
    with pytest.raises(ValueError, match="between 1 and candidates - 1"):
        parse_check_at("0.3", 50, 4, 4)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        parse_check_at("0.3", 50, 1, 1)
    with pytest.raises(ValueError, match="at least 2 steps"):
        parse_check_at("0.3", 1, 4, 1)


def test_cost_by_hand():
    # one cut: N K + k (S - K) = 8*15 + 2*35 = 190
    assert planned_cost(8, [Check(15, 2)], 50) == 190
    # halving: 8*5 + 4*(15-5) + 2*(25-15) + 1*(50-25) = 40 + 40 + 20 + 25 = 125
    assert planned_cost(8, [Check(5, 4), Check(15, 2), Check(25, 1)], 50) == 125
    assert planned_cost(8, [Check(5, 4), Check(15, 2), Check(25, 1)], 50, evals_per_step=2) == 250
    assert tournament_cost(8, [(5, 4), (15, 2), (25, 1)], 50) == 125
    assert tournament_cost(8, [(15, 2)], 50) == 190
    with pytest.raises(ValueError):
        tournament_cost(8, [(15, 2), (10, 1)], 50)


# ------------------------------------------------------------------------------------------------ signals
def test_cfg_score_difference_by_hand():
    # one item, two steps; latent 1x2: step 0 differs by (3, 4) -> norm 5, sigma 2 -> 2.5; step 1 by (0, 1) at
    # sigma 0.5 -> 2.0. ASD = mean = 2.25 (the authors' SD1.5 selection: mean of ||eps_c - eps_u||)
    cond = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 1.0]]]]).reshape(1, 2, 1, 2)
    uncond = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 0.0]]]]).reshape(1, 2, 1, 2)
    g = cfg_score_differences(cond, uncond, [2.0, 0.5])
    assert g.dtype == torch.float64
    assert g.tolist() == [[2.5, 2.0]]
    assert accumulated_score_difference(g).tolist() == [2.25]
    assert accumulated_score_difference(g, upto=1).tolist() == [2.5]
    # epsilon-space identity for an epsilon model: x = x0 + sigma eps -> eps_c - eps_u = -(x0_c - x0_u) / sigma
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    eps_c, eps_u = torch.randn_like(x), torch.randn_like(x)
    sig = torch.tensor([3.0, 1.5, 0.7, 0.2], dtype=torch.float64)
    x0_c = x - sig.view(1, 4, 1, 1) * eps_c
    x0_u = x - sig.view(1, 4, 1, 1) * eps_u
    want = torch.linalg.vector_norm((eps_c - eps_u).flatten(2), dim=2)
    assert torch.allclose(cfg_score_differences(x0_c, x0_u, sig), want, rtol=1e-12, atol=1e-12)


def test_cfg_signal_unavailable_without_uncond():
    with pytest.raises(SignalUnavailable, match="cfg = 1"):
        cfg_score_differences(torch.zeros(1, 2, 4), None, [1.0, 0.5])
    with pytest.raises(ValueError, match="sigmas"):
        cfg_score_differences(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), [1.0])


def test_ranks_ties_and_nan():
    assert badness_ranks([0.2, 0.9, 0.5], HIGHER).tolist() == [3.0, 1.0, 2.0]
    assert badness_ranks([0.2, 0.9, 0.5], LOWER).tolist() == [1.0, 3.0, 2.0]
    assert badness_ranks([0.5, 0.5, 0.1, float("nan")], LOWER).tolist() == [2.5, 2.5, 1.0, 4.0]
    assert badness_ranks([float("nan"), 1.0, float("nan")], HIGHER).tolist() == [2.5, 1.0, 2.5]
    # rank average: ASD (higher better) ranks [3, 1, 2], P (lower better) ranks [1, 2, 3] -> [2, 1.5, 2.5]
    assert rank_average(([0.2, 0.9, 0.5], HIGHER), ([0.1, 0.3, 0.6], LOWER)).tolist() == [2.0, 1.5, 2.5]


def test_keep_best_order_ties_and_nan():
    assert keep_best([0.2, 0.9, 0.5, 0.9], HIGHER, 2) == [1, 3]  # tie -> earlier first
    assert keep_best([0.2, 0.9, 0.5], LOWER, 2) == [0, 2]
    assert keep_best([float("nan"), 0.1, 0.3], HIGHER, 2) == [2, 1]  # NaN is worst
    with pytest.raises(ValueError):
        keep_best([1.0], LOWER, 2)


def test_signal_table_says_direction_cost_source():
    for s in SIGNALS.values():
        assert s.direction in (HIGHER, LOWER) and s.cost and s.source
    assert SIGNALS["cfg_asd"].needs_cfg and "2505.23343" in SIGNALS["cfg_asd"].source
    assert SIGNALS["classifier"].needs_classifier and not SIGNALS["classifier"].needs_cfg


# ------------------------------------------------------------------------------------------------ simulation
def test_best_of_n_and_tournament_by_hand():
    # pool of 4 runs: full P, prefix P at K=1, label
    p_full = np.array([0.9, 0.2, 0.6, 0.1])
    art = np.array([1, 0, 1, 0])
    p_pre = {1: np.array([0.1, 0.8, 0.2, 0.3])}
    draws = np.array([[0, 1, 2], [2, 0, 3], [3, 2, 0]])
    # best-of-1 picks draws[:,0] = 0, 2, 3 -> labels 1, 1, 0 -> 2/3
    # best-of-2: min full P of {0,1} -> 1 (0); {2,0} -> 2 (1); {3,2} -> 3 (0) -> 1/3
    # best-of-3: {0,1,2} -> 1; {2,0,3} -> 3; {3,2,0} -> 3 -> 0
    assert best_of_n_rates(p_full, art, draws).tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    # tournament N=3, one check at K=1 keeping 2 (lowest prefix P), then lowest full P of those:
    # {0,1,2}: prefix 0.1,0.8,0.2 -> keep 0,2 -> full 0.9,0.6 -> 2 (artifact)
    # {2,0,3}: prefix 0.2,0.1,0.3 -> keep 2,0 -> 2 (artifact); {3,2,0}: prefix 0.3,0.2,0.1 -> keep 2,0 -> 2
    assert tournament_rate(p_full, p_pre, art, 3, [(1, 2)], draws) == pytest.approx(1.0)
    # keeping 3 of 3 is best-of-3
    assert tournament_rate(p_full, p_pre, art, 3, [(1, 3)], draws) == pytest.approx(0.0)


def test_equivalent_n_interpolates():
    rates = np.array([0.4, 0.2, 0.1, 0.05])  # r(1..4)
    assert equivalent_n(rates, 0.5) == 1.0
    assert equivalent_n(rates, 0.2) == 2.0
    assert equivalent_n(rates, 0.15) == pytest.approx(2.5)  # halfway between r(2)=0.2 and r(3)=0.1
    assert equivalent_n(rates, 0.3) == pytest.approx(1.5)
    assert math.isinf(equivalent_n(rates, 0.01))
    # saved = 1 - cost / (N* S): 125 / (5.58 * 50)
    assert saved_at_equal_rate(125, 5.58, 50) == pytest.approx(1 - 125 / 279)


def test_single_check_step():
    from diffusion_sentinel.nodes.artifact.tournament import single_check_step

    assert single_check_step("0.3", 20) == 6 and single_check_step("7", 20) == 7
    for bad, msg in (("0.1,0.3", "checks once"), ("5:1", "checks once"), ("20", "1..19"), ("x", "not a number")):
        with pytest.raises(ValueError, match=msg):
            single_check_step(bad, 20)
