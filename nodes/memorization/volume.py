"""Volume growth rate of the probability-flow ODE (ease of reproduction; Hasegawa & Yasuda, arXiv 2503.19429).

Pure torch. The paper measures how much the deterministic ODE that maps an image to its noisy latent (DDIM
inversion) stretches a neighbourhood of the image: memorized images sit in sharp, attractor-like regions of the
learned score, so the map stretches them more (docs/methods.md §3). Its code is not public, so the exact step and
axis are unknown; these are the operationalisations of docs/methods.md §3.3 and §6 (3):

- the map: DDIM inversion in VP coordinates from the clean latent (taken as x at the first timestep t0, 1 by
  default) over ``steps`` steps of the DDIM-50 grid (t0 -> t0 + 20 -> ...); one step is
  ``x1 = sqrt(abar1) x0_hat + sqrt(1 - abar1) eps(x0)``, i.e. an Euler step of ``dx/dsigma = eps`` in ComfyUI's
  k-diffusion coordinates (``x_VE = x_VP * sqrt(1 + sigma^2)``);
- ``directions``: mean over K random unit directions u of ``log(||J u|| / ||u||)`` (J = the map's Jacobian);
- ``single_axis``: the same along one coordinate axis (chosen by the seed, the same axis for every image), the
  paper's "stretch rate along a single axis over one step";
- ``volume``: log|det| of the map by Liouville's formula, ``log G = sum_k (sigma_{k+1} - sigma_k) tr(d eps / d x)``
  (Euler rule on the inversion trajectory, trace by Hutchinson with K Rademacher probes) minus the constant
  ``D log(s_K / s_0)`` that converts k-diffusion to VP coordinates. The Euler rule is first order: with few, large
  steps it over-weights the largest eigenvalues; use it as a ranking score within one model and resolution.

Jacobian-vector products: forward-mode AD (``torch.autograd.forward_ad``; the glue gives the U-Net an attention
built from matmul and softmax, ``math_attention.py``, since fused attention kernels have no forward derivative) or
central finite differences with ``h = rel_step * ||x|| / ||u||`` (the perturbation is ``rel_step`` of the latent's
norm; the rounding of each evaluation is amplified by about 1 / rel_step, so the glue evaluates in float64).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

METHODS = ("jvp", "finite_difference")
MODES = ("directions", "single_axis", "volume")
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]  # (x in k-diffusion VE form, sigma) -> denoised x0


def vp_scale(sigma: float) -> float:
    """x_VE = x_VP * sqrt(1 + sigma^2)."""
    return math.sqrt(1.0 + float(sigma) ** 2)


def inversion_step(denoise: Denoiser, x_vp: torch.Tensor, s0: float, s1: float) -> torch.Tensor:
    """One deterministic DDIM (inversion) step from sigma s0 to s1, VP coordinates in and out."""
    x = x_vp * vp_scale(s0)
    d = denoise(x, s0)
    eps = (x - d) / s0
    return (d + s1 * eps) / vp_scale(s1)


def inversion_map(denoise: Denoiser, sigmas: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The composed map over the sigma grid (len(sigmas) - 1 steps)."""
    if len(sigmas) < 2:
        raise ValueError("need at least two sigmas (one step)")

    def fn(x_vp: torch.Tensor) -> torch.Tensor:
        for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
            x_vp = inversion_step(denoise, x_vp, s0, s1)
        return x_vp

    return fn


def _per_item(v: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (ref.ndim - 1)))


