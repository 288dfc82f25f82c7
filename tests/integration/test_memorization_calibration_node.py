"""Calibration node in a real ComfyUI (tiny U-Net, a fake CLIP): batched prompt scoring equals single scoring, the
JSON lands in the registered folder, and the guard selects it (weights and threshold)."""

from __future__ import annotations

import json

import pytest
import torch
from _comfy import run_v3
from _memorization import FakeClip, approx, tiny_v_model

MEM = ["an iconic poster of a movie", "the famous painting everybody knows", "a stock photo of a living room"]
NON = ["a purple cat riding a bicycle on mars", "a watercolor of three lemons", "an isometric castle made of jelly",
       "a robot reading a newspaper in the rain"]
SIZE = dict(width=64, height=64)


@pytest.fixture(scope="module")
def mem(comfy):
    from diffusion_sentinel.nodes.memorization import comfy_nodes

    return comfy_nodes


@pytest.fixture
def cal_dir(mem, tmp_path, monkeypatch):
    import folder_paths

    d = tmp_path / "memorization_calibrations"
    d.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, mem.CAL_DIR, ([str(d)], {".json"}))
    return d


def test_batched_prompt_scoring_equals_single_prompt_guards(mem, tiny):
    from diffusion_sentinel.nodes.memorization import detection

    clip = FakeClip()
    settings = detection.DetectorSettings(seed=51, n_samples=1, **SIZE)
    feats, wen = mem.score_prompt_list(tiny, clip, MEM + NON, "", settings, prompts_per_batch=3)
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    for i, p in enumerate(MEM + NON):
        out = run_v3(mem.MemorizationGuard, model=tiny, positive=clip.encode_from_tokens_scheduled(clip.tokenize(p)),
                     negative=neg, seed=51, **SIZE).args
        assert float(feats[i, 0]) == approx(out[5][0], tiny)  # batches of 3 vs 1 prompt: kernel rounding
        assert float(feats[i, 1]) == approx(out[6][0], tiny, strict_rtol=1e-4, strict_atol=1e-5)
        assert float(wen[i]) == approx(out[2][0], tiny)


def test_stack_batches_groups_compatible_prompts(mem):
    a = [[torch.zeros(1, 77, 8), {"pooled_output": torch.zeros(1, 8)}]]
    long = [[torch.zeros(1, 154, 8), {"pooled_output": torch.zeros(1, 8)}]]
    two = [[torch.zeros(1, 77, 8), {}], [torch.zeros(1, 77, 8), {}]]
    groups = mem._stack_batches([a, a, a, long, a, two, a], max_batch=2)
    assert [g[0] for g in groups] == [[0, 1], [2], [3], [4], [5], [6]]
    assert groups[0][1][0][0].shape == (2, 77, 8) and groups[0][1][0][1]["pooled_output"].shape == (2, 8)


def test_calibrate_saves_json_and_the_guard_uses_it(mem, tiny, cal_dir):
    clip = FakeClip(shift={p: 2.0 for p in MEM})  # memorized prompts get a stronger embedding
    out = run_v3(
        mem.CalibrateMemorizationGuard, model=tiny, clip=clip, memorized_prompts="\n".join(MEM + ["# a comment", ""]),
        normal_prompts="\n".join(NON), name="tiny test/../model", seed=51, **SIZE)
    auc, tpr, gn, gc, thr, name, report = out.args
    metrics, per_prompt = out.ui["sentinel_result"]
    shown = {r[0]: r[1] for r in metrics["rows"]}
    assert shown["AUC (in-sample)"] == auc and shown["TPR at 1% FPR"] == tpr
    assert shown["threshold on M (logistic)"] == thr and shown["gamma_c"] == gc
    assert name in metrics["summary"] and f"models/memorization_calibrations/{name}" in metrics["notes"][0]
    assert [r[0] for r in per_prompt["rows"]] == ["memorized"] * 3 + ["normal"] * 4
    assert [r[5] for r in per_prompt["rows"]] == MEM + NON
    assert name == "tiny_test_.._model.json" and (cal_dir / name).is_file()  # no path escapes the folder
    d = json.loads((cal_dir / name).read_text())
    assert d["format"] == "diffusion-sentinel/memorization-calibration"
    assert d["model"] == {"family": "SD15", "prediction": "eps", "latent_channels": 4}
    assert d["settings"]["seed"] == 51 and d["metrics"]["n_memorized"] == 3 and d["metrics"]["n_normal"] == 4
    assert 0.0 <= auc <= 1.0 and 0.0 <= tpr <= 1.0 and gn == 1.0
    assert "AUC" in report and "an iconic poster" in report
    assert name in mem.calibration_names()
    # the guard with this calibration: its gamma and threshold, not the node's inputs
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    pos = clip.encode_from_tokens_scheduled(clip.tokenize(MEM[0]))
    out = run_v3(mem.MemorizationGuard, model=tiny, positive=pos, negative=neg, calibration=name, threshold=123.0,
                 weights="cosine only (0, 1)", seed=51, **SIZE).args
    assert out[7] == pytest.approx(thr)
    assert out[1][0] == pytest.approx(gn * out[5][0] + gc * out[6][0], rel=1e-6)
    assert out[3] == [out[1][0] > thr]
    assert "calibration tiny_test_.._model" in out[8]
    # different settings than calibrated: a note in the report
    out2 = run_v3(mem.MemorizationGuard, model=tiny, positive=pos, negative=neg, calibration=name, seed=7, **SIZE).args
    assert "calibrated with seed=51" in out2[8]
    # a calibration for another model type is refused
    with pytest.raises(ValueError, match="was made for"):
        run_v3(mem.MemorizationGuard, model=tiny_v_model(), positive=pos, negative=neg, calibration=name, **SIZE)


def test_calibration_errors(mem, tiny, cal_dir):
    clip = FakeClip()
    with pytest.raises(ValueError, match="at least 2 memorized"):
        run_v3(mem.CalibrateMemorizationGuard, model=tiny, clip=clip, memorized_prompts="one", normal_prompts="a\nb",
               name="x", **SIZE)
    with pytest.raises(ValueError, match="give the calibration a name"):
        run_v3(mem.CalibrateMemorizationGuard, model=tiny, clip=clip, memorized_prompts="a\nb", normal_prompts="c\nd",
               name="../", **SIZE)
    with pytest.raises(ValueError, match="not found"):
        run_v3(mem.MemorizationGuard, model=tiny, positive=clip.encode_from_tokens_scheduled(clip.tokenize("a")),
               negative=clip.encode_from_tokens_scheduled(clip.tokenize("")), calibration="missing.json", **SIZE)
    (cal_dir / "broken.json").write_text("{}")
    with pytest.raises(ValueError, match="broken.json.*not a Diffusion Sentinel"):
        run_v3(mem.MemorizationGuard, model=tiny, positive=clip.encode_from_tokens_scheduled(clip.tokenize("a")),
               negative=clip.encode_from_tokens_scheduled(clip.tokenize("")), calibration="broken.json", **SIZE)
