"""Label Artifacts (click) on a real ComfyUI server over HTTP: the example workflow as saved (typed labels), and
a run that waits for the editor, answered through the pack's routes (refused answers keep it waiting), with the
node's outputs checked through Preview Any nodes."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from _server import find_checkpoint, load_api_workflow

EXAMPLE = Path(__file__).resolve().parents[2] / "example_workflows" / "api" / "artifact_label_by_clicking.json"
TINY = "sd15-tiny-random.safetensors"
pytestmark = pytest.mark.server


def workflow(**label_inputs) -> dict:
    wf = load_api_workflow(EXAMPLE, TINY)
    wf["5"]["inputs"].update(width=64, height=64)
    wf["3"]["inputs"]["steps"] = 6
    wf["10"]["inputs"].update(label_inputs)
    return wf


def with_output_previews(wf: dict) -> dict:
    """Preview Any on is_artifact (1), n_artifact (3), n_natural (4), folder (5), size (6)."""
    for nid, slot in (("21", 1), ("23", 3), ("24", 4), ("25", 5), ("26", 6)):
        wf[nid] = {"class_type": "PreviewAny", "inputs": {"source": ["10", slot]}}
    return wf


def dataset_dir(server, name: str) -> Path:
    return server.base / "output" / "artifact_datasets" / name


def sample_labels(folder: Path) -> list[str]:
    return [json.loads((folder / "samples" / f).read_text())["naturalness"]
            for f in sorted(os.listdir(folder / "samples"))]


def post_raw(server, path: str, data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def wait_history(server, pid: str, timeout: float = 300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        hist = server.get(f"/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            return hist[pid]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {pid} did not finish:\n{server.log_tail()}")


def wait_pending(server, timeout: float = 300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        pending = server.get("/sentinel/label/pending")["pending"]
        if pending:
            return pending[0]
        time.sleep(0.3)
    raise TimeoutError(f"no labelling request appeared:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def ready(server):
    if find_checkpoint(TINY) is None:
        pytest.skip(f"{TINY} not found")
    return server


def test_example_workflow_as_saved_labels_without_waiting(ready):
    srv = ready
    entry = srv.run_prompt(with_output_previews(workflow(dataset="example_typed")), timeout=600)
    out = entry["outputs"]
    (state,) = out["10"]["sentinel_label"]
    assert state["labels"] == [0, 1, 0, None] and state["outcome"] == "save" and state["written"] == 3
    assert out["21"]["text"] == ["False", "True", "False", "False"]
    assert (out["23"]["text"], out["24"]["text"], out["26"]["text"]) == (["1"], ["2"], ["3"])
    folder = dataset_dir(srv, "example_typed")
    assert out["25"]["text"] == [str(folder)]
    assert sample_labels(folder) == ["natural", "unnatural", "natural"]
    assert len(os.listdir(folder / "trajectories")) == 3 and len(os.listdir(folder / "images")) == 3
    assert out["11"]["images"]  # the images went on through the graph


def test_waiting_run_is_answered_through_the_routes(ready):
    srv = ready
    wf = with_output_previews(workflow(labels="", dataset="clicked", timeout=300))
    wf["3"]["inputs"]["seed"] = 11
    status, body = srv.post("/prompt", {"prompt": wf, "client_id": uuid.uuid4().hex})
    assert status == 200, body
    pid = body["prompt_id"]
    req = wait_pending(srv)
    assert req["node"] == "10" and req["batch"] == 4 and req["prompt_id"] == pid and len(req["p"]) == 4
    assert 0 < req["remaining_s"] <= 300 and len(req["marked"]) == 4 and req["dataset"] == "artifact_datasets/clicked"
    with urllib.request.urlopen(srv.url + "/view?filename={filename}&subfolder={subfolder}&type={type}".format(
            **req["images"][2]), timeout=30) as r:
        assert r.status == 200 and r.read(8) == b"\x89PNG\r\n\x1a\n"
    # refused answers: the run keeps waiting and nothing is written
    for data, code, msg in [
        (json.dumps({"token": req["token"], "action": "save", "labels": [1, 0]}).encode(), 400, "2 values for a batch of 4"),
        (json.dumps({"token": "0" * 32, "action": "save", "labels": [1, 0, 0, 1]}).encode(), 404, "no labelling request"),
        (b"{not json", 400, "must be JSON"),
        (json.dumps({"action": "save", "labels": [1, 0, 0, 1]}).encode(), 400, "needs the request's 'token'"),
        (json.dumps({"token": req["token"], "action": "save", "labels": [1, 0, "perhaps", 1]}).encode(), 400,
         r"unknown label 'perhaps' (item 2)"),
    ]:
        st, ans = post_raw(srv, "/sentinel/label/answer", data)
        assert st == code and msg in ans["error"], (st, ans)
    assert srv.get("/sentinel/label/pending")["pending"][0]["token"] == req["token"]
    assert not dataset_dir(srv, "clicked").exists()
    # the answer (also under /api, as the frontend's fetchApi sends it)
    st, ans = post_raw(srv, "/api/sentinel/label/answer",
                       json.dumps({"token": req["token"], "action": "save", "labels": [1, 0, None, 1]}).encode())
    assert st == 200 and ans == {"ok": True, "action": "save", "labels": [1, 0, None, 1]}
    entry = wait_history(srv, pid)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    out = entry["outputs"]
    assert out["21"]["text"] == ["True", "False", "False", "True"] and out["23"]["text"] == ["2"]
    assert out["24"]["text"] == ["1"] and out["26"]["text"] == ["3"]
    assert sample_labels(dataset_dir(srv, "clicked")) == ["unnatural", "natural", "unnatural"]
    assert srv.get("/sentinel/label/pending")["pending"] == []


def test_cancel_from_the_node_interrupts_the_run(ready):
    srv = ready
    wf = workflow(labels="", dataset="cancelled", timeout=300)
    wf["3"]["inputs"]["seed"] = 12
    status, body = srv.post("/prompt", {"prompt": wf, "client_id": uuid.uuid4().hex})
    pid = body["prompt_id"]
    req = wait_pending(srv)
    st, _ = post_raw(srv, "/sentinel/label/answer", json.dumps({"token": req["token"], "action": "cancel"}).encode())
    assert st == 200
    entry = wait_history(srv, pid)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and entry["status"]["status_str"] == "error"
    assert not dataset_dir(srv, "cancelled").exists()


def test_ui_template_is_the_api_twin_waiting_for_clicks(ready, object_info):
    """example_workflows/artifact_label_by_clicking.json = the API twin with no typed labels at user size
    (regenerate: write_label_ui_template in tests/_label.py)."""
    from _label import UI_TEMPLATE, label_ui_template

    committed = json.loads((EXAMPLE.parents[1] / UI_TEMPLATE).read_text())
    assert committed == label_ui_template(object_info)
    label = next(n for n in committed["nodes"] if n["type"] == "SentinelLabelArtifacts")
    assert label["widgets_values"][2] == ""  # classifier, dataset, labels, ...
    assert json.loads(EXAMPLE.read_text())["10"]["inputs"]["labels"] == "0,1,0,x"
