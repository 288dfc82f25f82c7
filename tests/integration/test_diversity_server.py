"""The diversity example workflow in a real ComfyUI server, with a CLIP vision file that ComfyUI's own
CLIPVisionLoader detects.

The loader chooses the model config from key names (ViT-L/H/bigG, SigLIP, DINOv2 layouts), so a detectable file must
have the full shapes of one of them: here a random-weight CLIP ViT-L/14 vision model (304 M parameters, 610 MB in
fp16), written once per test session into the shared server's models folder (fixture vit_l_clip_vision). On two busy CPU cores the module takes under a
minute (writing the file ~8 s, CLIP ViT-L encodes a few seconds per image on CPU); it is marked slow (deselect with
-m "not slow").
"""

from __future__ import annotations

import os

import pytest
from _server import load_api_workflow
from _workflows import api_path

TINY = "sd15-tiny-random.safetensors"
WORKFLOW = api_path("diversity_select_diverse_subset")
pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def clip_server(server, vit_l_clip_vision):
    return server, vit_l_clip_vision


def test_generated_clip_vision_file_is_listed(clip_server):
    srv, clip_name = clip_server
    info = srv.get("/object_info/CLIPVisionLoader")
    assert clip_name in info["CLIPVisionLoader"]["input"]["required"]["clip_name"][0]


def test_diversity_example_runs_with_comfyuis_clip_vision_loader(clip_server):
    srv, clip_name = clip_server
    wf = load_api_workflow(WORKFLOW, TINY)
    # the example is 8 images at 512 px, 20 steps; shrink it so CLIP ViT-L on a CPU stays affordable
    for node in wf.values():
        inp = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inp.update(width=64, height=64, batch_size=3)
        if node["class_type"] == "KSampler":
            inp.update(steps=3, seed=inp["seed"] + 1000 + os.getpid() % 1000)
        if node["class_type"] == "SentinelSelectDiverseSubset":
            inp["k"] = 2
        if node["class_type"] == "CLIPVisionLoader":
            inp["clip_name"] = clip_name
    entry = srv.run_prompt(wf, timeout=900)
    outputs = entry["outputs"]
    div_id = next(k for k, n in wf.items() if n["class_type"] == "SentinelBatchDiversity")
    sub_id = next(k for k, n in wf.items() if n["class_type"] == "SentinelSelectDiverseSubset")
    save_id = next(k for k, n in wf.items() if n["class_type"] == "SaveImage")
    panel = outputs[div_id]["sentinel_result"][0]
    d = panel["data"]
    assert d["n"] == 3 and d["dim"] == 768 and len(d["conformity"]) == 3
    assert d["encoder"].startswith("CLIP ViT-L/14 224px image_embeds[768] crop=center #")
    assert 1.0 <= d["vendi"] <= 3.0 + 1e-9
    assert [r[1] for r in panel["rows"]] == d["conformity"] and f"Vendi {d['vendi']:.3f}" in panel["summary"]
    assert outputs[div_id]["text"][0].startswith("Batch Diversity: Vendi")
    s = outputs[sub_id]["sentinel_result"][0]["data"]
    assert len(s["indices"]) == 2 and s["encoder"] == d["encoder"]
    assert s["vendi_before"] == pytest.approx(d["vendi"], rel=1e-9)
    assert len(outputs[save_id]["images"]) == 2
    shown = [outputs[k]["text"][0] for k, n in wf.items() if n["class_type"] == "PreviewAny"]
    assert any(t.startswith("encoder: CLIP ViT-L/14") for t in shown)  # the report
    assert ",".join(map(str, s["indices"])) in shown  # the chosen indices
