"""Similarity Trajectory, Trajectory Frames, Save/Load Trajectory in real ComfyUI with tiny real models."""

from __future__ import annotations

import math
import os

import pytest
import torch
from _comfy import conditioning, empty_latent, run_v3

POS, NEG = conditioning(1), conditioning(2)


@pytest.fixture(scope="module")
def traj(comfy, tiny, traj_nodes):
    out = run_v3(traj_nodes.KSamplerTrajectory, model=tiny, seed=4, steps=8, cfg=5.0, sampler_name="euler",
                 scheduler="normal", positive=POS, negative=NEG, latent_image=empty_latent(2), denoise=1.0)
    return out.args[1]


def test_similarity_node_latent_cosine(traj_nodes, traj):
    out = run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="latent_cosine", noise_frame=True)
    series, mins, argmins, dmaxs, halves, finite, plot, text = out.args
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
    assert all(d >= 0 for d in dmaxs) and finite == [True, True]
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.dtype == torch.float32
    assert '"metric": "latent_cosine"' in text
    ui = out.ui
    assert ui["sentinel_series"][0]["steps"] == list(range(8)) and len(ui["sentinel_series"][0]["series"]) == 2


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
    assert torch.allclose(series.values[1], ssim(imgs[:-1], imgs[1:]).double(), atol=1e-5)


def test_dreamsim_without_package_says_what_to_do(traj_nodes, traj, tiny_vae):
    try:
        import dreamsim  # noqa: F401
        pytest.skip("dreamsim is installed here")
    except ImportError:
        pass
    from diffusion_sentinel.nodes.trajectory.dreamsim_backend import DreamSimUnavailable

    with pytest.raises(DreamSimUnavailable, match="pip install dreamsim.*models/dreamsim"):
        run_v3(traj_nodes.SimilarityTrajectory, trajectory=traj, metric="dreamsim", noise_frame=True, vae=tiny_vae)


def test_similarity_node_errors(traj_nodes, traj):
    with pytest.raises(ValueError, match="connect the VAE"):
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
    assert finite == [False, True]
    assert math.isnan(series.values[0, 7]) and not math.isnan(series.values[0, 2]) and not math.isnan(mins[0])


def test_frames_node(traj_nodes, traj):
    lat, sigmas = run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0", item=1).args
    assert lat["samples"].shape == (8, 4, 8, 8)
    assert torch.allclose(lat["samples"], traj.x0[1] / 0.18215, rtol=1e-5)
    assert sigmas == pytest.approx(traj.sigmas.tolist())
    with pytest.raises(ValueError, match="did not record x0_cond"):
        run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0_cond", item=0)
    with pytest.raises(ValueError, match="out of range"):
        run_v3(traj_nodes.TrajectoryFrames, trajectory=traj, which="x0", item=5)


def test_save_and_load_nodes(traj_nodes, traj):
    import folder_paths

    out = run_v3(traj_nodes.SaveTrajectory, trajectory=traj, filename_prefix="trajectories/pytest_roundtrip")
    path = out.args[0]
    try:
        assert path.startswith(folder_paths.get_output_directory()) and os.path.isfile(path)
        name = os.path.basename(path)
        assert name in folder_paths.get_filename_list("trajectories")
        assert traj_nodes.LoadTrajectory.validate_inputs(file=name) is True
        assert isinstance(traj_nodes.LoadTrajectory.fingerprint_inputs(file=name), float)
        (back,) = run_v3(traj_nodes.LoadTrajectory, file=name).args
        assert torch.equal(back.x0, traj.x0) and back.meta["sampler"] == "euler"
        assert "not found" in traj_nodes.LoadTrajectory.validate_inputs(file="nope.safetensors")
    finally:
        os.remove(path)


def test_save_refuses_paths_outside_output(traj_nodes, traj):
    with pytest.raises(Exception, match="outside the output folder"):
        run_v3(traj_nodes.SaveTrajectory, trajectory=traj, filename_prefix="../../escape")
