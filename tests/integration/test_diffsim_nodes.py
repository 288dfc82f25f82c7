"""The DiffSim nodes run as ComfyUI runs them (V3 execute in inference mode) on tiny real models."""

from __future__ import annotations

import json

import _diffsim as D
import pytest
import torch
from _comfy import run_v3

RES = 64
SETTINGS = dict(mode="DiffSim-S (self-attention)", block="U_0", timestep="style (t=900)", t=900,
                prompt="High quality image", text="prompt + empty uncond (paper)", seed=2334, resolution=RES,
                resize="square (paper)")


@pytest.fixture(scope="module")
def nodes(comfy):
    from diffusion_sentinel.nodes.diffsim import comfy_nodes

    return comfy_nodes


@pytest.fixture(scope="module")
def kit(comfy):
    return dict(model=D.unet_model(seed=0), vae=D.kl_vae(seed=0), clip=D.tiny_clip(seed=0))


def test_schemas_have_tooltips_and_categories(nodes):
    for cls in nodes.NODES:
        s = cls.GET_SCHEMA()
        assert s.node_id.startswith("Sentinel") and s.category == "Sentinel/diffsim" and s.description
        assert all(i.tooltip for i in s.inputs), s.node_id
        assert all(o.tooltip and o.display_name for o in s.outputs), s.node_id


def test_diffsim_one_against_many_and_item_by_item(nodes, kit):
    ref, cands = D.images(1, seed=1), D.images(3, seed=2)
    out = run_v3(nodes.DiffSim, image_a=ref, image_b=cands, use_cache=False, **kit, **SETTINGS)
    scores, mean, details, lo, hi, best, worst = out.args
    assert len(scores) == 3 and mean == pytest.approx(sum(scores) / 3)
    assert (lo, hi) == (min(scores), max(scores)) and scores[best] == hi and scores[worst] == lo
    det = json.loads(details)
    assert det["pairs"] == [[0, 0], [0, 1], [0, 2]] and det["image_passes"] == 4 and det["comfy_block"] == ["output", 1, 0]
    assert det["noise_timestep"] == 101 and det["sigma"] == pytest.approx(0.3462, abs=1e-4)
    (p,) = out.ui["sentinel_result"]
    assert [r[3] for r in p["rows"]] == scores and [r[1:3] for r in p["rows"]] == det["pairs"]  # payload = outputs
    assert p["highlight"] == [best] and p["columns"][3]["direction"] == "higher = more similar"
    assert "sentinel_result" in out.ui and "text" in out.ui and json.dumps(out.ui, allow_nan=False)
    # item by item, and the reverse direction gives the same scores (symmetry)
    rev = run_v3(nodes.DiffSim, image_a=cands, image_b=ref.expand(3, -1, -1, -1), use_cache=False, **kit, **SETTINGS)
    assert rev.args[0] == pytest.approx(scores, abs=D.score_tol(kit["model"]))
    with pytest.raises(ValueError, match="3 images and image_b has 2"):
        run_v3(nodes.DiffSim, image_a=cands, image_b=cands[:2], **kit, **SETTINGS)


def test_diffsim_uses_the_cache_between_runs(nodes, kit):
    ref, cands = D.images(1, seed=3), D.images(2, seed=4)
    first = json.loads(run_v3(nodes.DiffSim, image_a=ref, image_b=cands, **kit, **SETTINGS).args[2])
    second = json.loads(run_v3(nodes.DiffSim, image_a=ref, image_b=cands, **kit, **SETTINGS).args[2])
    assert first["image_passes"] == 3 and second["image_passes"] == 0 and second["cache_hits"] == 3
    assert second["similarity"] == first["similarity"]


