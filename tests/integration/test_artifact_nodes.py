"""Artifact nodes in a real ComfyUI with a tiny real U-Net: predict, filter, collect a dataset, train, predict
with the trained file, and refuse files / metrics that do not fit."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from _artifact import synthetic_series
from _comfy import conditioning, empty_latent, run_v3, tiny_vae

POS, NEG = conditioning(1), conditioning(2)
STEPS = 8
SAMPLER = "euler_ancestral"  # its injected noise makes the tiny model's similarity curves differ per item


@pytest.fixture(scope="module")
def art(comfy):
    from diffusion_sentinel.nodes.artifact import comfy_nodes

    return comfy_nodes


@pytest.fixture()
def sandbox(comfy, tmp_path):
    """Model folder and output folder in tmp_path (never the checkout's own folders)."""
    import folder_paths

    models = tmp_path / "artifact_classifiers"
    models.mkdir()
    folder_paths.add_model_folder_path("artifact_classifiers", str(models), is_default=True)
    old_out = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    try:
        yield tmp_path
    finally:
        folder_paths.set_output_directory(old_out)
        paths, exts = folder_paths.folder_names_and_paths["artifact_classifiers"]
        folder_paths.folder_names_and_paths["artifact_classifiers"] = ([p for p in paths if p != str(models)], exts)


def traj_run(traj_nodes, model, seed=3, batch=2, steps=STEPS):
    return run_v3(traj_nodes.KSamplerTrajectory, model=model, seed=seed, steps=steps, cfg=5.0, sampler_name=SAMPLER,
                  scheduler="normal", positive=POS, negative=NEG, latent_image=empty_latent(batch),
                  denoise=1.0).args


def series_of(traj_nodes, traj, metric="latent_cosine", vae=None):
    return run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric=metric, noise_frame=True,
                  vae=vae).args[0]


def test_predict_with_the_rule(art, traj_nodes, tiny):
    from diffusion_sentinel.classifiers.features import late_drawdown

    _, traj = traj_run(traj_nodes, tiny, batch=3)
    series = series_of(traj_nodes, traj)
    with pytest.raises(ValueError, match="calibrated for DreamSim"):
        run_v3(art.ArtifactPredict, series=series, classifier="none", threshold=0.5)
    thr = 0.002
    p, flag, used, report = run_v3(art.ArtifactPredict, series=series, classifier="none", threshold=0.3,
                                   dmax_threshold=thr).args
    d = late_drawdown(series.values.numpy(), 0.4)
    expected = 1 / (1 + np.exp(-0.57 * (np.log(d + 1e-4) - np.log(thr + 1e-4))))
    assert p == pytest.approx(expected.tolist()) and flag == [v >= 0.3 for v in p]
    assert used is series and json.loads(report)["model"].startswith("D_max rule")
    # from the TRAJECTORY: the node computes the series itself with rule_metric
    p2 = run_v3(art.ArtifactPredict, trajectory=traj, classifier="none", threshold=0.5, dmax_threshold=thr,
                rule_metric="latent_cosine").args[0]
    assert p2 == pytest.approx(p)
    with pytest.raises(ValueError, match="connect a similarity 'series'"):
        run_v3(art.ArtifactPredict, classifier="none", threshold=0.5)


