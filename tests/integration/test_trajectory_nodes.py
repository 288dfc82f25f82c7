"""Similarity Trajectory, Trajectory Frames, Save/Load Trajectory in real ComfyUI with tiny real models."""

from __future__ import annotations

import math
import os

import pytest
import torch
from _comfy import conditioning, empty_latent, run_v3
from _device import tol

POS, NEG = conditioning(1), conditioning(2)


@pytest.fixture(scope="module")
def traj(comfy, tiny, traj_nodes):
    out = run_v3(traj_nodes.KSamplerTrajectory, model=tiny, seed=4, steps=8, cfg=5.0, sampler_name="euler",
                 scheduler="normal", positive=POS, negative=NEG, latent_image=empty_latent(2), denoise=1.0)
    return out.args[1]


def test_similarity_node_latent_cosine(traj_nodes, traj):
    from diffusion_sentinel.classifiers.features import late_drawdown

    out = run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="latent_cosine", noise_frame=True)
    series, mins, argmins, dmaxs, halves, finite, plot, text, rel, worst, batch_min = out.args
    assert series.values.shape == (2, 8) and series.steps == list(range(8))
    # independent computation: cosine of consecutive frames (noise frame first), in numpy float64
    frames = torch.cat([traj.noise_frame[:, None], traj.x0], 1).double().numpy()
    for b in range(2):
        for k in range(8):
            u, v = frames[b, k].ravel(), frames[b, k + 1].ravel()
            assert series.values[b, k].item() == pytest.approx(u @ v / ((u @ u) ** 0.5 * (v @ v) ** 0.5), abs=1e-9)
    body = series.values[:, 1:]
    assert mins == pytest.approx(body.min(dim=1).values.tolist())
    assert argmins == [int(body[b].argmin()) + 1 for b in range(2)]
    # one D_max everywhere: the drop over the last 60 % of the series (what the rule uses)
    vals = series.values.numpy()
    assert dmaxs == pytest.approx(late_drawdown(vals, 0.4).tolist())
    assert rel == pytest.approx((late_drawdown(vals, 0.4) / (vals[:, 1:].max(1) - vals[:, 1:].min(1))).tolist())
    assert worst == max(range(2), key=lambda i: (rel[i], -i)) and batch_min == pytest.approx(min(mins))
    assert finite == [True, True]
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.dtype == torch.float32
    assert '"metric": "latent_cosine"' in text
    # the on-node panel carries exactly the outputs, and the sparkline is the series without the noise value
    (p,) = out.ui["sentinel_result"]
    assert [c["key"] for c in p["columns"]] == ["item", "min", "argmin_step", "d_max", "d_max_relative",
                                                 "mean_last_half", "finite"]
    assert [r[1] for r in p["rows"]] == pytest.approx(mins) and [r[2] for r in p["rows"]] == argmins
    assert [r[3] for r in p["rows"]] == pytest.approx(dmaxs) and [r[4] for r in p["rows"]] == pytest.approx(rel)
    assert [r[5] for r in p["rows"]] == pytest.approx(halves) and [r[6] for r in p["rows"]] == finite
    assert p["highlight"] == [worst] and p["series"] == [row[1:] for row in series.as_lists()]
    assert p["columns"][3]["direction"] == "lower is better" and p["columns"][1]["direction"] == "higher is better"
    assert "sentinel_series" not in out.ui and out.ui["text"][0].startswith("Similarity Trajectory")


def test_similarity_node_pixel_ssim_with_real_vae(traj_nodes, traj, tiny_vae):
    out = run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="pixel_ssim", noise_frame=False,
                 vae=tiny_vae, decode_batch=3)
    series = out.args[0]
    assert series.values.shape == (2, 7) and series.metric == "pixel_ssim"
    assert torch.isfinite(series.values).all() and (series.values <= 1 + 1e-9).all()
    # same numbers as decoding all frames at once with ComfyUI's VAE and comparing with our SSIM
    from diffusion_sentinel.nodes.trajectory.capture import latent_out
    from diffusion_sentinel.nodes.trajectory.similarity import ssim

    with torch.inference_mode():
        imgs = tiny_vae.decode(latent_out(traj, traj.x0[1].float())).clamp(0, 1).permute(0, 3, 1, 2)
    # chunks of 3 vs one batch of 8 through the VAE: equal up to the device's float32 tolerance (TF32 on CUDA)
    assert torch.allclose(series.values[1], ssim(imgs[:-1], imgs[1:]).double().cpu(), **tol("float32"))


def test_dreamsim_without_package_says_what_to_do(traj_nodes, traj, tiny_vae):
    try:
        import dreamsim  # noqa: F401
        pytest.skip("dreamsim is installed here")
    except ImportError:
        pass
    # everything that is missing, named at once (it used to take one failed run per missing piece)
    with pytest.raises(ValueError, match=r"needs 2 more thing\(s\): \(1\) install .*pip install dreamsim.*\(2\) unzip "
                                         r"DreamSim's pretrained.zip .*models/dreamsim.*Or use the latent_cosine"):
        run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="dreamsim", noise_frame=True, vae=tiny_vae)
    with pytest.raises(ValueError, match=r"needs 3 more thing\(s\): \(1\) connect a VAE"):
        run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="dreamsim", noise_frame=True)