def jvp(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    u: torch.Tensor,
    method: str = "jvp",
    rel_step: float = 1e-3,
    need_primal: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(fn(x) or None, J_fn(x) u) for a batch-wise fn (item i of the output depends only on item i of the input).

    ``jvp``: forward-mode AD, one pass (primal for free). ``finite_difference``: central differences, one call of
    fn on the concatenated batch [x + h u, x - h u] (and x itself when ``need_primal``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    with torch.inference_mode(False), torch.no_grad():
        x = x.detach().float().clone()
        u = u.detach().float().clone().expand_as(x).contiguous()
        if method == "jvp":
            import torch.autograd.forward_ad as fwad

            with fwad.dual_level(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=DeprecationWarning)
                out = fn(fwad.make_dual(x, u))
                primal, tangent = fwad.unpack_dual(out)
                primal = primal.detach().clone()
                tangent = torch.zeros_like(primal) if tangent is None else tangent.detach().clone()
            return (primal if need_primal else None), tangent
        xn = x.flatten(1).norm(dim=1)
        un = u.flatten(1).norm(dim=1).clamp_min(1e-12)
        h = _per_item((rel_step * xn.clamp_min(1e-3)) / un, x)
        parts = [x + h * u, x - h * u] + ([x] if need_primal else [])
        out = fn(torch.cat(parts))
        b = x.shape[0]
        tangent = (out[:b] - out[b:2 * b]) / (2 * h)
        return (out[2 * b:] if need_primal else None), tangent


def random_directions(k: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """K Gaussian directions of unit norm (over all of ``shape``), reproducible from the seed: [K, *shape]."""
    g = torch.Generator().manual_seed(int(seed))
    d = torch.randn((k, *shape), generator=g, dtype=torch.float32)
    return d / d.flatten(1).norm(dim=1).view(-1, *([1] * len(shape)))


def axis_direction(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, int]:
    """One coordinate axis e_i of the latent, i drawn from the seed: ([1, *shape], i)."""
    n = math.prod(shape)
    i = int(torch.randint(0, n, (1,), generator=torch.Generator().manual_seed(int(seed))))
    e = torch.zeros(n, dtype=torch.float32)
    e[i] = 1.0
    return e.view(1, *shape), i


def rademacher(k: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """K Rademacher (+-1) probes for Hutchinson's trace estimator: [K, *shape]."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (k, *shape), generator=g).float() * 2.0 - 1.0


def log_stretch(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    directions: torch.Tensor,
    method: str = "jvp",
    rel_step: float = 1e-3,
    on_direction: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Per item, the mean over directions of log(||J u|| / ||u||): x [B, *S], directions [K, *S] -> [B]."""
    if directions.shape[1:] != x.shape[1:]:
        raise ValueError(f"directions {tuple(directions.shape[1:])} do not match the latent {tuple(x.shape[1:])}")
    logs = []
    for k in range(directions.shape[0]):
        u = directions[k:k + 1].to(x.device)
        _, ju = jvp(fn, x, u, method=method, rel_step=rel_step)
        ratio = ju.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
        logs.append(ratio.clamp_min(1e-30).log())
        if on_direction is not None:
            on_direction(k)
    return torch.stack(logs, dim=1).mean(dim=1)


def hutchinson_divergence(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    probes: torch.Tensor,
    method: str = "jvp",
    rel_step: float = 1e-3,
    on_probe: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), per-item Hutchinson estimate of tr(d fn / d x) = mean_k z_k . J z_k) for a batch-wise fn."""
    primal, est = None, []
    for k in range(probes.shape[0]):
        z = probes[k:k + 1].to(x.device)
        p, jz = jvp(fn, x, z, method=method, rel_step=rel_step, need_primal=primal is None)
        if p is not None:
            primal = p
        est.append((z.expand_as(jz) * jz).flatten(1).sum(dim=1))
        if on_probe is not None:
            on_probe(k)
    return primal, torch.stack(est, dim=1).mean(dim=1)


def log_volume(
    denoise: Denoiser,
    x0_vp: torch.Tensor,
    sigmas: list[float],
    probes: torch.Tensor,
    method: str = "jvp",
    rel_step: float = 1e-3,
    on_probe: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """log|det| of the inversion map over the sigma grid (Liouville, Euler rule, Hutchinson): [B] in nats."""
    if len(sigmas) < 2:
        raise ValueError("need at least two sigmas (one step)")
    x_vp = x0_vp.float()
    dim = math.prod(x_vp.shape[1:])
    total = torch.zeros(x_vp.shape[0], dtype=torch.float32, device=x_vp.device)
    for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
        x_ve = x_vp * vp_scale(s0)

        def eps_fn(xv, s0=s0):
            return (xv - denoise(xv, s0)) / s0

        eps, tr = hutchinson_divergence(eps_fn, x_ve, probes, method=method, rel_step=rel_step, on_probe=on_probe)
        total = total + (s1 - s0) * tr
        x_vp = (x_ve + (s1 - s0) * eps) / vp_scale(s1)
    return total - dim * math.log(vp_scale(sigmas[-1]) / vp_scale(sigmas[0]))
