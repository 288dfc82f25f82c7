"""Label Artifacts (click) in the real editor (headless Chromium): queue the workflow from the page, the batch
appears as thumbnails in the node, click two of them, press 'Save labels & continue'; the dataset holds exactly
those labels and the node's outputs say so. For the pinned frontend (classic canvas) and 1.58.1 with Nodes 2.0.
Screenshots go to pytest's tmp dir (and SENTINEL_SCREENSHOTS, when set, for the README)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from _label_browser import Browser, available
from _prereq import frontend_new, require_frontend_new
from _server import ComfyServer, find_checkpoint, load_api_workflow
from _workflows import api_to_ui

EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflows" / "api" / "artifact_label_by_clicking.json"
TINY = "sd15-tiny-random.safetensors"
# the newest frontend: SENTINEL_FRONTEND_NEW (what CI exports; tests/_prereq.py), else the usual local unpack folder
FE_158 = Path(frontend_new() or "/tmp/fe/1.58.1/comfyui_frontend_package/static")
pytestmark = pytest.mark.server


def _post_setting(srv, key, value):
    status, _ = srv.post(f"/settings/{key}", value)
    assert status == 200, f"setting {key}: HTTP {status}"


@pytest.fixture(scope="module", params=["pinned", "1.58.1-nodes2"])
def editor(request, tmp_path_factory):
    """(server, frontend name, Nodes 2.0 on?) with the tiny checkpoint."""
    if available():
        pytest.skip(available())
    ckpt = find_checkpoint(TINY)
    if ckpt is None:
        pytest.skip(f"{TINY} not found")
    if request.param == "pinned":
        srv, vue = request.getfixturevalue("server"), False
    else:
        if not (FE_158 / "index.html").is_file():
            require_frontend_new()  # fails under SENTINEL_REQUIRE_INTEGRATION=1, else skips with what to do
        base = tmp_path_factory.mktemp("comfy-fe158")
        yaml = base / "extra_model_paths.yaml"
        yaml.write_text(f"sentinel_tests:\n    base_path: {Path(ckpt).parent.parent}\n    checkpoints: checkpoints\n")
        srv = ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml),
                          extra_args=["--front-end-root", str(FE_158)]).start()
        request.addfinalizer(srv.stop)
        vue = True
    _post_setting(srv, "Comfy.VueNodes.Enabled", vue)
    _post_setting(srv, "Comfy.TutorialCompleted", True)
    return srv, request.param, vue


def ui_workflow(srv, dataset: str) -> dict:
    """The example workflow at test size (6 images), waiting for clicks, Preview Any on the outputs, laid out so the Label
    node sits at the top left of the view."""
    api = load_api_workflow(EXAMPLE, TINY)
    api["5"]["inputs"].update(width=64, height=64, batch_size=6)
    api["3"]["inputs"].update(steps=6, seed=21)
    api["10"]["inputs"].update(labels="", dataset=dataset, timeout=600)
    for nid, slot in (("21", 1), ("23", 3), ("24", 4), ("26", 6)):
        api[nid] = {"class_type": "PreviewAny", "inputs": {"source": ["10", slot]}}
    ui = api_to_ui(api, srv.get("/object_info", timeout=60), title="label-browser-test")
    y = 20
    for n in ui["nodes"]:
        if n["id"] == 10:
            n["pos"], n["size"] = [80, 130], [780, 560]  # the 6 thumbnails in one row
        else:
            n["pos"] = [940, y]
            y += n["size"][1] + 40
    ui["extra"]["ds"] = {"scale": 1.0, "offset": [0, 0]}
    return ui


def wait_done(srv, before: set, timeout=300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        hist = srv.get("/history")
        new = [k for k in hist if k not in before and hist[k].get("status", {}).get("completed") is not None]
        if new:
            return hist[new[0]]
        time.sleep(0.5)
    raise TimeoutError(f"the queued workflow did not finish:\n{srv.log_tail()}")


@contextlib.contextmanager
def cancel_waiting_on_exit(srv):
    """A failed test must not leave the node waiting: the shared server's queue would stall until its timeout."""
    try:
        yield
    finally:
        for req in srv.get("/sentinel/label/pending").get("pending", []):
            srv.post("/sentinel/label/answer", {"token": req["token"], "action": "cancel"})


def keep_screenshot(path: Path, name: str) -> None:
    dest = os.environ.get("SENTINEL_SCREENSHOTS")
    if dest:
        os.makedirs(dest, exist_ok=True)
        shutil.copy(path, os.path.join(dest, name))


