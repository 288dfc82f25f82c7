"""ComfyUI glue for the Similarity Trajectory: which frames to compare, decoding them, and the three metrics.

Memory stays bounded: pixel metrics decode one item's frames a chunk at a time and keep only the previous frame
(SSIM) or the embeddings (DreamSim).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .capture import latent_out
from .similarity import SimilaritySeries, consecutive_cosine, cosine_rows, frame_steps, ssim
from .trajectory import Trajectory, TrajectoryError

log = logging.getLogger("diffusion_sentinel")


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


def _progress(total: int):
    """ComfyUI's progress bar (with its interrupt check) inside ComfyUI; a no-op in plain Python."""
    try:
        from ..common.comfy_glue import Progress
    except ImportError:
        return _NoProgress()
    return Progress(total)


def metric_requirements_missing(metric: str, vae) -> list[str]:
    """Everything a metric still needs here, all at once (not one missing piece per run)."""
    missing = []
    if metric in ("pixel_ssim", "dreamsim") and vae is None:
        missing.append("connect a VAE to the 'vae' input (the metric decodes every x0 to an image)")
    if metric == "dreamsim":
        import importlib.util

        if importlib.util.find_spec("dreamsim") is None:
            missing.append("install the optional DreamSim package (`pip install dreamsim` in ComfyUI's Python "
                           "environment) and restart ComfyUI")
        try:
            from .dreamsim_backend import dreamsim_folder, missing_files

            folder = dreamsim_folder()
        except ImportError:  # outside ComfyUI: no models folder to check
            folder = None
        if folder is not None and missing_files(folder):
            missing.append(f"unzip DreamSim's pretrained.zip (github.com/ssundaram21/dreamsim releases) into {folder} "
                           "(the pack never downloads weights)")
    return missing


def check_metric_requirements(metric: str, vae, node: str,
                              alternative: str = "use the latent_cosine metric, which needs none of this") -> None:
    """Raise one ValueError that names the whole fix when ``metric`` cannot run with what is connected/installed."""
    missing = metric_requirements_missing(metric, vae)
    if missing:
        steps = "; ".join(f"({i + 1}) {m}" for i, m in enumerate(missing))
        raise ValueError(f"{node}: the {metric} similarity metric needs {len(missing)} more thing(s): {steps}. "
                         f"Or {alternative}.")


def trajectory_frames(traj: Trajectory, noise_frame: bool) -> torch.Tensor:
    """[B, N, *S] frames in model latent space: (noise frame,) x0 of each recorded step."""
    traj.require_steps(2)
    if noise_frame:
        if traj.noise_frame is None:
            raise TrajectoryError(
                "this trajectory has no starting-noise frame, so the paper layout is not available; "
                "turn 'noise_frame' off"
            )
        return torch.cat([traj.noise_frame[:, None].to(traj.x0.dtype), traj.x0], dim=1)
    return traj.x0


def finite_frames(frames: torch.Tensor) -> torch.Tensor:
    """[B, N] True where a frame holds only finite numbers."""
    return torch.isfinite(frames.reshape(frames.shape[0], frames.shape[1], -1).float()).all(dim=-1)


def mask_nonfinite_pairs(values: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Set z_j to NaN where frame j or j+1 is not finite."""
    pair_ok = ok[:, :-1] & ok[:, 1:]
    return torch.where(pair_ok, values, torch.full_like(values, float("nan")))


def series_from_trajectory(
    traj: Trajectory,
    metric: str,
    noise_frame: bool = True,
    vae=None,
    decode_batch: int = 8,
    embedder: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SimilaritySeries:
    """Compute the similarity series of every batch item with the chosen metric."""
    frames = trajectory_frames(traj, noise_frame)
    ok = finite_frames(frames)
    steps_all = [int(s) for s in traj.steps.tolist()]
    steps = frame_steps(steps_all, noise_frame)
    source = {k: traj.meta.get(k) for k in ("sampler", "scheduler", "steps", "cfg", "seed", "model_family",
                                             "every_k_steps", "prediction", "flags")}
    if metric == "latent_cosine":
        vals = consecutive_cosine(frames.float())
    elif metric in ("pixel_ssim", "dreamsim"):
        if vae is None:
            raise ValueError(f"the '{metric}' metric decodes every x0 with a VAE: connect the VAE input "
                             "(or use latent_cosine, which needs none)")
        if metric == "dreamsim" and embedder is None:
            from .dreamsim_backend import load_dreamsim_embedder
            embedder = load_dreamsim_embedder()
        vals = _pixel_series(traj, frames, ok, metric, vae, decode_batch, embedder)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose latent_cosine, pixel_ssim or dreamsim")
    vals = mask_nonfinite_pairs(vals, ok)
    return SimilaritySeries(vals, steps, metric, noise_frame, finite=ok.all(dim=1), source=source)


def decode(vae, traj: Trajectory, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents [n, *S] -> images [n, H, W, 3] in 0..1 (float32, CPU)."""
    images = vae.decode(latent_out(traj, latents.float()))
    if images.ndim == 5 and images.shape[1] == 1:  # some VAEs return a time axis of length 1
        images = images[:, 0]
    if images.ndim != 4:
        raise ValueError(f"pixel metrics need image latents; this VAE returned shape {tuple(images.shape)}. "
                         "Use latent_cosine for video/audio models.")
    return images.float().clamp(0, 1).cpu()


def _pixel_series(traj, frames, ok, metric, vae, decode_batch, embedder) -> torch.Tensor:
    b, n = frames.shape[:2]
    out = torch.full((b, n - 1), float("nan"), dtype=torch.float64)
    chunk = max(1, int(decode_batch))
    pbar = _progress(b * n)
    for i in range(b):
        prev_img = None
        prev_emb = None
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            block = frames[i, start:stop]
            good = ok[i, start:stop]
            # non-finite frames cannot go through the VAE; decode zeros and mask the pairs afterwards
            block = torch.where(good.view(-1, *([1] * (block.ndim - 1))), block, torch.zeros_like(block))
            imgs = decode(vae, traj, block)
            if metric == "pixel_ssim":
                seq = imgs.permute(0, 3, 1, 2)
                if prev_img is not None:
                    seq = torch.cat([prev_img, seq], dim=0)
                if seq.shape[0] > 1:
                    vals = ssim(seq[:-1], seq[1:]).to(torch.float64)
                    first = start - (1 if prev_img is not None else 0)
                    out[i, first:first + vals.shape[0]] = vals
                prev_img = seq[-1:]
            else:
                emb = embedder(imgs)
                seq = emb if prev_emb is None else torch.cat([prev_emb, emb], dim=0)
                if seq.shape[0] > 1:
                    vals = cosine_rows(seq[:-1], seq[1:])
                    first = start - (1 if prev_emb is not None else 0)
                    out[i, first:first + vals.shape[0]] = vals
                prev_emb = seq[-1:]
            pbar.update(stop - start)
    return out
