"""The paper's t -> training noise level, checked against the schedulers' own timestep lists (rebuilt here)."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.diffsim.timesteps import (
    CUSTOM,
    TIMESTEP_PRESETS,
    convention_for_family,
    noise_timestep,
    preset_t,
    resolve_convention,
)


def pndm_timesteps_1000():
    """diffusers PNDMScheduler.set_timesteps(1000) with skip_prk_steps=True, steps_offset=1 (SD1.5's scheduler)."""
    ts = list(range(0, 1000))  # arange(0, N) * (1000 // N) with N = 1000
    ts = [t + 1 for t in ts]  # steps_offset
    plms = ts[:-1] + ts[-2:-1] + ts[-1:]
    return plms[::-1]  # [1000, 999, 999, 998, ..., 1]


def euler_leading_timesteps_1000():
    """EulerDiscreteScheduler, timestep_spacing='leading', steps_offset=1 (SDXL's scheduler); sigmas are
    interpolated at these timesteps, so 1000 is clamped to the last training step 999."""
    return [min(999, t) for t in [t + 1 for t in range(0, 1000)][::-1]]


def test_pndm_convention_is_what_the_released_code_ran():
    ts = pndm_timesteps_1000()
    assert ts[:4] == [1000, 999, 999, 998] and ts[-1] == 1 and len(ts) == 1001
    for t in range(1, 1001):
        assert noise_timestep(t, "pndm") == min(999, ts[t]), t


def test_leading_convention_matches_sdxl_euler():
    ts = euler_leading_timesteps_1000()
    for t in range(1, 1000):
        assert noise_timestep(t, "leading") == ts[t], t
    assert noise_timestep(1000, "leading") == 0


@pytest.mark.parametrize("t,pndm,leading", [(900, 101, 100), (750, 251, 250), (600, 401, 400), (500, 501, 500),
                                            (1, 999, 999)])
def test_presets(t, pndm, leading):
    assert noise_timestep(t, "pndm") == pndm
    assert noise_timestep(t, "leading (1000 - t)") == leading


def test_appendix_b_schedule_values():
    """SD's scaled_linear schedule (beta 0.00085..0.012): alpha_bar and sigma at the preset noise levels."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    sigma = ((1 - abar) / abar).sqrt()
    for t_paper, a, s in [(900, 0.8930, 0.3462), (750, 0.6722, 0.6984), (600, 0.4229, 1.1682), (500, 0.2750, 1.6237)]:
        i = noise_timestep(t_paper, "pndm")
        assert float(abar[i]) == pytest.approx(a, abs=1e-4)
        assert float(sigma[i]) == pytest.approx(s, abs=1e-4)


def test_preset_names_and_custom():
    assert preset_t("style (t=900)", 1) == 900
    assert preset_t(CUSTOM, 321) == 321
    assert set(TIMESTEP_PRESETS.values()) == {900, 750, 600, 500}
    with pytest.raises(ValueError):
        preset_t("fast", 1)


def test_auto_convention_by_family_and_bad_values():
    assert convention_for_family("SD15") == "pndm"
    assert convention_for_family("SDXL") == "leading" and convention_for_family("SDXLRefiner") == "leading"
    assert convention_for_family("SD15_instructpix2pix") == "pndm" and convention_for_family("SD20") == "leading"
    assert resolve_convention("auto", "SD15") == "pndm"
    assert resolve_convention("leading (1000 - t)", "SD15") == "leading"
    for bad in (0, 1001, -5):
        with pytest.raises(ValueError, match="between 1 and 1000"):
            noise_timestep(bad)
    with pytest.raises(ValueError):
        noise_timestep(500, "ddim")
