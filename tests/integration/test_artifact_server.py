"""The artifact nodes in a real ComfyUI server: the classifier combos list models/artifact_classifiers with a
'none' entry, the example workflows produce the expected outputs, and a dataset collected by one workflow trains a
classifier in another that a third one then uses."""

from __future__ import annotations

import json

import pytest
from _artifact import synthetic_series
from _server import load_api_workflow
from _workflows import api_path

TINY = "sd15-tiny-random.safetensors"
pytestmark = pytest.mark.server
DATASET = "pytest_server_dataset"


@pytest.fixture(scope="module")
def srv(server):
    """The shared server, with a small classifier for 6-value latent_cosine series in models/artifact_classifiers."""
    from diffusion_sentinel.classifiers import ArtifactModel, TrainedFor, make_model

    X, y = synthetic_series(60, length=6, seed=0)
    folder = server.models / "artifact_classifiers"
    folder.mkdir(parents=True, exist_ok=True)
    ArtifactModel(make_model("default").fit(X, y), TrainedFor("latent_cosine", True, 6)).save(
        folder / "synthetic_lc6.safetensors")
    return server


def node_id(wf: dict, class_type: str) -> str:
    ids = [k for k, n in wf.items() if n.get("class_type") == class_type]
    assert len(ids) == 1, f"{class_type}: {ids}"
    return ids[0]


def _run(srv, name, edit=None):
    wf = load_api_workflow(api_path(name), TINY)
    wf[node_id(wf, "EmptyLatentImage")]["inputs"].update(width=64, height=64)  # 8x8 latents: much faster on a CPU
    for n in wf.values():
        if "steps" in n.get("inputs", {}) and n["class_type"] != "EmptyLatentImage":
            n["inputs"]["steps"] = 6
    if edit:
        edit(wf)
    return wf, srv.run_prompt(wf)["outputs"]


def panel_of(out: dict, nid: str) -> dict:
    (p,) = out[nid]["sentinel_result"]
    return p


def test_combos_list_the_model_folder_with_none(srv):
    info = srv.get("/object_info/SentinelArtifactPredict")["SentinelArtifactPredict"]
    options = info["input"]["required"]["classifier"]
    opts = options[1]["options"] if len(options) > 1 and "options" in options[1] else options[0]
    assert opts == ["none", "synthetic_lc6.safetensors"]
    assert "Diffusion Sentinel: the" not in srv.log_text(), srv.log_tail()


def test_predict_and_filter_example(srv):
    wf, out = _run(srv, "artifact_predict_keep_best")
    p = panel_of(out, node_id(wf, "SentinelFilterBatchByArtifact"))
    assert p["summary"].startswith("kept 1 of 2: [") and len(p["highlight"]) == 1
    assert len(out[node_id(wf, "SaveImage")]["images"]) == 1
    pred = panel_of(out, node_id(wf, "SentinelArtifactPredict"))
    assert [c["key"] for c in pred["columns"]][:2] == ["item", "p_artifact"] and len(pred["rows"]) == 2


def test_auto_reject_example_with_a_classifier_file(srv):
    wf, out = _run(srv, "artifact_auto_reject_sampler")
    ar = node_id(wf, "SentinelKSamplerAutoReject")
    assert len(panel_of(out, ar)["rows"]) == 2 and len(out[node_id(wf, "SaveImage")]["images"]) == 2

    def use_file(wf):
        wf[node_id(wf, "SentinelKSamplerAutoReject")]["inputs"].update(
            classifier="synthetic_lc6.safetensors", tau=0.0, max_tries=2, seed=99)

    wf, out = _run(srv, "artifact_auto_reject_sampler", use_file)
    p = panel_of(out, ar)
    assert "24 image model evaluations" in p["summary"]  # 2 tries x 2 items x 6 steps
    assert [r[1] for r in p["rows"]] in ([99, 99], [99, 100], [100, 99], [100, 100])


def test_collect_train_and_use(srv):
    from diffusion_sentinel.classifiers.data import folder_rows

    for seed, labels in ((7, "natural,artifact"), (8, "artifact,natural"), (9, "natural,artifact")):
        def edit(wf, seed=seed, labels=labels):
            for n in wf.values():
                if "seed" in n.get("inputs", {}):
                    n["inputs"]["seed"] = seed
            save = wf[node_id(wf, "SentinelSaveLabelledTrajectory")]["inputs"]
            save["labels"] = labels
            save["dataset"] = DATASET  # its own folder: the generic example test fills the default
        wf, out = _run(srv, "artifact_collect_training_data", edit)
    assert "6 samples in the dataset" in panel_of(out, node_id(wf, "SentinelSaveLabelledTrajectory"))["summary"]
    folder = srv.base / "output" / "artifact_datasets" / DATASET
    rows = folder_rows(folder)
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"latent_cosine"}
    assert len(list((folder / "samples").glob("*.json"))) == 6 and not (folder / "index.csv").exists()
    assert all((folder / r["trajectory"]).is_file() and (folder / r["image"]).is_file() for r in rows)
    train = {"1": {"class_type": "SentinelTrainArtifactClassifier",
                   "inputs": {"dataset": DATASET, "recipe": "default", "model_name": "from_server",
                              "prefix_steps": 0, "cv_folds": 3, "cv_seeds": 1, "overwrite": True,
                              "csv_metric": "dreamsim"}}}
    out = srv.run_prompt(train)["outputs"]
    assert panel_of(out, "1")["rows"][0][0] == "from_server.safetensors"
    assert (srv.base / "models" / "artifact_classifiers" / "from_server.safetensors").is_file()
    opts = srv.get("/object_info/SentinelArtifactPredict")["SentinelArtifactPredict"]["input"]["required"]
    assert "from_server.safetensors" in json.dumps(opts["classifier"])

    def use(wf):
        wf[node_id(wf, "SentinelArtifactPredict")]["inputs"]["classifier"] = "from_server.safetensors"

    wf, out = _run(srv, "artifact_predict_keep_best", use)
    assert panel_of(out, node_id(wf, "SentinelFilterBatchByArtifact"))["summary"].startswith("kept 1 of 2")
