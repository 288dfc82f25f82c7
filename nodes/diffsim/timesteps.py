"""DiffSim's timestep, given the paper's way, and its conversion to a training noise level. Pure.

The paper's "t" (900 for style, 750 for instance/IP, 600 for CUTE, 500 for NIGHTS) is an index into the
descending list of 1000 inference timesteps of the pipeline's default scheduler, not a noise level: a high t
means little noise (docs/methods.md §2.2, §2.9.1). What it maps to depends on that scheduler:

- ``pndm`` (SD1.x, the paper's model; diffusers PNDM with skip_prk_steps and steps_offset=1): the list is
  [1000, 999, 999, 998, ..., 1], so the released code ran noise level 1001 - t (t >= 2; t=1 gives 999).
  t=900 -> 101 (alpha_bar 0.893, sigma 0.346).
- ``leading`` (SDXL's Euler scheduler with "leading" spacing and steps_offset=1, and the DiT script):
  [1000, 999, ..., 1] clamped to the last training step, i.e. noise level 1000 - t.

We reproduce what the released code ran: ``auto`` picks ``pndm`` for SD1.x models (the paper's) and
``leading`` (the plain "noise level = 1000 - t" reading, and what the SDXL script ran) for every other family. The one-step difference is small (t=900: sigma 0.346 vs 0.344) but the
presets were tuned on SD1.5 with PNDM, so that is the default there.
"""

from __future__ import annotations

TIMESTEP_PRESETS: dict[str, int] = {
    "style (t=900)": 900,
    "instance/IP (t=750)": 750,
    "CUTE (t=600)": 600,
    "NIGHTS (t=500)": 500,
}
CUSTOM = "custom (use t)"
CONVENTIONS = ("auto", "pndm (1001 - t)", "leading (1000 - t)")
NUM_TRAIN_TIMESTEPS = 1000


def preset_t(preset: str, t: int) -> int:
    """The paper's t for a preset name, or ``t`` itself for the custom entry."""
    if preset == CUSTOM:
        return int(t)
    if preset not in TIMESTEP_PRESETS:
        raise ValueError(f"unknown timestep preset {preset!r}; choose one of {[*TIMESTEP_PRESETS, CUSTOM]}")
    return TIMESTEP_PRESETS[preset]


def convention_for_family(family: str) -> str:
    """The scheduler convention the paper's code used for a model family name (ComfyUI model config class)."""
    return "pndm" if family.upper().startswith("SD15") else "leading"


def resolve_convention(convention: str, family: str) -> str:
    c = convention.split(" ", 1)[0]
    if c == "auto":
        return convention_for_family(family)
    if c not in ("pndm", "leading"):
        raise ValueError(f"unknown timestep convention {convention!r}; choose one of {list(CONVENTIONS)}")
    return c


def noise_timestep(t_paper: int, convention: str = "pndm") -> int:
    """The 0-based training timestep (index into the 1000 noise levels) the paper's t corresponds to."""
    t = int(t_paper)
    if not 1 <= t <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"the paper's t must be between 1 and {NUM_TRAIN_TIMESTEPS} (high t = little noise); got {t}")
    c = convention.split(" ", 1)[0]
    if c == "pndm":
        return min(NUM_TRAIN_TIMESTEPS - 1, NUM_TRAIN_TIMESTEPS + 1 - t)
    if c == "leading":
        return min(NUM_TRAIN_TIMESTEPS - 1, NUM_TRAIN_TIMESTEPS - t)
    raise ValueError(f"unknown timestep convention {convention!r}; use 'pndm' or 'leading'")
