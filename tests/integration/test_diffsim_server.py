"""DiffSim-C through a real ComfyUI server: the example workflow with CLIPVisionLoader and the IP-Adapter loader,
fed generated model files (random weights, the real formats) written into the server's models folders:
a ViT-L/14-shaped CLIP vision model (the smallest layout CLIPVisionLoader recognises) and an IP-Adapter Plus
sized for the tiny checkpoint's U-Net. The DiffSim-S example runs in test_server.py (checkpoint only)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import _diffsim as D
import pytest
import torch
from _server import ComfyServer, find_checkpoint, load_api_workflow

TINY = "sd15-tiny-random.safetensors"
EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflows" / "diffsim_c_ipadapter_api.json"
CLIP_VISION = "vitl-random-test.safetensors"
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


def write_vitl_clip_vision(path: Path) -> None:
    """Random weights in the layout comfy.clip_vision detects as ViT-L/14 (24 layers, width 1024), fp16."""
    import comfy.clip_model
    import comfy.ops
    from safetensors.torch import save_file

    cfg = json.loads((Path(os.environ["COMFYUI_PATH"]) / "comfy" / "clip_vision_config_vitl.json").read_text())
    meta = comfy.clip_model.CLIPVisionModelProjection(cfg, torch.float16, "meta", comfy.ops.manual_cast)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, p in meta.state_dict().items():
        if "norm" in k and k.endswith("weight"):
            sd[k] = torch.ones(p.shape, dtype=torch.float16)
        elif k.endswith("bias"):
            sd[k] = torch.zeros(p.shape, dtype=torch.float16)
        else:
            sd[k] = (torch.randn(p.shape, generator=g) * 0.02).to(torch.float16)
    save_file(sd, str(path))


@pytest.fixture(scope="module")
def server(comfy, tmp_path_factory):
    ckpt = find_checkpoint(TINY)
    if ckpt is None:
        pytest.skip(f"{TINY} not found: build it with ../shared/tools/comfyui/setup_comfyui.sh --models tiny")
    base = tmp_path_factory.mktemp("comfy-diffsim")
    (base / "models" / "clip_vision").mkdir(parents=True)
    (base / "models" / "ipadapter").mkdir(parents=True)
    cv_path = base / "models" / "clip_vision" / CLIP_VISION
    write_vitl_clip_vision(cv_path)
    sd = D.ip_adapter_state_dict(dim=768, depth=1, heads=12, num_queries=16, embedding_dim=1024, output_dim=768,
                                 layer_widths=checkpoint_cross_widths(ckpt), seed=1)
    D.save_ip_adapter(base / "models" / "ipadapter" / IPADAPTER, sd)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"sentinel_tests:\n    base_path: {Path(ckpt).parent.parent}\n    checkpoints: checkpoints\n")
    srv = ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml)).start()
    yield srv
    srv.stop()
    cv_path.unlink(missing_ok=True)  # 600 MB: do not leave it in pytest's kept temp folders


def test_loader_lists_the_ipadapter_folder(server):
    info = server.get("/object_info/SentinelDiffSimIPAdapterLoader", timeout=60)["SentinelDiffSimIPAdapterLoader"]
    spec = info["input"]["required"]["ipadapter_file"]
    options = spec[1].get("options", []) if spec[0] == "COMBO" else spec[0]  # V3 combos: ["COMBO", {"options"}]
    assert IPADAPTER in options, spec


def test_diffsim_c_example_workflow_runs(server):
    wf = load_api_workflow(EXAMPLE, TINY)
    wf["20"]["inputs"]["clip_name"] = CLIP_VISION
    wf["21"]["inputs"]["ipadapter_file"] = IPADAPTER
    wf["3"]["inputs"]["seed"] += os.getpid() % 1000  # a fresh run, never answered from ComfyUI's cache
    entry = server.run_prompt(wf, timeout=900)
    text = entry["outputs"]["13"]["text"][0]
    scores = [float(x) for x in re.findall(r"a\[0\] vs b\[\d\]: (-?\d+\.\d+)", text)]
    assert len(scores) == 2 and all(-1 <= s <= 1 for s in scores), text
    assert "DiffSim-C U_0 = ('output', 1, 0), t=750 (noise 251" in text, text