def test_click_two_thumbnails_and_save(editor, tmp_path):
    srv, fe, vue = editor
    dataset = f"clicked_{fe.replace('.', '_').replace('-', '_')}"
    wf = ui_workflow(srv, dataset)
    before = set(srv.get("/history"))
    with Browser(window="1600x1200") as b, cancel_waiting_on_exit(srv):
        info = b.open_comfy(srv.url)
        assert info["vue"] is vue, info
        b.js_async("const done = arguments[arguments.length - 1];"
                   "app.loadGraphData(arguments[0]).then(() => done(true), e => done(String(e)));", wf)
        assert b.wait_js("return !!document.querySelector('.sentinel-label')", timeout=60)
        b.js_async("const done = arguments[arguments.length - 1];"
                   "app.queuePrompt(0, 1).then(() => done(true), e => done(String(e)));")
        b.wait_js("return document.querySelectorAll('.sentinel-label .sl-tile').length === 6 && "
                  "[...document.querySelectorAll('.sentinel-label .sl-tile img')].every(i => i.complete && "
                  "i.naturalWidth > 0)", timeout=300)
        state = b.js("const n = app.graph.getNodeById(10); const w = n._sentinelLabel;"
                     "return {labels: w.labels, marked: w.req.marked, p: w.req.p, status: w.statusEl.textContent,"
                     " buttons: [...w.bar.querySelectorAll('button')].map(x => x.textContent + (x.disabled ? '-' : '+'))}")
        assert state["labels"] == [0] * 6 and len(state["p"]) == 6 and len(state["marked"]) == 4
        assert state["status"].startswith("Waiting for your labels (") and "left)" in state["status"]
        assert state["buttons"][:3] == ["Save labels & continue+", "Skip (save nothing)+", "Cancel run+"]
        b.click('.sentinel-label .sl-tile[data-index="1"]')
        b.click('.sentinel-label .sl-tile[data-index="3"]')
        b.click('.sentinel-label .sl-tile[data-index="4"] .sl-btn-out')  # leave image 4 out
        assert b.js("return app.graph.getNodeById(10)._sentinelLabel.labels") == [0, 1, 0, 1, None, 0]
        assert b.js("return [...document.querySelectorAll('.sentinel-label .sl-tile.leftout')]"
                    ".map(t => +t.dataset.index)") == [4]
        assert b.js("return [...document.querySelectorAll('.sentinel-label .sl-tile.artifact')]"
                    ".map(t => +t.dataset.index)") == [1, 3]
        shot = b.screenshot(tmp_path / f"label-{fe}-waiting.png")
        keep_screenshot(Path(shot), f"label-{fe}-waiting.png")
        b.click(".sentinel-label .sl-bar button.primary")
        entry = wait_done(srv, before)
        assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
        b.wait_js("return app.graph.getNodeById(10)._sentinelLabel.statusEl.textContent.startsWith('Saved 5')",
                  timeout=60)
        final = b.js("return {status: app.graph.getNodeById(10)._sentinelLabel.statusEl.textContent,"
                     " tiles: document.querySelectorAll('.sentinel-label .sl-tile.readonly').length,"
                     " artifact: [...document.querySelectorAll('.sentinel-label .sl-tile.artifact')].map(t => +t.dataset.index)}")
        shot = b.screenshot(tmp_path / f"label-{fe}-saved.png")
        keep_screenshot(Path(shot), f"label-{fe}-saved.png")
        errors = [e for e in b.console_errors() if "sentinel" in e.lower() or "sentinel_label" in e]
    assert final["tiles"] == 6 and final["artifact"] == [1, 3]
    assert final["status"] == f"Saved 5 (2 artifact, 3 natural) to artifact_datasets/{dataset}: 5 in the dataset"
    assert errors == []
    out = entry["outputs"]
    assert out["21"]["text"] == ["False", "True", "False", "True", "False", "False"]
    assert (out["23"]["text"], out["24"]["text"], out["26"]["text"]) == (["2"], ["3"], ["5"])
    assert out["10"]["sentinel_label"][0]["labels"] == [0, 1, 0, 1, None, 0]
    folder = srv.base / "output" / "artifact_datasets" / dataset
    rows = [json.loads((folder / "samples" / f).read_text()) for f in sorted(os.listdir(folder / "samples"))]
    assert [r["naturalness"] for r in rows] == ["natural", "unnatural", "natural", "unnatural", "natural"]
    assert [r["batch_item"] for r in rows] == [0, 1, 2, 3, 5]
