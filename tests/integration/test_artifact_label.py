"""Label Artifacts (click) in a real ComfyUI (in-process, tiny real U-Net and VAE): typed labels, answers from the
editor through the request broker (save, skip, cancel, ComfyUI's Cancel, timeout), refusals that leave every file as
it was, several writers at once, and the ten-minute loop label -> train -> label with that classifier -> predict."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time

import numpy as np
import pytest
import torch
from _comfy import conditioning, empty_latent, run_node, run_v3

POS, NEG = conditioning(1), conditioning(2)
STEPS = 8
SAMPLER = "euler_ancestral"  # its injected noise makes the tiny model's similarity curves differ per item


@pytest.fixture(scope="module")
def art(comfy):
    from diffusion_sentinel.nodes.artifact import comfy_nodes

    return comfy_nodes


@pytest.fixture(scope="module")
def lab(comfy):
    from diffusion_sentinel.nodes.artifact import label_node

    return label_node


@pytest.fixture()
def sandbox(comfy, tmp_path):
    """Model, output and temp folders in tmp_path (never the checkout's own folders)."""
    import folder_paths

    models = tmp_path / "artifact_classifiers"
    models.mkdir()
    folder_paths.add_model_folder_path("artifact_classifiers", str(models), is_default=True)
    old_out, old_tmp = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    try:
        yield tmp_path
    finally:
        folder_paths.set_output_directory(old_out)
        folder_paths.set_temp_directory(old_tmp)
        paths, exts = folder_paths.folder_names_and_paths["artifact_classifiers"]
        folder_paths.folder_names_and_paths["artifact_classifiers"] = ([p for p in paths if p != str(models)], exts)


@pytest.fixture(scope="module")
def batch(comfy, traj_nodes, tiny, tiny_vae):
    """One batch of 4: (IMAGE, TRAJECTORY, latent_cosine series)."""
    return make_batch(traj_nodes, tiny, tiny_vae, seed=3)


def make_batch(traj_nodes, model, vae, seed=3, size=4):
    latent, traj = run_v3(traj_nodes.KSamplerTrajectory, model=model, seed=seed, steps=STEPS, cfg=5.0,
                          sampler_name=SAMPLER, scheduler="normal", positive=POS, negative=NEG,
                          latent_image=empty_latent(size), denoise=1.0).args[:2]
    (image,) = run_node("VAEDecode", samples=latent, vae=vae)
    series = run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="latent_cosine", noise_frame=True,
                    vae=None).args[0]
    return image, traj, series


def run_label(node_cls, node_id="12", **kwargs):
    """Execute the (asynchronous) Label node as the executor does: class clone with hidden inputs, inference mode."""
    from comfy_api.latest import io

    defaults = dict(classifier="none", dataset="lab", labels="", timeout=60, on_timeout="error", mark_least_sure=2,
                    order="batch order", preselect=False, threshold=0.5)
    with torch.inference_mode():
        c = node_cls.PREPARE_CLASS_CLONE({io.Hidden.unique_id: node_id,
                                          io.Hidden.extra_pnginfo: {"workflow": {"id": "wf-1"}}})
        return asyncio.run(c.EXECUTE_NORMALIZED_ASYNC(**{**defaults, **kwargs}))


