"""The memorization nodes' schemas and defaults: fixed analysis seeds (no 'randomize' control in the editor), list
outputs that say so next to single batch-level outputs, and the noise size picked from the model (issue 11.4)."""

from __future__ import annotations

import pytest
import torch
from _comfy import conditioning, run_v3
from _memorization import tiny_sd2_v_model


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


@pytest.mark.parametrize("name, default", [("MemorizationGuard", 51), ("CalibrateMemorizationGuard", 51),
                                           ("VolumeGrowthRate", 0), ("MemorizationBenchmark", 51)])
def test_analysis_seeds_are_fixed_by_default(mem, name, default):
    """The frontend adds a 'control after generate' (default randomize) to INT inputs named seed unless the spec
    says control_after_generate false (/work/notes/analysis-seeds.md)."""
    cls = getattr(mem, name)
    seed = next(i for i in cls.GET_SCHEMA().inputs if i.id == "seed")
    assert seed.control_after_generate is False and seed.default == default
    spec = cls.GET_NODE_INFO_V1()["input"]
    opts = (spec.get("required", {}).get("seed") or spec["optional"]["seed"])[1]  # what /object_info sends
    assert opts["control_after_generate"] is False and opts["default"] == default


def test_list_outputs_say_so_and_batch_level_outputs_are_single(mem):
    batch_level = {"SentinelMemorizationGuard": {"any_memorized", "n_memorized", "max_score"},
                   "SentinelWenScoreTrajectory": {"any_memorized", "n_memorized", "max_score"},
                   "SentinelMemorizationTrajectory": {"any_memorized", "n_memorized", "max_score"},
                   "SentinelVolumeGrowthRate": {"max", "mean"}}
    for cls in mem.NODES:
        schema = cls.GET_SCHEMA()
        names = set()
        for o in schema.outputs:
            names.add(o.display_name)
            if o.is_output_list:
                assert o.tooltip.startswith("List, one value per"), (schema.node_id, o.display_name)
            else:
                assert "List" not in (o.tooltip or ""), (schema.node_id, o.display_name)
        assert batch_level.get(schema.node_id, set()) <= names
        for o in schema.outputs:
            if o.display_name in batch_level.get(schema.node_id, set()):
                assert not o.is_output_list and "One value for the batch" in o.tooltip


def test_native_noise_size_per_family(comfy):
    import comfy.supported_models as sm
    from diffusion_sentinel.nodes.memorization.probe import native_image_size

    sd15, sd20 = sm.SD15({"in_channels": 4}), sm.SD20({"in_channels": 4})
    sdxl = sm.SDXL({"in_channels": 4, "adm_in_channels": 2816})
    assert native_image_size(sd15, "eps") == 512 and native_image_size(sd15, "v") == 512
    assert native_image_size(sd20, "v") == 768  # SD2-768-v: the paper's SD2 runs
    assert native_image_size(sd20, "eps") == 512  # SD2-base
    assert native_image_size(sdxl, "eps") == 1024


def test_the_guard_picks_768_px_for_a_v_prediction_sd2_model_and_keeps_an_override(mem, comfy):
    vm = tiny_sd2_v_model(seed=3)
    pos, neg = conditioning(1), conditioning(2)
    auto = run_v3(mem.MemorizationGuard, model=vm, positive=pos, negative=neg)
    assert "latent 4x96x96" in auto.args[8] and "SD2 (1, 0.1)" in auto.args[8]
    notes = auto.ui["sentinel_result"][0]["notes"]
    assert any("768x768 px (auto: native size of SD20 v)" in n for n in notes)
    fixed = run_v3(mem.MemorizationGuard, model=vm, positive=pos, negative=neg, width=64, height=128)
    assert "latent 4x16x8" in fixed.args[8]
    assert not any("px (auto" in n for n in fixed.ui["sentinel_result"][0]["notes"])
    assert torch.isfinite(torch.tensor(auto.args[1])).all()
