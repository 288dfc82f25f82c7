"""The memorization nodes in a real ComfyUI server with the tiny random SD1.5 checkpoint (real CLIP, real VAE,
inference-tensor weights): the example workflow, mitigation, block (nothing downstream runs), and a calibration
saved by one prompt and selected by the guard in the next."""

from __future__ import annotations

import copy
import json
import os

import pytest
from _server import load_api_workflow
from _workflows import api_path

TINY = "sd15-tiny-random.safetensors"
EXAMPLE = api_path("memorization_guard_report")
pytestmark = pytest.mark.server


def _example(**guard):
    wf = load_api_workflow(EXAMPLE, TINY)
    wf["8"]["inputs"].update(guard)
    wf["3"]["inputs"]["seed"] += os.getpid() % 1000  # a fresh run every time (no cache answers)
    return wf


def _text(outputs, nid):
    return "".join(outputs[nid]["text"])


def _panel(outputs, nid, i=0):
    return outputs[nid]["sentinel_result"][i]


def test_example_report_runs_every_node(server):
    out = server.run_prompt(_example(width=128, height=128))["outputs"]
    guard = _panel(out, "8")
    assert guard["title"] == "Memorization Guard" and len(guard["rows"]) == 1 and "action report" in guard["summary"]
    assert _text(out, "8").startswith("Memorization Guard: ")
    assert _panel(out, "10")["title"] == "Wen Memorization Score" and "Wen >" in _panel(out, "10")["summary"]
    assert _text(out, "12").startswith("Volume Growth Rate: directions, jvp")
    assert out["11"]["images"]


def test_mitigation_in_the_server_with_inference_tensor_weights(server):
    wf = _example(action="mitigate", threshold=-1000.0, mitigation_steps=2, width=128, height=128)
    out = server.run_prompt(wf)["outputs"]
    text = _text(out, "8")
    assert "mitigate: 2 AdamW step(s)" in text and "NOT all under the threshold" in text
    assert [c["key"] for c in _panel(out, "8")["columns"]][-1] == "score_after"
    assert out["11"]["images"]  # the sampler ran with the mitigated conditioning


def test_block_stops_everything_downstream_of_the_conditioning(server):
    wf = _example(action="block", threshold=-1000.0, width=128, height=128)
    entry = server.run_prompt(wf)
    out = entry["outputs"]
    guard = _panel(out, "8")
    assert guard["rows"][0][5] is True and guard["highlight"] == [0] and "blocked" in guard["summary"]
    for nid in ("10", "11", "12"):  # Wen (after the sampler), SaveImage, Volume Growth Rate: all blocked
        assert nid not in out, f"node {nid} ran although the guard blocked the prompt"


def test_calibration_saved_then_selected_by_the_guard(server):
    wf = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY}},
        "20": {"class_type": "SentinelCalibrateMemorizationGuard", "inputs": {
            "model": ["4", 0], "clip": ["4", 1],
            "memorized_prompts": "Mothers influence on her young hippo\nThe No Limits Business Woman Podcast\n"
                                 "Living in the Light with Ann Graham Lotz",
            "normal_prompts": "a purple cat riding a bicycle\nthree lemons in watercolor\na castle made of jelly",
            "name": f"tiny-{os.getpid()}", "negative_prompt": "", "threshold_rule": "logistic", "target_fpr": 0.01,
            "seed": 51, "n_samples": 1, "width": 64, "height": 64, "prompts_per_batch": 4}},
    }
    out = server.run_prompt(wf)["outputs"]
    text = _text(out, "20")
    assert "AUC" in text and "Mothers influence" in text
    assert f"wrote tiny-{os.getpid()}.json" in _panel(out, "20")["summary"]
    name = f"tiny-{os.getpid()}.json"
    saved = server.models / "memorization_calibrations" / name
    assert saved.is_file()
    cal = json.loads(saved.read_text())
    assert cal["model"]["family"] == "SD15" and cal["settings"]["width"] == 64
    info = server.get("/object_info/SentinelMemorizationGuard")["SentinelMemorizationGuard"]
    spec = info["input"]["required"]["calibration"]
    options = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])  # V3 combos: ("COMBO", {options})
    assert name in options
    wf2 = _example(calibration=name, width=64, height=64, threshold=999.0)
    guard = copy.deepcopy(wf2)
    out2 = server.run_prompt(guard)["outputs"]
    text2 = _text(out2, "8")
    assert f"calibration tiny-{os.getpid()}" in text2
    assert f"anisotropy > {cal['threshold']:.3f}" in _panel(out2, "8")["summary"]


def test_a_node_on_a_batch_level_output_runs_once_and_on_a_list_output_once_per_item(server):
    """Issue 12: per-item scores are list outputs, so a node connected to one runs once per item; the batch-level
    outputs (Volume max/mean, Guard any_memorized/n_memorized/max_score) are single values: it runs once."""
    wf = _example(width=64, height=64)
    wf["5"]["inputs"]["batch_size"] = 2  # two images into Volume Growth Rate
    wf["30"] = {"class_type": "PreviewAny", "inputs": {"source": ["12", 2]}}  # max
    wf["31"] = {"class_type": "PreviewAny", "inputs": {"source": ["12", 0]}}  # log_growth (list)
    wf["32"] = {"class_type": "PreviewAny", "inputs": {"source": ["8", 9]}}  # any_memorized
    wf["33"] = {"class_type": "PreviewAny", "inputs": {"source": ["8", 10]}}  # n_memorized
    out = server.run_prompt(wf)["outputs"]
    vol = [r[1] for r in _panel(out, "12")["rows"]]
    assert len(vol) == 2
    assert out["30"]["text"] == [str(max(vol))]  # one run
    assert len(out["31"]["text"]) == 2  # one run per image
    flagged = [r[5] for r in _panel(out, "8")["rows"]]
    assert out["32"]["text"] == [str(any(flagged))] and out["33"]["text"] == [str(sum(flagged))]