def test_matrix(nodes, kit):
    imgs = D.images(4, seed=5)
    out = run_v3(nodes.DiffSimMatrix, images=imgs, use_cache=False, **kit, **SETTINGS)
    text, mean, per_image, heat, lo, hi, odd = out.args
    m = torch.tensor(json.loads(text))
    assert m.shape == (4, 4) and torch.allclose(m, m.T) and torch.all(m.diagonal() == 1)
    off = m[~torch.eye(4, dtype=torch.bool)]
    assert mean == pytest.approx(float(off.mean()), abs=1e-6)
    assert per_image == pytest.approx([float(m[i][torch.arange(4) != i].mean()) for i in range(4)], abs=1e-6)
    assert heat.dim() == 4 and heat.shape[0] == 1 and heat.shape[-1] == 3
    assert (lo, hi) == pytest.approx((float(off.min()), float(off.max())), abs=1e-6)
    assert odd == min(range(4), key=lambda i: per_image[i])
    (p,) = out.ui["sentinel_result"]  # the table is the matrix (rows x columns) plus the per-image means
    assert [r[1:5] for r in p["rows"]] == json.loads(text) and [r[5] for r in p["rows"]] == per_image
    assert p["highlight"] == [odd] and f"{mean:.4f}" in p["summary"]
    pair = run_v3(nodes.DiffSim, image_a=imgs[1:2], image_b=imgs[3:4], use_cache=False, **kit, **SETTINGS)
    assert pair.args[0][0] == pytest.approx(float(m[1, 3]), abs=D.score_tol(kit["model"]))
    with pytest.raises(ValueError, match="at least 2 images"):
        run_v3(nodes.DiffSimMatrix, images=imgs[:1], **kit, **SETTINGS)


def test_style_gate(nodes, kit):
    ref, cands = D.images(1, seed=6), D.images(4, seed=7)
    cands[2] = ref[0]  # an exact copy of the reference must pass and be the best
    out = run_v3(nodes.StyleSimilarityGate, reference=ref, candidates=cands, threshold=0.999, use_cache=False,
                 **kit, **SETTINGS)
    passed, scores, images, best, best_image, count, any_passed, all_passed = out.args
    assert passed == [False, False, True, False] and count == 1 and best == 2 and any_passed and not all_passed
    (p,) = out.ui["sentinel_result"]
    assert [r[1] for r in p["rows"]] == scores and [r[2] for r in p["rows"]] == passed and p["highlight"] == [best]
    assert scores[2] == pytest.approx(1.0, abs=1e-9) and max(scores[:2] + scores[3:]) < 0.999
    assert torch.equal(images, cands[2:3]) and torch.equal(best_image, cands[2:3])
    lo = run_v3(nodes.StyleSimilarityGate, reference=ref, candidates=cands, threshold=-1.0, **kit, **SETTINGS)
    assert lo.args[0] == [True] * 4 and torch.equal(lo.args[2], cands) and lo.args[6] and lo.args[7]
    hi_cands = cands[[0, 1, 3]]
    none = run_v3(nodes.StyleSimilarityGate, reference=ref, candidates=hi_cands, threshold=1.0, **kit, **SETTINGS)
    assert none.args[5] == 0 and none.args[2].shape[0] == 1 and not none.args[6]  # keep the best
    assert "no candidate passed" in none.ui["sentinel_result"][0]["notes"][0]
    empty = run_v3(nodes.StyleSimilarityGate, reference=ref, candidates=hi_cands, threshold=1.0,
                   if_none_pass="empty batch", **kit, **SETTINGS)
    assert empty.args[2].shape == (0, *hi_cands.shape[1:])
    # two references: the mean of the two scores
    two = run_v3(nodes.StyleSimilarityGate, reference=torch.cat([ref, cands[:1]]), candidates=cands, threshold=0.0,
                 **kit, **SETTINGS)
    one_b = run_v3(nodes.StyleSimilarityGate, reference=cands[:1], candidates=cands, threshold=0.0, **kit, **SETTINGS)
    assert two.args[1] == pytest.approx([(a + b) / 2 for a, b in zip(scores, one_b.args[1])], abs=1e-9)


def test_custom_block_timestep_and_options_reach_the_pipeline(nodes, kit):
    a, b = D.images(2, seed=8)
    kw = dict(SETTINGS, block="custom", custom_block="input 3", timestep="custom (use t)", t=400,
              noise="shared", latent="posterior mean", t_convention="leading (1000 - t)", use_cache=False)
    det = json.loads(run_v3(nodes.DiffSim, image_a=a[None], image_b=b[None], **kit, **kw).args[2])
    assert det["comfy_block"] == ["input", 3, 0] and det["t_paper"] == 400 and det["noise_timestep"] == 600
    assert det["noise"] == "shared" and det["latent"] == "posterior mean"
    with pytest.raises(ValueError, match="block U_2"):
        run_v3(nodes.DiffSim, image_a=a[None], image_b=b[None], **kit, **dict(SETTINGS, block="U_2"))


