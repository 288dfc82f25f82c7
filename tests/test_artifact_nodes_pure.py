"""The pure parts of the artifact nodes: scoring, batch filtering, dataset writing, the early-rejection
simulation, and the recorder's step-listener hook (no ComfyUI needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _artifact import synthetic_series
from diffusion_sentinel.classifiers import ArtifactModel, MetricMismatch, TrainedFor, make_model, read_dataset
from diffusion_sentinel.classifiers.features import late_drawdown
from diffusion_sentinel.classifiers.simulation import simulate_auto_reject
from diffusion_sentinel.nodes.artifact.batch_filter import (
    choose,
    concat_trajectories,
    indices_string,
    take_image,
    take_latent,
    take_mask,
)
from diffusion_sentinel.nodes.artifact.dataset_writer import parse_labels, safe_name, write_samples
from diffusion_sentinel.nodes.artifact.scoring import score_series, score_values
from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions, RunRecorder, StopSampling
from diffusion_sentinel.nodes.trajectory.similarity import SimilaritySeries
from diffusion_sentinel.nodes.trajectory.trajectory import Trajectory


# ------------------------------------------------------------------------------------------------ choose / take
def test_choose_modes_orders_and_nan():
    p = [0.7, 0.2, float("nan"), 0.2, 0.45]
    assert choose(p, "below threshold", 0.5) == [1, 3, 4]
    assert choose(p, "below threshold", 0.5, order="best first") == [1, 3, 4]
    assert choose(p, "best k", k=2) == [1, 3]                     # ties: lower index first
    assert choose(p, "best k", k=4, order="best first") == [1, 3, 4, 0]  # NaN counts as 1 (worst)
    assert choose(p, "best k", k=10) == [0, 1, 2, 3, 4]
    assert choose(p, "below threshold", 0.1) == []
    assert indices_string([0, 2, 3]) == "0,2,3"
    with pytest.raises(ValueError, match="unknown mode"):
        choose(p, "median")


def test_take_keeps_latent_image_mask_in_step():
    lat = {"samples": torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 2, 2).clone(),
           "noise_mask": torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone(), "batch_index": [7, 8, 9, 10],
           "other": "kept"}
    out = take_latent(lat, [3, 1], 4)
    assert out["samples"][:, 0, 0, 0].tolist() == [3.0, 1.0] and out["noise_mask"][:, 0, 0, 0].tolist() == [3.0, 1.0]
    assert out["batch_index"] == [10, 8] and out["other"] == "kept" and lat["batch_index"] == [7, 8, 9, 10]
    shared_mask = take_latent({**lat, "noise_mask": torch.ones(1, 1, 2, 2)}, [2], 4)
    assert shared_mask["noise_mask"].shape == (1, 1, 2, 2)
    img = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 3, 3)
    assert take_image(img, [2, 0], 4)[:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert take_mask(torch.arange(4.0).view(4, 1, 1).expand(4, 2, 2), [1], 4)[:, 0, 0].tolist() == [1.0]
    assert take_mask(torch.ones(2, 2), [1], 4).shape == (2, 2)  # one mask for the whole batch
    with pytest.raises(ValueError, match="IMAGE has batch size 3"):
        take_image(torch.zeros(3, 2, 2, 3), [0], 4)
    with pytest.raises(ValueError, match="batch_index has 2 entries"):
        take_latent({**lat, "batch_index": [1, 2]}, [0], 4)


def _traj(b, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Trajectory(x0=torch.randn(b, t, 4, 2, 2, generator=g), sigmas=torch.linspace(10, 1, t),
                      noise_frame=torch.randn(b, 4, 2, 2, generator=g), meta={"sampler": "euler"})


def test_concat_trajectories():
    a, b = _traj(1, seed=1), _traj(2, seed=2)
    c = concat_trajectories([a, b.select([1])], {"seeds": [5, 6]})
    assert c.batch_size == 2 and torch.equal(c.x0[1], b.x0[1]) and c.meta["seeds"] == [5, 6]
    assert torch.equal(c.noise_frame[0], a.noise_frame[0]) and c.x is None
    with pytest.raises(ValueError, match="different steps"):
        concat_trajectories([a, _traj(1, t=5)])


# ------------------------------------------------------------------------------------------------ scoring
def _series(values, metric="dreamsim", noise_frame=True):
    v = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    return SimilaritySeries(v, list(range(v.shape[1])), metric, noise_frame, source={"steps": v.shape[1]})


def test_rule_scoring_dreamsim_and_other_metrics():
    X, _ = synthetic_series(6, seed=3)
    s = score_series(_series(X))
    d = late_drawdown(X, 0.4)
    rel = d / (X[:, 1:].max(1) - X[:, 1:].min(1))  # the shipped rule: relative late drop, threshold 0.086
    assert [p > 0.5 for p in s.p] == list(rel > 0.086) and s.notes == [] and s.calibrated
    expected = 1 / (1 + np.exp(-0.60 * (np.log(rel + 1e-4) - np.log(0.086 + 1e-4))))
    assert s.p == pytest.approx(expected.tolist())
    assert s.d_max == pytest.approx(d.tolist()) and s.d_max_relative == pytest.approx(rel.tolist())
    assert s.is_artifact == [p >= 0.5 for p in s.p]
    # any other metric: the same scale-free rule runs (no threshold needed), with an honest note
    lc = score_series(_series(X, "latent_cosine"))
    assert lc.p == pytest.approx(s.p) and not lc.calibrated
    assert "UNCALIBRATED" in lc.notes[0] and "ranking" in lc.notes[0]
    # an affine change of the similarity scale changes nothing (that is what makes it usable on any metric)
    assert score_series(_series(0.2 + 0.3 * X, "latent_cosine")).p == pytest.approx(lc.p)
    # an explicit dmax_threshold: the absolute D_max rule in the metric's own units
    own = score_series(_series(X, "latent_cosine"), dmax_threshold=0.05)
    assert [p > 0.5 for p in own.p] == list(d > 0.05) and own.notes == []
    short = score_series(_series(X[:, :20]))
    assert "calibrated on 50-step runs" in short.notes[0]
    b = s.batch_summary()
    flags = [p >= 0.5 for p in s.p]
    assert b == {"any_artifact": any(flags), "all_artifact": all(flags), "n_artifacts": sum(flags),
                 "best_index": int(np.argmin(s.p))}


def test_model_scoring_nonfinite_items_get_one():
    X, y = synthetic_series(80, seed=4)
    m = ArtifactModel(make_model("default").fit(X, y), TrainedFor("latent_cosine", True, 50), name="m")
    Xt = X[:3].copy()
    Xt[2, 5] = np.nan
    s = score_values(Xt, "latent_cosine", True, finite=np.array([True, True, False]), model=m, threshold=0.3)
    assert s.p[2] == 1.0 and s.is_artifact[2] and s.model == "m"
    assert s.p[:2] == pytest.approx(m.estimator.predict_proba(X[:2])[:, 1].tolist())
    with pytest.raises(MetricMismatch):
        score_values(Xt, "dreamsim", True, model=m)


# ------------------------------------------------------------------------------------------------ datasets
def test_labels_and_names():
    assert parse_labels("", "artifact", 3) == [1, 1, 1]
    assert parse_labels("1, 0 natural", "natural", 3) == [1, 0, 0]
    assert parse_labels("natural", "artifact", 2) == [0, 0]
    with pytest.raises(ValueError, match="lists 2 labels for a batch of 3"):
        parse_labels("1,0", "artifact", 3)
    assert safe_name("sd15/hands") == "sd15/hands" and safe_name("a b") == "a_b"
    for bad in ("../x", "/etc", ""):
        with pytest.raises(ValueError, match="plain relative name"):
            safe_name(bad)


def test_write_samples_round_trip(tmp_path):
    X, _ = synthetic_series(2, length=4, seed=5)
    series = _series(X, "latent_cosine")
    traj = _traj(2)
    images = torch.rand(2, 8, 8, 3)
    rows = write_samples(str(tmp_path), series, [1, 0], traj, images, group="a cat")
    rows += write_samples(str(tmp_path), series, [0, 0], None, None)
    ds = read_dataset(tmp_path)
    assert ds.n == 4 and ds.y.tolist() == [1, 0, 0, 0] and ds.metric == "latent_cosine" and ds.noise_frame
    assert np.allclose(ds.X[:2], X) and ds.groups[:2] == ["a cat", "a cat"]
    assert ds.ids == [r["id"] for r in rows] and len(set(ds.ids)) == 4
    back = Trajectory.load(tmp_path / rows[1]["trajectory"])
    assert torch.equal(back.x0[0], traj.x0[1]) and back.meta["label"] == "natural"
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / rows[0]["image"]))
    assert png.shape == (8, 8, 3) and abs(int(png[0, 0, 0]) - round(float(images[0, 0, 0, 0]) * 255)) <= 1
    assert rows[2]["trajectory"] == "" and rows[2]["image"] == ""
    # one file per sample, no index.csv, no temporary file left behind
    assert sorted(os.listdir(tmp_path)) == ["dataset.json", "images", "samples", "trajectories"]
    assert len(os.listdir(tmp_path / "samples")) == 4
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".")]


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def test_refused_samples_leave_every_file_byte_identical(tmp_path):
    """A second metric or layout, wrong label count or IMAGE batch: refused before anything is written."""
    from _artifact import write_legacy_index
    from diffusion_sentinel.classifiers import DatasetError

    X, _ = synthetic_series(2, length=4, seed=5)
    new = tmp_path / "new"
    write_samples(str(new), _series(X, "latent_cosine"), [1, 0], _traj(2), torch.rand(2, 8, 8, 3))
    legacy = tmp_path / "legacy"  # a folder of an earlier version: rows in index.csv
    write_legacy_index(legacy, [{"id": "old_0", "naturalness": "natural", "next": "[0.2, 0.9, 0.95, 0.99]",
                                 "metric": "latent_cosine", "noise_frame": "true"}])
    for folder in (new, legacy):
        before = _snapshot(folder)
        with pytest.raises(DatasetError, match="latent_cosine metric, these use pixel_ssim.*Nothing was written"):
            write_samples(str(folder), _series(X, "pixel_ssim"), [1, 0], _traj(2), torch.rand(2, 8, 8, 3))
        with pytest.raises(DatasetError, match="noise_frame on, these have it off"):
            write_samples(str(folder), _series(X, "latent_cosine", noise_frame=False), [1, 0], _traj(2))
        with pytest.raises(ValueError, match="3 labels for 2 series"):
            write_samples(str(folder), _series(X, "latent_cosine"), [1, 0, 1], _traj(2))
        with pytest.raises(ValueError, match="IMAGE has 1 image"):
            write_samples(str(folder), _series(X, "latent_cosine"), [1, 0], _traj(2), torch.rand(1, 8, 8, 3))
        with pytest.raises(ValueError, match="TRAJECTORY has 1 item"):
            write_samples(str(folder), _series(X, "latent_cosine"), [1, 0], _traj(1))
        assert _snapshot(folder) == before
        assert read_dataset(folder).metric == "latent_cosine"
    # the legacy folder still takes samples of its own metric (and keeps its old row)
    write_samples(str(legacy), _series(X, "latent_cosine"), [1, 0])
    assert read_dataset(legacy).ids[0] == "old_0" and read_dataset(legacy).n == 3


def test_several_processes_writing_one_folder_lose_nothing(tmp_path):
    import multiprocessing as mp

    folder = str(tmp_path / "shared")
    ctx = mp.get_context("spawn")
    from _artifact import dataset_writer_process

    procs = [ctx.Process(target=dataset_writer_process, args=(folder, w, 4)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    ds = read_dataset(folder)
    assert ds.n == 4 * 4 * 3 and len(set(ds.ids)) == ds.n
    assert sorted({round(float(x), 2) for x in ds.X[:, 0]}) == sorted({w + k / 100 for w in range(4) for k in range(4)})
    for sub in ("samples", "trajectories", "images"):
        names = os.listdir(os.path.join(folder, sub))
        assert len(names) == 48 and not [n for n in names if n.startswith(".")]  # no temporary files left
    for i in ds.ids:
        Trajectory.load(os.path.join(folder, "trajectories", f"{i}.safetensors"))  # every file complete


# ------------------------------------------------------------------------------------------------ simulation
def test_simulation_by_hand():
    # pool: 0 = clean (accepted), 1 = artifact flagged early and late, 2 = artifact only flagged at the end
    p_full, p_pre, art = [0.1, 0.9, 0.8], [0.1, 0.9, 0.2], [False, True, True]
    r = simulate_auto_reject(p_full, p_pre, art, steps=50, check_step=10, early_tau=0.5, max_tries=3, runs=3000)
    # draw sequences are shared; early rejection only ever replaces 50 evaluations of image 1 by 10
    assert r.evals_early < r.evals_plain and 0 < r.saved_ratio < 1
    assert r.artifact_rate_early == pytest.approx(r.artifact_rate_plain, abs=0.02)
    one = simulate_auto_reject([0.9], [0.9], [True], steps=50, check_step=10, early_tau=0.5, max_tries=3, runs=10)
    assert one.evals_plain == 150 and one.evals_early == 10 + 10 + 50  # the last try is never stopped
    assert one.saved_ratio == pytest.approx(1 - 70 / 150)


# ------------------------------------------------------------------------------------------------ recorder hook
def test_recorder_step_listener_snapshot_and_stop_marking():
    seen = []

    def listener(rec, idx):
        snap = rec.snapshot()
        seen.append((idx, snap.num_steps, snap.meta["model_evals_total"]))
        if idx == 1:
            raise StopSampling("enough")

    sig = torch.tensor([3.0, 2.0, 1.0, 0.0])
    rec = RunRecorder(CaptureOptions(every_k=1), sig, {"sampler": "x"}, step_listener=listener)
    x = torch.randn(1, 4, 2, 2)
    rec.on_eval(x, sig[0:1], x * 0.5)
    rec.on_callback(0, rec._evals[-1].x0, x)
    rec.after_step()
    rec.on_eval(x, sig[1:2], x * 0.25)
    rec.on_callback(1, rec._evals[-1].x0, x)
    with pytest.raises(StopSampling, match="enough"):
        rec.after_step()
    rec.mark_stopped("enough")
    assert seen == [(0, 1, 1), (1, 2, 2)]
    assert torch.equal(rec.latest_x0, x * 0.25)
    traj = rec.finish(rec.latest_x0)
    assert traj.num_steps == 2 and traj.meta["stopped_early_at"] == 1 and "stopped_early" in traj.meta["flags"]
    assert "steps_do_not_follow_schedule" not in traj.meta["flags"]
    rec.after_step()  # nothing new recorded: the listener is not called again
    assert len(seen) == 2
