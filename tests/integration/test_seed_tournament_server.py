"""The Seed Tournament example (example_workflows/api/artifact_seed_tournament.json) in a real ComfyUI server: it
runs as saved (smaller latents and fewer steps), the node shows its panel, the kept image is saved, the rejected
previews are shown, and the counts in the panel follow the cost model."""

from __future__ import annotations

from pathlib import Path

import pytest
from _server import load_api_workflow

TINY = "sd15-tiny-random.safetensors"
EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflows" / "api" / "artifact_seed_tournament.json"
pytestmark = pytest.mark.server


def node_id(wf: dict, class_type: str) -> str:
    ids = [k for k, n in wf.items() if n.get("class_type") == class_type]
    assert len(ids) == 1, f"{class_type}: {ids}"
    return ids[0]


def test_seed_tournament_example_runs(server):
    wf = load_api_workflow(EXAMPLE, TINY)
    wf[node_id(wf, "EmptyLatentImage")]["inputs"].update(width=64, height=64)  # 8x8 latents: fast on a CPU
    t = node_id(wf, "SentinelSeedTournament")
    wf[t]["inputs"]["steps"] = 10  # checks at 0.1, 0.3, 0.5 -> steps 1, 3, 5
    out = server.run_prompt(wf)["outputs"]
    (p,) = out[t]["sentinel_result"]
    assert p["title"] == "Seed Tournament" and len(p["rows"]) == 8 and p["highlight"] == [0]
    # 8 for 1 step, 4 for 2, 2 for 2, 1 for 5: 8 + 8 + 4 + 5 = 25 of 80
    assert "kept 1 of 8" in p["summary"] and "25 of 80 model evaluations" in p["summary"]
    assert sorted(r[1] for r in p["rows"]) == list(range(7, 15))
    assert len(out[node_id(wf, "SaveImage")]["images"]) == 1
    assert len(out[node_id(wf, "PreviewImage")]["images"]) == 7
