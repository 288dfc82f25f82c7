"""Series from trajectories (noise-frame layout, NaN flagging, the pixel path with a stand-in VAE) and charts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.common.plot import line_chart
from diffusion_sentinel.nodes.trajectory.frames import series_from_trajectory, trajectory_frames
from diffusion_sentinel.nodes.trajectory.similarity import consecutive_cosine, ssim
from diffusion_sentinel.nodes.trajectory.trajectory import Trajectory, TrajectoryError


def make(b=2, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 1, 4, 4, 4, generator=g)
    x0 = base + 0.3 * torch.randn(b, t, 4, 4, 4, generator=g)  # correlated frames
    return Trajectory(x0=x0, sigmas=torch.linspace(8, 0.2, t), noise_frame=torch.randn(b, 4, 4, 4, generator=g),
                      meta={"sampler": "euler", "steps": t, "latent_scale_factor": 0.5, "latent_format": "NoSuch"})


class FakeVAE:
    """Decodes a [n, 4, h, w] latent to [n, 2h, 2w, 3] images in 0..1, deterministically."""

    def __init__(self):
        self.calls = []

    def decode(self, z):
        self.calls.append(z.shape[0])
        img = torch.sigmoid(z[:, :3]).repeat_interleave(2, -1).repeat_interleave(2, -2)
        return img.permute(0, 2, 3, 1)


def test_latent_cosine_paper_layout():
    tr = make()
    s = series_from_trajectory(tr, "latent_cosine", noise_frame=True)
    assert s.values.shape == (2, 6) and s.steps == [0, 1, 2, 3, 4, 5] and s.noise_frame
    expect = consecutive_cosine(torch.cat([tr.noise_frame[:, None], tr.x0], 1))
    assert torch.allclose(s.values, expect)
    s2 = series_from_trajectory(tr, "latent_cosine", noise_frame=False)
    assert s2.values.shape == (2, 5) and s2.steps == [1, 2, 3, 4, 5]
    assert torch.allclose(s2.values, consecutive_cosine(tr.x0))
    assert s.source["sampler"] == "euler"


def test_nonfinite_x0_is_flagged_not_fatal():
    tr = make()
    tr.x0[1, 3, 0, 0, 0] = float("nan")
    s = series_from_trajectory(tr, "latent_cosine", noise_frame=True)
    assert s.finite.tolist() == [True, False]
    # frame 4 of the layout (x0 step 3) is bad: values 3 and 4 are NaN, the rest is computed
    assert [math.isnan(v) for v in s.values[1].tolist()] == [False, False, False, True, True, False]
    assert torch.isfinite(s.values[0]).all()
    tr.x0[0, 2] = float("inf")
    s = series_from_trajectory(tr, "latent_cosine", noise_frame=False)
    assert s.finite.tolist() == [False, False]


def test_pixel_ssim_with_chunked_decoding_matches_direct_computation():
    tr = make(t=7)
    vae = FakeVAE()
    s = series_from_trajectory(tr, "pixel_ssim", noise_frame=True, vae=vae, decode_batch=3)
    frames = torch.cat([tr.noise_frame[:, None], tr.x0], 1)
    for b in range(2):
        imgs = vae.decode(frames[b] / 0.5).permute(0, 3, 1, 2)  # latent_out: / scale factor
        expect = ssim(imgs[:-1], imgs[1:]).double()
        assert torch.allclose(s.values[b], expect, atol=1e-6)
    assert max(vae.calls[:3]) <= 3  # decoded in chunks of decode_batch


def test_pixel_metrics_need_a_vae_and_enough_steps():
    with pytest.raises(ValueError, match="connect the VAE"):
        series_from_trajectory(make(), "pixel_ssim")
    with pytest.raises(ValueError, match="unknown metric"):
        series_from_trajectory(make(), "psnr")
    one = Trajectory(x0=torch.zeros(1, 1, 4, 2, 2), sigmas=torch.ones(1))
    with pytest.raises(TrajectoryError, match="at least 2"):
        series_from_trajectory(one, "latent_cosine")
    nf = make()
    nf.noise_frame = None
    with pytest.raises(TrajectoryError, match="noise_frame"):
        trajectory_frames(nf, noise_frame=True)


def test_dreamsim_path_uses_the_embedder():
    tr = make(t=4)

    def embed(images):  # stand-in embedder: mean colour per image
        return images.mean(dim=(1, 2))

    s = series_from_trajectory(tr, "dreamsim", noise_frame=False, vae=FakeVAE(), embedder=embed, decode_batch=2)
    assert s.values.shape == (2, 3) and s.metric == "dreamsim"
    imgs = FakeVAE().decode(tr.x0[0] / 0.5)
    e = imgs.mean(dim=(1, 2)).double()
    cos = torch.nn.functional.cosine_similarity(e[:-1], e[1:], dim=-1)
    assert torch.allclose(s.values[0], cos)


def test_line_chart_shape_and_content():
    img = line_chart([[0.2, 0.9, float("nan"), 0.95], [0.3, 0.8, 0.85, 0.99]], x=[0, 1, 2, 3],
                     labels=["a", "b"], title="t", markers=[1, None], width=400, height=260)
    assert img.shape == (260, 400, 3) and img.dtype == np.float32
    assert 0 <= img.min() and img.max() <= 1
    assert (img < 0.99).any(axis=2).sum() > 2000  # curves, axes and text were drawn
    blank = line_chart([[0.5]], width=200, height=120)
    assert blank.shape == (120, 200, 3)


def _ink_columns(text, font):
    """Which pixel columns of ``text`` drawn by plot.draw_text hold ink."""
    from diffusion_sentinel.nodes.common.plot import draw_text, text_width
    from PIL import Image, ImageDraw

    w = int(text_width(text, font)) + 8
    img = Image.new("L", (w, 24), 255)
    draw_text(ImageDraw.Draw(img), (2, 4), text, 0, font)
    return (np.asarray(img) < 160).any(axis=0)


def test_chart_text_keeps_its_spaces():
    """"noise value not shown" was drawn as "noisevaluenotshown": Pillow's default FreeType font has 2 px spaces."""
    from diffusion_sentinel.nodes.common.plot import default_font, text_width, word_gap

    font = default_font()
    assert word_gap(font) >= 0.4 * getattr(font, "size", 10)
    assert text_width("not shown", font) - text_width("notshown", font) >= 3.9
    ink = _ink_columns("not shown", font)
    cols = np.nonzero(ink)[0]
    gaps = np.diff(cols) - 1  # blank columns between consecutive inked columns
    n_end = int(np.ceil(2 + font.getlength("not")))
    widest_inside_word = max(gaps[(cols[:-1] < n_end - 3)], default=0)
    assert gaps.max() >= 4 and gaps.max() > widest_inside_word  # the widest blank run is the space
    # and the chart draws its title with those gaps (the title's first word starts where draw_text puts it)
    img = line_chart([[0.5, 0.6]], title="aa bb cc", width=200, height=120)
    ink = (img[8:20, 64:140] < 0.6).any(axis=(0, 2))
    cols = np.nonzero(ink)[0]
    runs = np.diff(cols) - 1
    assert (runs >= 4).sum() == 2  # three words, two word gaps of at least 4 px