def snapshot(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = hashlib.sha1(open(p, "rb").read()).hexdigest()
    return out


class StubServer:
    """Stands in for ComfyUI's PromptServer: records the events, answers the request from another thread (as
    the web server's route does) with ``body`` once it was shown, after ``before`` ran."""

    def __init__(self, body=None, before=None, delay=0.05):
        from aiohttp import web

        self.routes = web.RouteTableDef()
        self.events = []
        self.body, self.before, self.delay = body, before, delay
        self.answered = None

    def send_sync(self, event, data, sid=None):
        self.events.append((event, json.loads(json.dumps(data))))
        if event == "sentinel.label.request" and self.body is not None:
            threading.Thread(target=self._answer, args=(data["token"],), daemon=True).start()

    def _answer(self, token):
        from diffusion_sentinel.nodes.artifact.label_session import BROKER

        time.sleep(self.delay)
        if self.before:
            self.before()
        self.answered = BROKER.answer(token, self.body)

    def kinds(self):
        return [e for e, _ in self.events]


@pytest.fixture()
def stub(monkeypatch, lab):
    def make(**kw):
        srv = StubServer(**kw)
        monkeypatch.setattr(lab.label_server, "server_instance", lambda: srv)
        return srv

    return make


# ------------------------------------------------------------------------------------------------ typed labels
def test_typed_labels_write_the_labelled_items_and_output_them(art, lab, batch, sandbox):
    from diffusion_sentinel.classifiers import read_dataset
    from diffusion_sentinel.nodes.artifact.scoring import score_series
    from PIL import Image

    image, traj, series = batch
    out = run_label(lab.LabelArtifacts, image=image, trajectory=traj, labels="1,0,x,1", dataset="mine/sd15",
                    group="violinist", mark_least_sure=2)
    img_out, is_art, p, n_art, n_nat, folder, size = out.args
    assert img_out is image and is_art == [True, False, False, True] and (n_art, n_nat, size) == (2, 1, 3)
    assert folder == str(sandbox / "output" / "artifact_datasets" / "mine" / "sd15")
    # P is the rule's (classifier none), exactly what Artifact Predict shows for the same series
    expected_p = score_series(series, None, 0.5).p
    assert p == pytest.approx(expected_p)
    assert p == pytest.approx(run_v3(art.ArtifactPredict, series=series, classifier="none", threshold=0.5).args[0])
    # the dataset: items 0, 1, 3 with their series, labels, images and trajectories; item 2 left out
    ds = read_dataset(folder)
    assert ds.n == 3 and ds.y.tolist() == [1, 0, 1] and ds.metric == "latent_cosine" and ds.noise_frame
    np.testing.assert_allclose(ds.X, series.values.numpy()[[0, 1, 3]], rtol=0, atol=1e-12)
    rows = [json.load(open(os.path.join(folder, "samples", f))) for f in sorted(os.listdir(os.path.join(folder, "samples")))]
    assert [r["group"] for r in rows] == ["violinist"] * 3
    assert [r["batch_item"] for r in rows] == [0, 1, 3]  # positions in the batch, not in the written selection
    assert [r["seed"] for r in rows] == [3, 3, 3]  # the batch's seed (one noise draw for the batch)
    for r, i in zip(rows, [0, 1, 3]):
        png = np.asarray(Image.open(os.path.join(folder, r["image"]))).astype(np.float64) / 255
        np.testing.assert_allclose(png, image[i].numpy(), atol=0.5 / 255 + 1e-6)
        assert os.path.isfile(os.path.join(folder, r["trajectory"]))
    # what the node shows: the panel and the widget's state (thumbnails in the temp folder)
    (panel,) = out.ui["sentinel_result"]
    (state,) = out.ui["sentinel_label"]
    assert panel["summary"] == "saved 3 (2 artifact, 1 natural, 1 left out) to artifact_datasets/mine/sd15: 3 samples in the dataset"
    marked = sorted(range(4), key=lambda i: (abs(expected_p[i] - 0.5), i))[:2]
    assert panel["highlight"] == sorted(marked) and state["marked"] == marked
    assert state["labels"] == [1, 0, None, 1] and state["outcome"] == "save" and state["written"] == 3
    for ref in state["images"]:
        assert os.path.isfile(sandbox / "temp" / ref["subfolder"] / ref["filename"]) and ref["type"] == "temp"
    # a second batch into the same folder adds to it
    out2 = run_label(lab.LabelArtifacts, image=image, series=series, labels="0", dataset="mine/sd15",
                     store_images=False)
    assert out2.args[3:] == (0, 4, folder, 7)
    assert len(os.listdir(os.path.join(folder, "images"))) == 3  # store_images off


def test_refusals_leave_every_file_as_it_was(lab, batch, sandbox):
    image, traj, series = batch
    folder = sandbox / "output" / "artifact_datasets" / "lab"
    run_label(lab.LabelArtifacts, image=image, series=series, labels="1,0,0,1")
    before = snapshot(folder)
    assert len(before) == 1 + 4 + 4  # dataset.json, 4 samples, 4 images
    other = series.select([0, 1, 2, 3])
    other.noise_frame = False
    cases = [
        (dict(series=series, labels="1,0,1"), ValueError, "lists 3 values for a batch of 4"),
        (dict(series=series, labels="1,0,maybe,1"), ValueError, r"unknown label 'maybe' \(item 2\)"),
        (dict(series=other, labels="1,0,0,1"), Exception, "noise_frame on, these have it off.*Nothing was written"),
        (dict(series=series.select([0, 1]), labels="1,0"), ValueError, "series has 2 item.*'image' has 4"),
        (dict(trajectory=traj, labels="1,0,0,1", metric="pixel_ssim"), ValueError, "needs: .*VAE"),
        (dict(labels="1,0,0,1"), ValueError, "connect the batch's 'trajectory'"),
        (dict(series=series, labels="1,0,0,1", dataset="../escape"), ValueError, "plain relative name"),
        (dict(series=series, labels="1,0,0,1", classifier="missing.safetensors"), ValueError, "not found"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            run_label(lab.LabelArtifacts, image=image, **kw)
        assert snapshot(folder) == before, kw
    assert not (sandbox / "output" / "artifact_datasets" / "escape").exists()


def test_without_a_server_or_labels_it_says_what_to_do(lab, batch, sandbox):
    image, _, series = batch
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="no ComfyUI server runs here. Type the labels into 'labels'"):
        run_label(lab.LabelArtifacts, image=image, series=series)
    assert time.monotonic() - t0 < 10  # at once, not after the timeout
    assert not (sandbox / "output" / "artifact_datasets" / "lab").exists()


# ------------------------------------------------------------------------------------------ the editor's answer
def test_editor_answer_save_writes_what_was_clicked(lab, batch, sandbox, stub):
    from diffusion_sentinel.classifiers import read_dataset
    from diffusion_sentinel.nodes.artifact.label_session import BROKER

    image, traj, series = batch
    srv = stub(body={"action": "save", "labels": [0, 1, None, 1]})
    out = run_label(lab.LabelArtifacts, image=image, trajectory=traj, node_id="12", order="least sure first",
                    preselect=True, mark_least_sure=3)
    assert srv.kinds() == ["sentinel.label.request", "sentinel.label.done"]
    req, done = srv.events[0][1], srv.events[1][1]
    p = out.args[2]
    assert req["node"] == "12" and req["batch"] == 4 and req["workflow_id"] == "wf-1" and req["p"] == pytest.approx(p)
    assert req["marked"] == sorted(range(4), key=lambda i: (abs(p[i] - 0.5), i))[:3]
    assert req["order"] == sorted(range(4), key=lambda i: (abs(p[i] - 0.5), i)) and req["preselect"] is True
    assert req["remaining_s"] == pytest.approx(60, abs=2) and req["dataset"] == "artifact_datasets/lab"
    for ref in req["images"]:
        assert (sandbox / "temp" / ref["subfolder"] / ref["filename"]).is_file()
    assert done == {"token": req["token"], "node": "12", "display_node": "12", "outcome": "save"}
    assert out.args[1] == [False, True, False, True] and out.args[3:5] == (2, 1) and out.args[6] == 3
    assert read_dataset(out.args[5]).y.tolist() == [0, 1, 1]
    assert BROKER.pending() == [] and BROKER.get(req["token"]) is None


def test_editor_skip_writes_nothing_and_continues(lab, batch, sandbox, stub):
    image, _, series = batch
    srv = stub(body={"action": "skip", "labels": [1, 0, 0, 1]})
    out = run_label(lab.LabelArtifacts, image=image, series=series)
    assert out.args[1] == [True, False, False, True] and out.args[3:5] == (0, 0) and out.args[6] == 0
    assert srv.events[-1][1]["outcome"] == "skip"
    assert not (sandbox / "output" / "artifact_datasets" / "lab").exists()
    assert out.ui["sentinel_result"][0]["summary"] == "skipped: nothing written to artifact_datasets/lab"


def test_cancel_from_the_node_or_comfyui_stops_the_run_and_writes_nothing(lab, batch, sandbox, stub):
    import comfy.model_management as mm

    image, _, series = batch
    srv = stub(body={"action": "cancel"})
    with pytest.raises(mm.InterruptProcessingException):
        run_label(lab.LabelArtifacts, image=image, series=series)
    assert srv.events[-1][1]["outcome"] == "cancel"
    # ComfyUI's own Cancel (POST /interrupt) while the node waits
    srv = stub(body=None)
    threading.Timer(0.3, mm.interrupt_current_processing).start()
    t0 = time.monotonic()
    with pytest.raises(mm.InterruptProcessingException):
        run_label(lab.LabelArtifacts, image=image, series=series, timeout=600)
    assert time.monotonic() - t0 < 5 and not mm.processing_interrupted()  # the flag was consumed
    assert srv.kinds() == ["sentinel.label.request", "sentinel.label.done"]
    assert srv.events[-1][1]["outcome"] == "cancel"
    assert not (sandbox / "output" / "artifact_datasets" / "lab").exists()


def test_timeout_errors_clearly_or_continues_without_saving(lab, batch, sandbox, stub, monkeypatch):
    from diffusion_sentinel.nodes.artifact.label_session import BROKER

    image, _, series = batch
    start = time.monotonic()
    monkeypatch.setattr(BROKER, "clock", lambda: start + (time.monotonic() - start) * 200)  # 5 s pass in 25 ms
    srv = stub(body=None)
    with pytest.raises(TimeoutError, match="waited 5 s for labels and got none, so nothing was written"):
        run_label(lab.LabelArtifacts, image=image, series=series, timeout=5)
    assert srv.events[-1][1]["outcome"] == "timeout" and BROKER.pending() == []
    out = run_label(lab.LabelArtifacts, image=image, series=series, timeout=5, on_timeout="continue without saving")
    assert out.args[1] == [False] * 4 and out.args[3:5] == (0, 0)
    assert "no answer within 5 s: nothing written" in out.ui["sentinel_result"][0]["notes"]
    assert not (sandbox / "output" / "artifact_datasets" / "lab").exists()


def test_a_folder_claimed_meanwhile_refuses_and_the_error_keeps_the_labels(lab, batch, sandbox, stub):
    """Another worker claims the folder for another layout while the user labels: nothing is written, and the
    error gives the labels in the typed form, so the clicks are not lost."""
    from diffusion_sentinel.classifiers.data import claim_layout

    image, _, series = batch
    folder = sandbox / "output" / "artifact_datasets" / "lab"
    stub(body={"action": "save", "labels": [1, None, 0, 1]},
         before=lambda: claim_layout(str(folder), "pixel_ssim", True))
    with pytest.raises(ValueError, match=r"pixel_ssim metric.*your labels were '1,x,0,1': type them into 'labels'"):
        run_label(lab.LabelArtifacts, image=image, series=series)
    assert sorted(snapshot(folder)) == ["dataset.json"]


def test_concurrent_label_nodes_share_one_folder(lab, batch, sandbox):
    from diffusion_sentinel.classifiers import read_dataset

    image, traj, series = batch
    errors = []

    def worker(k):
        try:
            for _ in range(3):
                run_label(lab.LabelArtifacts, image=image, trajectory=traj, series=series, labels="1,0,x,0",
                          group=f"w{k}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    folder = sandbox / "output" / "artifact_datasets" / "lab"
    ds = read_dataset(folder)
    assert ds.n == 27 and int(ds.y.sum()) == 9 and len(set(ds.ids)) == 27
    assert len(os.listdir(folder / "trajectories")) == 27 and len(os.listdir(folder / "images")) == 27


# ------------------------------------------------------------------------------------- label -> train -> predict
def test_label_train_label_with_it_and_predict(art, lab, traj_nodes, tiny, tiny_vae, sandbox):
    """The ten-minute loop: label 3 batches (rule's P shown), train, label 2 more with the trained classifier
    shown (its P and least-sure marks), retrain, predict. The labelling rule is learnable (a deeper dip at value 2
    than the median = artifact), so the classifier must rank by it."""
    from diffusion_sentinel.classifiers import load_model, read_dataset
    from diffusion_sentinel.classifiers.evaluation import roc_auc

    runs = [make_batch(traj_nodes, tiny, tiny_vae, seed=s) for s in range(5)]
    dip = np.concatenate([s.values.numpy()[:, 2] for _, _, s in runs])
    cut = float(np.median(dip))
    typed = [",".join("1" if v < cut else "0" for v in s.values.numpy()[:, 2]) for _, _, s in runs]
    for k in range(3):
        image, traj, _ = runs[k]
        run_label(lab.LabelArtifacts, image=image, trajectory=traj, labels=typed[k], dataset="loop")
    name = run_v3(art.TrainArtifactClassifier, dataset="loop", recipe="default", model_name="loop_lr",
                  prefix_steps=0, cv_folds=3, cv_seeds=1, overwrite=False).args[0]
    model = load_model(sandbox / "artifact_classifiers" / name)
    assert model.training["n"] == 12
    for k in (3, 4):
        image, traj, series = runs[k]
        out = run_label(lab.LabelArtifacts, image=image, trajectory=traj, labels=typed[k], dataset="loop",
                        classifier=name, mark_least_sure=1)
        p = out.args[2]
        # the P shown is the trained classifier's, as Artifact Predict and the model file compute it
        assert p == pytest.approx(run_v3(art.ArtifactPredict, series=series, classifier=name, threshold=0.5).args[0])
        assert p == pytest.approx(model.p_artifact(series.values.numpy(), "latent_cosine", True)[0].tolist())
        assert out.ui["sentinel_label"][0]["marked"] == [min(range(4), key=lambda i: (abs(p[i] - 0.5), i))]
        assert out.ui["sentinel_label"][0]["model"] == "loop_lr"
    name2 = run_v3(art.TrainArtifactClassifier, dataset="loop", recipe="default", model_name="loop_lr",
                   prefix_steps=0, cv_folds=4, cv_seeds=2, overwrite=True).args[0]
    model2 = load_model(sandbox / "artifact_classifiers" / name2)
    ds = read_dataset(sandbox / "output" / "artifact_datasets" / "loop")
    assert model2.training["n"] == ds.n == 20 and int(ds.y.sum()) == 10
    all_p = np.concatenate([run_v3(art.ArtifactPredict, series=s, classifier=name2, threshold=0.5).args[0]
                            for _, _, s in runs])
    y = (dip < cut).astype(int)
    assert roc_auc(y, all_p) >= 0.9  # it learnt the labels (ranking; see test_artifact_nodes for why not at 0.5)
    assert model2.estimator.coef_[2] > 0
