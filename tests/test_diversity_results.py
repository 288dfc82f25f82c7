"""The diversity panels and batch-level figures (pure): the table is the outputs, near-duplicate counts and the
most atypical image by hand, the machine-readable data kept for API users."""

from __future__ import annotations

import json

import torch
from diffusion_sentinel.nodes.diversity.results import DuplicateFigures, diversity_panel, duplicate_of, subset_panel
from diffusion_sentinel.nodes.diversity.subset import select_diverse
from diffusion_sentinel.nodes.diversity.summary import summarize


def batch():
    e = torch.eye(4, dtype=torch.float64)
    # 0, 1, 2, then 3 = 1 again, 4 = 0 again, 5 = a mix (atypical: the lowest cosine to the mean? checked below)
    return torch.stack([e[0], e[1], e[2], e[1], e[0], e[3]])


def test_duplicate_figures_by_hand():
    s = summarize(batch(), "enc", duplicate_threshold=0.99)
    d = DuplicateFigures.of(s)
    assert s.is_duplicate == [False, False, False, True, True, False]
    assert (d.n_near_duplicates, d.any_near_duplicate) == (2, True)
    assert duplicate_of(s) == [None, None, None, 1, 0, None]
    mu = torch.nn.functional.normalize(batch(), dim=1).mean(0)
    conf = [float(x @ mu) / float(mu.norm()) for x in batch()]
    assert d.most_atypical_index == min(range(6), key=lambda i: (conf[i], i)) == 2  # ties 2 and 5: the first
    clean = DuplicateFigures.of(summarize(torch.eye(3, dtype=torch.float64), "enc"))
    assert (clean.n_near_duplicates, clean.any_near_duplicate) == (0, False)


def test_diversity_panel_is_the_outputs():
    s = summarize(batch(), "enc", duplicate_threshold=0.99)
    p = diversity_panel(s)
    assert [r[1] for r in p["rows"]] == s.conformity and [r[2] for r in p["rows"]] == s.is_duplicate
    assert [r[3] for r in p["rows"]] == ["", "", "", 1, 0, ""] and p["highlight"] == [3, 4]
    assert f"Vendi {s.vendi:.3f} of at most 4" in p["summary"] and "2 near-duplicate(s)" in p["summary"]
    assert p["data"]["vendi"] == s.vendi and p["data"]["n_near_duplicates"] == 2
    assert p["columns"][1]["direction"] == "low = atypical"
    json.dumps(p, allow_nan=False)


def test_subset_panel_highlights_the_kept_images():
    f = batch()
    sel = select_diverse(f, 3, "greedy_vendi")
    p = subset_panel(sel, 6, "greedy_vendi", "1", "enc")
    assert p["highlight"] == sel.indices and [r[1] for r in p["rows"]] == [i in sel.indices for i in range(6)]
    assert [p["rows"][i][2] for i in sel.order] == [1, 2, 3]  # chosen as #1, #2, #3
    assert p["data"]["indices"] == sel.indices and p["data"]["vendi_after"] == sel.score_after
    assert f"Vendi {sel.score_before:.3f} -> {sel.score_after:.3f}" in p["summary"]