def test_filter_batch_keeps_latent_image_mask_in_step(art, traj_nodes, tiny):
    from comfy_execution.graph_utils import ExecutionBlocker

    lat, _ = traj_run(traj_nodes, tiny, batch=3)
    lat_in = {**lat, "batch_index": [4, 5, 6], "noise_mask": torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 8, 8)}
    img = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 8, 8, 3).contiguous()
    mask = torch.arange(3.0).view(3, 1, 1).expand(3, 8, 8).contiguous()
    p = [0.7, 0.1, 0.4]
    fl, fi, fm, idx, kept_p, count = run_v3(
        art.FilterBatchByArtifact, p_artifact=p, mode=["best k"], threshold=[0.5], k=[2], order=["best first"],
        if_none_kept=["keep best"], latent=[lat_in], image=[img], mask=[mask]).args
    assert idx == "1,2" and count == 2 and kept_p == [0.1, 0.4]
    assert torch.equal(fl["samples"], lat["samples"][[1, 2]]) and fl["batch_index"] == [5, 6]
    assert fl["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert fi[:, 0, 0, 0].tolist() == [1.0, 2.0] and fm[:, 0, 0].tolist() == [1.0, 2.0]
    out = run_v3(art.FilterBatchByArtifact, p_artifact=p, mode=["below threshold"], threshold=[0.5], k=[1],
                 order=["original"], if_none_kept=["keep best"], latent=[lat_in])
    assert out.args[3] == "1,2" and isinstance(out.args[1], ExecutionBlocker)  # no IMAGE connected: skipped
    none = run_v3(art.FilterBatchByArtifact, p_artifact=[0.9, 0.8], mode=["below threshold"], threshold=[0.5],
                  k=[1], order=["original"], if_none_kept=["block downstream"])
    assert all(isinstance(a, ExecutionBlocker) for a in none.args)
    best = run_v3(art.FilterBatchByArtifact, p_artifact=[0.9, 0.8], mode=["below threshold"], threshold=[0.5],
                  k=[1], order=["original"], if_none_kept=["keep best"])
    assert best.args[3] == "1"
    with pytest.raises(ValueError, match="no item has P"):
        run_v3(art.FilterBatchByArtifact, p_artifact=[0.9, 0.8], mode=["below threshold"], threshold=[0.5],
               k=[1], order=["original"], if_none_kept=["error"])
    with pytest.raises(ValueError, match="LATENT has batch size 3 but the scores are for 2"):
        run_v3(art.FilterBatchByArtifact, p_artifact=[0.1, 0.2], mode=["best k"], threshold=[0.5], k=[1],
               order=["original"], if_none_kept=["keep best"], latent=[lat_in])


def test_collect_train_and_predict_with_the_file(art, traj_nodes, tiny, sandbox):
    from diffusion_sentinel.classifiers import load_model, read_dataset

    runs = []
    for seed in range(5):
        _, traj = traj_run(traj_nodes, tiny, seed=seed, batch=4)
        runs.append((traj, series_of(traj_nodes, traj)))
    dip = np.concatenate([s.values.numpy()[:, 2] for _, s in runs])
    cut = float(np.median(dip))
    for traj, s in runs:  # label: "artifact" = a deeper dip at value 2 than the median (learnable)
        labels = ",".join("1" if v < cut else "0" for v in s.values.numpy()[:, 2])
        folder, size = run_v3(art.SaveLabelledTrajectory, dataset="tiny/run1", label="natural", labels=labels,
                              trajectory=traj, image=torch.rand(4, 8, 8, 3), group="prompt-a").args
    assert size == 20 and folder.startswith(str(sandbox / "output"))
    ds = read_dataset(folder)
    assert ds.metric == "latent_cosine" and ds.length == STEPS and int(ds.y.sum()) == 10
    assert len(os.listdir(os.path.join(folder, "trajectories"))) == 20
    assert len(os.listdir(os.path.join(folder, "images"))) == 20
    name, acc, auc, report = run_v3(art.TrainArtifactClassifier, dataset="tiny/run1", recipe="default",
                                    model_name="tiny_lr", prefix_steps=0, cv_folds=4, cv_seeds=2,
                                    overwrite=False).args
    rep = json.loads(report)
    assert name == "tiny_lr.safetensors" and rep["recipe"] == "log_distance" and rep["cv"]["folds"] == 4
    assert acc == pytest.approx(rep["cv"]["accuracy_mean"]) and 0.5 < auc <= 1.0
    model = load_model(sandbox / "artifact_classifiers" / name)
    assert model.trained_for.as_dict()["metric"] == "latent_cosine" and model.training["n"] == 20
    assert name in art.classifier_options() and art.classifier_options()[0] == "none"
    with pytest.raises(ValueError, match="exists"):
        run_v3(art.TrainArtifactClassifier, dataset="tiny/run1", recipe="default", model_name="tiny_lr",
               prefix_steps=0, cv_folds=4, cv_seeds=0, overwrite=False)
    p, flag, _, _ = run_v3(art.ArtifactPredict, series=runs[0][1], classifier=name, threshold=0.5).args
    all_p = np.concatenate([run_v3(art.ArtifactPredict, series=s, classifier=name, threshold=0.5).args[0]
                            for _, s in runs])
    assert np.mean((all_p >= 0.5) == (dip < cut)) >= 0.8  # it learnt the labelling rule
    p_t = run_v3(art.ArtifactPredict, trajectory=runs[0][0], classifier=name, threshold=0.5).args[0]
    assert p_t == pytest.approx(p)
    # a prefix classifier from the same folder
    pname = run_v3(art.TrainArtifactClassifier, dataset="tiny/run1", recipe="default", model_name="tiny_prefix",
                   prefix_steps=4, cv_folds=4, cv_seeds=0, overwrite=False).args[0]
    pm = load_model(sandbox / "artifact_classifiers" / pname)
    assert pm.trained_for.is_prefix and pm.trained_for.length == 4 and pm.trained_for.full_length == STEPS
    with pytest.raises(ValueError, match="not found"):
        run_v3(art.TrainArtifactClassifier, dataset="nope", recipe="default", model_name="x", prefix_steps=0,
               cv_folds=4, cv_seeds=0, overwrite=False)


def test_predict_refuses_another_metric_and_bad_files(art, traj_nodes, tiny, sandbox):
    from diffusion_sentinel.classifiers import ArtifactModel, TrainedFor, make_model

    X, y = synthetic_series(40, length=STEPS, seed=1)
    ArtifactModel(make_model("default").fit(X, y), TrainedFor("latent_cosine", True, STEPS)).save(
        sandbox / "artifact_classifiers" / "lc.safetensors")
    _, traj = traj_run(traj_nodes, tiny)
    ssim = series_of(traj_nodes, traj, "pixel_ssim", tiny_vae())
    with pytest.raises(ValueError, match="trained on latent_cosine.*uses pixel_ssim"):
        run_v3(art.ArtifactPredict, series=ssim, classifier="lc.safetensors", threshold=0.5)
    # with the TRAJECTORY connected too, the node computes the series the model needs
    p = run_v3(art.ArtifactPredict, series=ssim, trajectory=traj, classifier="lc.safetensors", threshold=0.5).args[0]
    assert len(p) == 2 and all(0 <= v <= 1 for v in p)
    # another length: resampled, with a warning in the report
    _, t12 = traj_run(traj_nodes, tiny, steps=12)
    rep = json.loads(run_v3(art.ArtifactPredict, trajectory=t12, classifier="lc.safetensors", threshold=0.5).args[3])
    assert "resampled" in " ".join(rep["notes"])
    (sandbox / "artifact_classifiers" / "pickled.safetensors").write_bytes(b"\x80\x04\x95garbage")
    with pytest.raises(ValueError, match="pickle"):
        run_v3(art.ArtifactPredict, series=ssim, classifier="pickled.safetensors", threshold=0.5)
    with pytest.raises(ValueError, match="not found"):
        run_v3(art.ArtifactPredict, series=ssim, classifier="missing.safetensors", threshold=0.5)
