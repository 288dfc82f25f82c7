"""DiffSim-C through a real ComfyUI server: the example workflow with CLIPVisionLoader and the IP-Adapter loader,
fed generated model files (random weights, the real formats) written into the server's models folders:
a ViT-L/14-shaped CLIP vision model (the smallest layout CLIPVisionLoader recognises; the shared
fixture vit_l_clip_vision) and an IP-Adapter Plus
sized for the tiny checkpoint's U-Net. The DiffSim-S example runs in test_server.py (checkpoint only)."""

from __future__ import annotations

import os
import re

import _diffsim as D
import pytest
from _server import find_checkpoint, load_api_workflow
from _workflows import api_path

TINY = "sd15-tiny-random.safetensors"
EXAMPLE = api_path("diffsim_c_ipadapter_similarity")
IPADAPTER = "ip-adapter-plus-tiny-test.safetensors"
pytestmark = [pytest.mark.server, pytest.mark.slow]


def checkpoint_cross_widths(path: str) -> list[int]:
    """Widths of the checkpoint U-Net's cross-attention layers in IP-Adapter order (input, output, middle)."""
    from safetensors import safe_open

    order = {"input_blocks": 0, "output_blocks": 1, "middle_block": 2}
    found = []
    with safe_open(path, "pt") as f:
        for k in f.keys():
            m = re.fullmatch(r"model\.diffusion_model\.(input_blocks|output_blocks|middle_block)\.?(\d*)\.\d+\."
                             r"transformer_blocks\.(\d+)\.attn2\.to_k\.weight", k)
            if m:
                found.append(((order[m.group(1)], int(m.group(2) or 0), int(m.group(3))), f.get_slice(k).get_shape()[0]))
    return [w for _, w in sorted(found)]


@pytest.fixture(scope="module")
def ipadapter(server):
    """An IP-Adapter Plus file sized for the tiny checkpoint's U-Net, in the shared server's models/ipadapter."""
    ckpt = find_checkpoint(TINY)
    folder = server.models / "ipadapter"
    folder.mkdir(parents=True, exist_ok=True)
    sd = D.ip_adapter_state_dict(dim=768, depth=1, heads=12, num_queries=16, embedding_dim=1024, output_dim=768,
                                 layer_widths=checkpoint_cross_widths(ckpt), seed=1)
    D.save_ip_adapter(folder / IPADAPTER, sd)
    return IPADAPTER


def test_loader_lists_the_ipadapter_folder(server, ipadapter):
    info = server.get("/object_info/SentinelDiffSimIPAdapterLoader", timeout=60)["SentinelDiffSimIPAdapterLoader"]
    spec = info["input"]["required"]["ipadapter_file"]
    options = spec[1].get("options", []) if spec[0] == "COMBO" else spec[0]  # V3 combos: ["COMBO", {"options"}]
    assert IPADAPTER in options, spec


def test_diffsim_c_example_workflow_runs(server, ipadapter, vit_l_clip_vision):
    wf = load_api_workflow(EXAMPLE, TINY)
    by_type = {}
    for k, n in wf.items():
        by_type.setdefault(n["class_type"], k)
    wf[by_type["CLIPVisionLoader"]]["inputs"]["clip_name"] = vit_l_clip_vision
    wf[by_type["SentinelDiffSimIPAdapterLoader"]]["inputs"]["ipadapter_file"] = IPADAPTER
    sampler = wf[by_type["KSampler"]]["inputs"]
    sampler["seed"] += os.getpid() % 1000  # a fresh run, never answered from ComfyUI's cache
    entry = server.run_prompt(wf, timeout=900)
    ds = next(k for k, n in wf.items() if n["class_type"] == "SentinelDiffSim")
    panel = entry["outputs"][ds]["sentinel_result"][0]
    scores = [row[3] for row in panel["rows"]]
    assert len(scores) == 2 and all(-1 <= s <= 1 for s in scores), panel
    assert [row[1:3] for row in panel["rows"]] == [[0, 0], [0, 1]]
    assert any("DiffSim-C at U_0 = output 1 0, t=750 (noise step 251" in n for n in panel["notes"]), panel["notes"]
