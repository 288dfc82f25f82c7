"""The artifact nodes in a real ComfyUI server: the classifier combos list models/artifact_classifiers with a
'none' entry, the example workflows produce the expected outputs, and a dataset collected by one workflow trains a
classifier in another that a third one then uses."""

from __future__ import annotations

import csv
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


def _run(srv, name, edit=None):
    wf = load_api_workflow(api_path(name), TINY)
    wf["5"]["inputs"].update(width=64, height=64)  # 8x8 latents: the same graph, much faster on a CPU
    wf["3"]["inputs"]["steps"] = 6
    if edit:
        edit(wf)
    return srv.run_prompt(wf)["outputs"]


def test_combos_list_the_model_folder_with_none(srv):
    info = srv.get("/object_info/SentinelArtifactPredict")["SentinelArtifactPredict"]
    options = info["input"]["required"]["classifier"]
    opts = options[1]["options"] if len(options) > 1 and "options" in options[1] else options[0]
    assert opts == ["none", "synthetic_lc6.safetensors"]
    assert "Diffusion Sentinel: the" not in srv.log_text(), srv.log_tail()


def test_predict_and_filter_example(srv):
    out = _run(srv, "artifact_predict_keep_best")
    text = out["12"]["text"][0]
    assert text.startswith("kept 1 of 2: [") and len(out["9"]["images"]) == 1


def test_auto_reject_example_with_a_classifier_file(srv):
    out = _run(srv, "artifact_auto_reject_sampler")
    assert "seeds [" in out["3"]["text"][0] and len(out["9"]["images"]) == 2

    def use_file(wf):
        wf["3"]["inputs"].update(classifier="synthetic_lc6.safetensors", tau=0.0, max_tries=2, seed=99)

    text = _run(srv, "artifact_auto_reject_sampler", use_file)["3"]["text"][0]
    assert "model evaluations 24 " in text  # 2 tries x 2 items x 6 steps


def test_collect_train_and_use(srv):
    for seed, labels in ((7, "natural,artifact"), (8, "artifact,natural"), (9, "natural,artifact")):
        def edit(wf, seed=seed, labels=labels):
            wf["3"]["inputs"]["seed"] = seed
            wf["10"]["inputs"]["labels"] = labels
            wf["10"]["inputs"]["dataset"] = DATASET  # its own folder: the generic example test fills the default
        out = _run(srv, "artifact_collect_training_data", edit)
    assert "6 samples" in out["10"]["text"][0]
    folder = srv.base / "output" / "artifact_datasets" / DATASET
    rows = list(csv.DictReader(open(folder / "index.csv")))
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"latent_cosine"}
    assert all((folder / r["trajectory"]).is_file() and (folder / r["image"]).is_file() for r in rows)
    train = {"1": {"class_type": "SentinelTrainArtifactClassifier",
                   "inputs": {"dataset": DATASET, "recipe": "default", "model_name": "from_server",
                              "prefix_steps": 0, "cv_folds": 3, "cv_seeds": 1, "overwrite": True,
                              "csv_metric": "dreamsim"}}}
    out = srv.run_prompt(train)["outputs"]
    assert "from_server" in out["1"]["text"][0]
    assert (srv.base / "models" / "artifact_classifiers" / "from_server.safetensors").is_file()
    opts = srv.get("/object_info/SentinelArtifactPredict")["SentinelArtifactPredict"]["input"]["required"]
    assert "from_server.safetensors" in json.dumps(opts["classifier"])

    def use(wf):
        wf["11"]["inputs"]["classifier"] = "from_server.safetensors"

    out = _run(srv, "artifact_predict_keep_best", use)
    assert out["12"]["text"][0].startswith("kept 1 of 2")
