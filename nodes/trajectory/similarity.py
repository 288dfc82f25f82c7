"""Similarity Trajectory maths (Menn et al., arXiv 2412.17109): z_k = similarity(x0_k, x0_{k+1}) per batch item.

Pure torch: the ComfyUI node decodes frames or embeds them and hands the tensors here.

Direction: every metric here is a *similarity* (higher = the consecutive predictions agree more; 1 = identical).

Layout of a series (see :func:`frame_steps`): frames F_0..F_N are compared pairwise, z_j = sim(F_j, F_{j+1}).
With ``noise_frame=True`` (the paper's layout), F_0 is the starting noise as the network saw it and F_{j+1} is
the x0 of recorded step j, so a 50-step run gives 50 values and value j belongs to step j. Without it, F_j is the
x0 of recorded step j and a 50-step run gives 49 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ...classifiers.features import late_drawdown, relative_late_drop

METRICS = ("latent_cosine", "pixel_ssim", "dreamsim")


# --------------------------------------------------------------------------- metrics
def consecutive_cosine(frames: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of consecutive frames, flattened per frame. frames [B, N, ...] -> [B, N-1] float64.

    Range [-1, 1]; a zero frame gives NaN (cosine undefined), never a silent 0 or 1.
    """
    if frames.ndim < 3:
        raise ValueError(f"frames must be [batch, frames, ...], got shape {tuple(frames.shape)}")
    if frames.shape[1] < 2:
        raise ValueError("at least 2 frames are needed to compare consecutive frames")
    f = frames.reshape(frames.shape[0], frames.shape[1], -1).to(torch.float64)
    a, b = f[:, :-1], f[:, 1:]
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two [N, D] embedding tables -> [N] float64 (used for DreamSim embeddings)."""
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def gaussian_window(size: int, sigma: float, dtype=torch.float64) -> torch.Tensor:
    """Normalised 2-D Gaussian window [size, size]."""
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of image pairs a, b [N, C, H, W] -> [N].

    Gaussian window (11, sigma 1.5), population statistics, the mean over channels and over the 'valid' window
    positions (no padding): the same definition as scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. Images smaller than the window use the largest odd window that fits.
    Range [-1, 1], 1 = identical.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [N, C, H, W] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n, c, h, w = a.shape
    win = min(win_size, h, w)
    if win % 2 == 0:
        win -= 1
    if win < 1:
        raise ValueError("images are too small for SSIM")
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    x, y = a.to(dtype), b.to(dtype)
    kern = gaussian_window(win, sigma, dtype).to(x.device).expand(c, 1, win, win).contiguous()

    def filt(t):
        return torch.nn.functional.conv2d(t, kern, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x * mu_x
    syy = filt(y * y) - mu_y * mu_y
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


# --------------------------------------------------------------------------- layout
def frame_steps(steps: list[int], noise_frame: bool) -> list[int]:
    """The recorded step each series value belongs to (the step of the later frame of the pair)."""
    return list(steps) if noise_frame else list(steps[1:])


# --------------------------------------------------------------------------- summary
def max_drawdown(z: torch.Tensor) -> float:
    """max_k (max_{j<=k} z_j - z_k): the largest drop from a running peak of the values given. NaNs are skipped.

    The paper names D_max without a retrievable formula; this is the standard maximum drawdown
    (docs/methods.md §1.4). 0 for a non-decreasing series; NaN if no finite value. The pack's D_max applies it to
    the last 60 % of the series only (:func:`d_max`).
    """
    v = z[torch.isfinite(z)].to(torch.float64)
    if v.numel() == 0:
        return float("nan")
    peak = torch.cummax(v, dim=0).values
    return float((peak - v).max())


def d_max(series: torch.Tensor) -> float:
    """D_max of one series [L]: the largest drop from a running peak over its last 60 % (values from
    ``LATE_WINDOW_START`` = 0.4 of the series on). The one definition the whole pack uses (node outputs, the
    artifact rule, reports); the whole-series drawdown is not predictive of artifacts (AUC 0.46 on the labelled
    data), the late one is (0.71)."""
    return float(late_drawdown(series.detach().cpu().double().numpy().reshape(1, -1))[0])


def d_max_relative(series: torch.Tensor, noise_frame: bool) -> float:
    """D_max / (max - min of the series without its noise value): the scale-free late drop the rule scores."""
    v = series.detach().cpu().double().numpy().reshape(1, -1)
    return float(relative_late_drop(v, range_start=1 if noise_frame else 0)[0])


@dataclass
class SeriesSummary:
    minimum: float
    argmin_step: int
    d_max: float
    mean_last_half: float
    d_max_relative: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"min": self.minimum, "argmin_step": self.argmin_step, "d_max": self.d_max,
                "d_max_relative": self.d_max_relative, "mean_last_half": self.mean_last_half}


def summarize(series: torch.Tensor, steps: list[int], skip_first: bool) -> SeriesSummary:
    """Summary of one series [L]: min, the step of the min, D_max (last 60 %), mean of the last half, and D_max
    relative to the series' range.

    ``skip_first`` leaves out value 0 when it compares the starting noise (paper layout): that value is always
    the lowest and says nothing about the image (D_max's window never reaches it). NaN values (non-finite x0)
    are ignored; all-NaN gives NaN / -1.
    """
    if series.ndim != 1 or len(steps) != series.shape[0]:
        raise ValueError("summarize expects one series [L] and one step per value")
    off = 1 if (skip_first and series.shape[0] > 1) else 0
    s = series[off:].to(torch.float64)
    st = steps[off:]
    finite = torch.isfinite(s)
    if not bool(finite.any()):
        return SeriesSummary(float("nan"), -1, float("nan"), float("nan"))
    masked = torch.where(finite, s, torch.full_like(s, math.inf))
    j = int(torch.argmin(masked))
    half = s[s.shape[0] // 2:]
    half = half[torch.isfinite(half)]
    mean_half = float(half.mean()) if half.numel() else float("nan")
    return SeriesSummary(float(s[j]), int(st[j]), d_max(series), mean_half, d_max_relative(series, skip_first))


@dataclass
class SimilaritySeries:
    """SIMILARITY_SERIES: one similarity series per batch item, plus what produced it.

    ``values`` [B, L] float64; ``steps`` the recorded step of each value; ``metric`` one of METRICS;
    ``noise_frame`` whether value 0 compares the starting noise (paper layout); ``finite`` [B] False where the
    trajectory held NaN/inf (those values are NaN); ``source`` the trajectory's metadata (sampler, steps, ...).
    """

    values: torch.Tensor
    steps: list[int]
    metric: str
    noise_frame: bool
    finite: torch.Tensor | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.values.ndim != 2:
            raise ValueError(f"series values must be [batch, length], got {tuple(self.values.shape)}")
        if len(self.steps) != self.values.shape[1]:
            raise ValueError(f"{len(self.steps)} step labels for series of length {self.values.shape[1]}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown similarity metric {self.metric!r}; expected one of {METRICS}")
        if self.finite is None:
            self.finite = torch.isfinite(self.values).all(dim=1)

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        return int(self.values.shape[1])

    def summaries(self) -> list[SeriesSummary]:
        return [summarize(self.values[b], self.steps, skip_first=self.noise_frame) for b in range(self.batch_size)]

    def select(self, indices) -> SimilaritySeries:
        idx = torch.tensor([int(i) for i in indices], dtype=torch.long)
        return SimilaritySeries(self.values.index_select(0, idx), list(self.steps), self.metric, self.noise_frame,
                                self.finite.index_select(0, idx), dict(self.source))

    def as_lists(self) -> list[list[float | None]]:
        """JSON-friendly values (NaN -> None) for ui payloads and files."""
        return [[(float(v) if math.isfinite(float(v)) else None) for v in row] for row in self.values]