def test_diffsim_c_through_the_nodes(nodes, kit, tmp_path):
    import folder_paths

    cv = D.clip_vision(tmp_path, hidden=32)
    D.tiny_ip_adapter_file(tmp_path / "ip-adapter-plus_tiny.safetensors", kit["model"], embedding_dim=32)
    folder_paths.add_model_folder_path("ipadapter", str(tmp_path))
    assert "ip-adapter-plus_tiny.safetensors" in folder_paths.get_filename_list("ipadapter")
    assert nodes.LoadIPAdapterPlus.validate_inputs("ip-adapter-plus_tiny.safetensors") is True
    assert "not found" in nodes.LoadIPAdapterPlus.validate_inputs("nope.safetensors")
    (ip,) = run_v3(nodes.LoadIPAdapterPlus, ipadapter_file="ip-adapter-plus_tiny.safetensors").args
    a, b = D.images(2, seed=9)
    kw = dict(SETTINGS, mode="DiffSim-C (IP-Adapter cross-attention)", use_cache=False)
    out = run_v3(nodes.DiffSim, image_a=a[None], image_b=b[None], ip_adapter=ip, clip_vision=cv, **kit, **kw)
    det = json.loads(out.args[2])
    assert det["mode"] == "DiffSim-C" and det["halves"] == ["cond"] and det["ip_weight"] == 0.5
    assert -1 <= out.args[0][0] <= 1
    with pytest.raises(ValueError, match="needs an IP-Adapter Plus"):
        run_v3(nodes.DiffSim, image_a=a[None], image_b=b[None], **kit, **kw)


# ----------------------------------------------------------------------------- issue 12 / issue 9
def test_analysis_seed_has_no_randomize_control(nodes):
    """The seed is part of the measurement (2334 as released): the frontend must not add its 'control after
    generate' widget (it does for any INT named seed unless control_after_generate is false)."""
    for cls in (nodes.DiffSim, nodes.DiffSimMatrix, nodes.StyleSimilarityGate):
        schema = cls.GET_SCHEMA()
        (seed,) = [i for i in schema.inputs if i.id == "seed"]
        assert seed.control_after_generate is False and seed.default == 2334
        info = cls.GET_NODE_INFO_V1()  # what /object_info sends the frontend
        spec = info["input"]["required"]["seed"]
        assert spec[0] == "INT" and spec[1]["control_after_generate"] is False and spec[1]["default"] == 2334


def _progress(fn):
    import comfy.utils

    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        out = fn()
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    return out, seen


def test_progress_ends_at_its_total(nodes, kit):
    """Issue 12: the bar ended at 4/7. It counts the distinct images (computed or cached) plus the scores, moves
    forward only, and its last update is total/total: uncached, cached, repeated images, the matrix, the gate."""
    ref, cands = D.images(1, seed=81), D.images(3, seed=82)
    runs = {
        "uncached": (lambda: run_v3(nodes.DiffSim, image_a=ref, image_b=cands, use_cache=False, **kit, **SETTINGS), 7),
        "first (fills the cache)": (lambda: run_v3(nodes.DiffSim, image_a=ref, image_b=cands, **kit, **SETTINGS), 7),
        "all cached": (lambda: run_v3(nodes.DiffSim, image_a=ref, image_b=cands, **kit, **SETTINGS), 7),
        "repeated image": (lambda: run_v3(nodes.DiffSim, image_a=ref, image_b=torch.cat([ref, ref, cands[:1]]),
                                          use_cache=False, **kit, **SETTINGS), 2 + 3),
        "matrix": (lambda: run_v3(nodes.DiffSimMatrix, images=cands, use_cache=False, **kit, **SETTINGS), 3 + 3),
        "gate, cached": (lambda: run_v3(nodes.StyleSimilarityGate, reference=ref, candidates=cands, threshold=0.5,
                                        **kit, **SETTINGS), 4 + 3),
    }
    for name, (fn, total) in runs.items():
        _, seen = _progress(fn)
        assert seen, name
        assert seen[-1] == (total, total), (name, seen)
        assert all(t == total for _, t in seen) and [v for v, _ in seen] == sorted(v for v, _ in seen), (name, seen)
    _, seen = _progress(runs["all cached"][0])
    assert seen[0] == (4, 7)  # the cached images are counted as done at once, then one step per pair