def test_similarity_node_errors(traj_nodes, traj):
    with pytest.raises(ValueError, match="pixel_ssim similarity metric needs 1 more thing.*connect a VAE.*Or use "
                                         "the latent_cosine metric"):
        run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="pixel_ssim", noise_frame=True)
    short = traj.select([0])
    short = type(short)(x0=short.x0[:, :1], sigmas=short.sigmas[:1], meta=short.meta)
    from diffusion_sentinel.nodes.trajectory.trajectory import TrajectoryError

    with pytest.raises(TrajectoryError, match="at least 2"):
        run_v3(traj_nodes.SimilarityTrajectory, trajectory=short, metric="latent_cosine", noise_frame=False)


def test_nan_sampler_output_is_flagged(traj_nodes, traj):
    bad = traj.select([0, 1])
    bad.x0 = bad.x0.clone()
    bad.x0[0, 5:] = float("nan")
    out = run_v3(traj_nodes.SimilarityTrajectory, trajectory=bad, metric="latent_cosine", noise_frame=True)
    series, mins, argmins, dmaxs, halves, finite = out.args[:6]
    assert finite == [False, True] and out.args[9] == 0  # the non-finite item is the worst
    assert math.isnan(series.values[0, 7]) and not math.isnan(series.values[0, 2]) and not math.isnan(mins[0])


def test_frames_node(traj_nodes, traj):
    out = run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0", item=1)
    lat, sigmas = out.args
    assert lat["samples"].shape == (8, 4, 8, 8)
    assert torch.allclose(lat["samples"], traj.x0[1] / 0.18215, rtol=1e-5)
    assert sigmas == pytest.approx(traj.sigmas.tolist())
    (p,) = out.ui["sentinel_result"]
    assert [r[2] for r in p["rows"]] == pytest.approx(sigmas) and [r[1] for r in p["rows"]] == traj.steps.tolist()
    with pytest.raises(ValueError, match="did not record x0_cond"):
        run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0_cond", item=0)
    with pytest.raises(ValueError, match="out of range"):
        run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0", item=5)


@pytest.mark.parametrize("meta,match", [({"latent_format": ["SD15"]}, "not a latent format name"),
                                        ({"latent_scale_factor": "abc"}, "not a number"),
                                        ({"latent_scale_factor": 0}, "cannot be a latent scale")])
def test_frames_node_refuses_tampered_metadata(traj_nodes, traj, meta, match):
    """A list as latent_format was a TypeError inside ComfyUI, "abc" a ValueError, 0 silent inf frames."""
    from diffusion_sentinel.nodes.trajectory.trajectory import TrajectoryError

    bad = traj.select([0, 1])
    bad.meta = {**bad.meta, **meta}
    with pytest.raises(TrajectoryError, match=match):
        run_v3(traj_nodes.TrajectoryFrames, trajectory=bad, which="x0", item=0)


def test_save_and_load_nodes(traj_nodes, traj):
    import folder_paths

    out = run_v3(traj_nodes.SaveTrajectory, trajectory=traj, filename_prefix="trajectories/pytest_roundtrip")
    path = out.args[0]
    (p,) = out.ui["sentinel_result"]
    assert p["rows"][0][:3] == [os.path.relpath(path, folder_paths.get_output_directory()), 2, 8]
    assert p["rows"][0][3] == pytest.approx(os.path.getsize(path) / 2**20)
    try:
        assert path.startswith(folder_paths.get_output_directory()) and os.path.isfile(path)
        name = os.path.basename(path)
        assert name in folder_paths.get_filename_list("trajectories")
        assert traj_nodes.LoadTrajectory.validate_inputs(file=name) is True
        assert isinstance(traj_nodes.LoadTrajectory.fingerprint_inputs(file=name), float)
        loaded = run_v3(traj_nodes.LoadTrajectory, file=name)
        (back,) = loaded.args
        assert torch.equal(back.x0, traj.x0) and back.meta["sampler"] == "euler"
        (lp,) = loaded.ui["sentinel_result"]
        assert [r[2] for r in lp["rows"]] == [8, 8] and "2 item(s) x 8 recorded step(s)" in lp["summary"]
        assert "not found" in traj_nodes.LoadTrajectory.validate_inputs(file="nope.safetensors")
    finally:
        os.remove(path)


def test_save_refuses_paths_outside_output(traj_nodes, traj):
    with pytest.raises(Exception, match="outside the output folder"):
        run_v3(traj_nodes.SaveTrajectory, trajectory=traj, filename_prefix="../../escape")


def _family_nodes():
    from diffusion_sentinel.nodes.artifact import comfy_nodes as art
    from diffusion_sentinel.nodes.trajectory import comfy_nodes as trj

    return trj.NODES + art.NODES


def test_every_node_has_help_and_list_outputs_say_so(comfy):
    """web/docs/<NodeId>.md (the frontend's help panel) for every trajectory and artifact node: it cites the paper
    and names every output; every list output's tooltip says it is a list."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "web" / "docs"
    for cls in _family_nodes():
        schema = cls.GET_SCHEMA()
        text = (docs / f"{schema.node_id}.md").read_text()
        assert "2412.17109" in text, schema.node_id
        for out in schema.outputs:
            name = out.display_name or out.id
            assert name in text, (schema.node_id, name)
            tip = (out.tooltip or "").lower()
            if out.is_output_list:
                assert "list (one value per" in tip, (schema.node_id, name, tip)
            else:
                assert "list (one value per" not in tip, (schema.node_id, name)
