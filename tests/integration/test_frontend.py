"""The real ComfyUI frontend in headless Chromium: our web extension registers, every Sentinel node type is
known to LiteGraph, and every UI-format example workflow loads with all its nodes and links.

Uses ../shared/tools/comfyui/ui_check.py (W3C WebDriver, stdlib) with Debian's chromium + chromium-driver;
skipped when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import _workflows as W
import pytest

# the harness's ui_check.py: $SENTINEL_UI_CHECK, else ../shared next to the checkout (or next to its worktree root)
_CANDIDATES = [Path(os.environ["SENTINEL_UI_CHECK"])] if os.environ.get("SENTINEL_UI_CHECK") else []
_CANDIDATES += [p / "shared" / "tools" / "comfyui" / "ui_check.py" for p in Path(__file__).resolve().parents[2:5]]
UI_CHECK = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
pytestmark = pytest.mark.server


def _ui_examples():
    return [W.ui_path(n) for n in W.template_names()]


@pytest.fixture(scope="module")
def browser_ready():
    if not UI_CHECK.is_file():
        pytest.skip(f"{UI_CHECK} not found")
    if not (shutil.which("chromedriver") and (shutil.which("chromium") or Path("/usr/lib/chromium/chromium").exists())):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")


def _load_expr(path: Path) -> str:
    wf = json.loads(path.read_text())
    n_nodes, n_links = len(wf["nodes"]), len(wf["links"])
    url = f"/api/workflow_templates/diffusion-sentinel/{path.name}"
    # resolves to a string so that a failure says what was found
    return (
        "(async () => { const r = await fetch('" + url + "'); const wf = await r.json();"
        " await app.loadGraphData(wf); const g = app.graph; const nodes = g._nodes || g.nodes;"
        " const missing = nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);"
        " const links = Object.keys(g.links instanceof Map ? Object.fromEntries(g.links) : g.links).length;"
        f" return (nodes.length === {n_nodes} && links === {n_links} && missing.length === 0)"
        f" ? true : 'nodes ' + nodes.length + '/{n_nodes} links ' + links + '/{n_links} missing ' + missing; }})()"
    )


def test_frontend_loads_extension_nodes_and_examples(server, object_info, browser_ready, tmp_path):
    ids = sorted(k for k in object_info if k.startswith("Sentinel"))
    cmd = [sys.executable, str(UI_CHECK), "--url", server.url + "/", "--screenshot", str(tmp_path / "shot.png"),
           "--timeout", "120",
           "--expect-js", "app.extensions.some(e => e.name === 'diffusion_sentinel.results')"]
    for nid in ids:
        cmd += ["--expect-node", nid]
    for p in _ui_examples():
        cmd += ["--expect-js", _load_expr(p)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "MISSING" not in res.stdout