def test_rgba_scores_exactly_one_against_its_rgb(nodes, kit):
    """Issue 9: an RGBA image scored 0.87-0.90 against its own RGB pixels (the noise seed was hashed with alpha)."""
    rgb = D.images(2, seed=91)
    alpha = torch.rand(2, rgb.shape[1], rgb.shape[2], 1, generator=torch.Generator().manual_seed(0))
    rgba = torch.cat([rgb, alpha], dim=-1)
    out = run_v3(nodes.DiffSim, image_a=rgba, image_b=rgb, use_cache=False, **kit, **SETTINGS)
    assert out.args[0] == pytest.approx([1.0, 1.0], abs=1e-12)
    det = json.loads(out.args[2])
    assert det["image_passes"] == 2  # the RGBA images are the RGB images: computed once
    grey = rgb[:1].mean(dim=-1, keepdim=True)
    out = run_v3(nodes.DiffSim, image_a=grey, image_b=grey.expand(-1, -1, -1, 3), use_cache=False, **kit, **SETTINGS)
    assert out.args[0] == pytest.approx([1.0], abs=1e-12)


def test_ipadapter_loader_shows_what_was_loaded(nodes, kit, tmp_path):
    import folder_paths

    D.tiny_ip_adapter_file(tmp_path / "ip-adapter-plus_shown.safetensors", kit["model"], embedding_dim=32)
    folder_paths.add_model_folder_path("ipadapter", str(tmp_path))
    out = run_v3(nodes.LoadIPAdapterPlus, ipadapter_file="ip-adapter-plus_shown.safetensors")
    (p,) = out.ui["sentinel_result"]
    table = dict(p["rows"])
    ip = out.args[0]
    assert table["file"] == "ip-adapter-plus_shown.safetensors" and table["model family"] == ip.spec.family
    assert table["cross-attention layers"] == len(ip.spec.layer_widths) and table["image tokens"] == 4
    assert "hidden width 32" in table["needs CLIP vision"]


def test_list_outputs_say_they_are_lists(nodes):
    for cls in nodes.NODES:
        for o in cls.GET_SCHEMA().outputs:
            if o.is_output_list:
                assert "List output: one value per" in o.tooltip, (cls.__name__, o.id)
            elif o.io_type in ("INT", "FLOAT", "BOOLEAN"):
                assert "Batch-level" in o.tooltip, (cls.__name__, o.id)


def test_every_node_has_help_that_names_its_outputs(nodes):
    """web/docs/<NodeId>.md (the frontend's node help panel): present for every DiffSim and diversity node, naming
    each output, which are lists, the paper and the score's range."""
    from pathlib import Path

    from diffusion_sentinel.nodes.diversity import comfy_nodes as dn

    docs = Path(__file__).resolve().parents[2] / "web" / "docs"
    for cls in (*nodes.NODES, *dn.NODES):
        schema = cls.GET_SCHEMA()
        text = (docs / f"{schema.node_id}.md").read_text()
        assert text.startswith(f"# {schema.display_name}\n"), schema.node_id
        for o in schema.outputs:
            assert f"`{o.display_name or o.id}`" in text, (schema.node_id, o.id)
        lists = [o.display_name or o.id for o in schema.outputs if o.is_output_list]
        assert not lists or "**list" in text, schema.node_id
        assert "arXiv" in text or "TMLR" in text, schema.node_id
    for name in ("SentinelDiffSim", "SentinelDiffSimMatrix", "SentinelStyleSimilarityGate"):
        assert "[-1, 1], higher = more similar" in (docs / f"{name}.md").read_text()
    for name in ("SentinelBatchDiversity", "SentinelSelectDiverseSubset"):
        assert "higher = more diverse" in (docs / f"{name}.md").read_text()
