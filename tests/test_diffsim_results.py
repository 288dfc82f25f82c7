"""The DiffSim panels and batch-level figures (pure): every number shown is the value given, NaN-aware figures,
deterministic ties, wide matrices summarised."""

from __future__ import annotations

import json
import math

from diffusion_sentinel.nodes.diffsim.ip_adapter import IPAdapterSpec
from diffusion_sentinel.nodes.diffsim.results import (
    BatchFigures,
    best_index,
    gate_panel,
    ipadapter_panel,
    matrix_panel,
    pairs_panel,
    worst_index,
)

DET = {"mode": "DiffSim-S", "block": "U_0", "comfy_block": ["output", 5, 0], "t_paper": 900, "noise_timestep": 101,
       "sigma": 0.3462, "seed": 2334, "image_passes": 3, "cache_hits": 1}


def test_batch_figures_by_hand():
    f = BatchFigures.of([0.5, 0.9, 0.1, 0.9])
    assert (f.mean, f.min, f.max, f.best_index, f.worst_index) == (0.6, 0.1, 0.9, 1, 2)  # ties: the first
    g = BatchFigures.of([float("nan"), 0.2, 0.4])
    assert g.mean == 0.30000000000000004 and (g.best_index, g.worst_index) == (2, 1)
    h = BatchFigures.of([float("nan")])
    assert math.isnan(h.mean) and h.best_index == 0
    assert best_index([1.0, 1.0]) == 0 and worst_index([1.0, 1.0]) == 0


def test_pairs_panel_shows_the_outputs():
    scores = [0.71, 0.93, 0.42]
    p = pairs_panel([(0, 0), (0, 1), (0, 2)], scores, DET)
    assert [r[3] for r in p["rows"]] == scores and p["highlight"] == [1]
    assert p["columns"][3]["direction"] == "higher = more similar" and "mean 0.6867" in p["summary"]
    assert any("[-1, 1]" in n for n in p["notes"]) and any("seed 2334" in n for n in p["notes"])
    single = pairs_panel([(0, 0)], [0.5], DET)
    assert single["summary"] == "DiffSim 0.5000" and single["highlight"] == []
    json.dumps(p, allow_nan=False)


def test_matrix_panel_rows_and_columns():
    m = [[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]]
    per = [0.55, 0.65, 0.4]
    p = matrix_panel(m, per, DET)
    assert [r[1:4] for r in p["rows"]] == m and [r[4] for r in p["rows"]] == per
    assert [c["label"] for c in p["columns"]] == ["image", "0", "1", "2", "mean to others"]
    assert p["highlight"] == [2] and "min 0.3000, max 0.8000" in p["summary"]
    wide = [[1.0 if i == j else 0.5 for j in range(20)] for i in range(20)]
    q = matrix_panel(wide, [0.5] * 20, DET)
    assert len(q["columns"]) == 2 and "whole matrix is in the 'matrix' output" in q["notes"][0]


def test_gate_panel():
    p = gate_panel([0.9, 0.95, 0.2], [True, True, False], 0.85, 1, [0, 1], DET)
    assert [r[1:] for r in p["rows"]] == [[0.9, True], [0.95, True], [0.2, False]] and p["highlight"] == [1]
    assert p["summary"].startswith("2 of 3 pass (threshold 0.85); best 1")
    none = gate_panel([0.1, 0.2], [False, False], 0.85, 2, [1], DET)
    assert none["notes"][0] == "no candidate passed: the images output holds the best candidate (1)"
    assert "the mean over 2 references" in none["notes"][1]
    empty = gate_panel([0.1], [False], 0.85, 1, [], DET)
    assert "nothing (empty batch)" in empty["notes"][0]


def test_ipadapter_panel():
    spec = IPAdapterSpec(dim=768, depth=4, heads=12, num_queries=16, embedding_dim=1280, output_dim=768, ff_mult=4,
                         layer_widths={2 * i + 1: 320 for i in range(16)})
    p = ipadapter_panel("ip-adapter-plus_sd15.safetensors", spec)
    rows = dict(p["rows"])
    assert rows["model family"] == "SD1.5" and rows["cross-attention layers"] == 16
    assert rows["needs CLIP vision"].startswith("CLIP ViT-H/14")
