"""Fixtures for tests that run against a real ComfyUI checkout (COMFYUI_PATH)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's ``nodes`` module, booted in-process on the CPU with comfy_extras loaded."""
    import _comfy

    return _comfy.boot_comfy()


@pytest.fixture(scope="session")
def tiny(comfy):
    import _comfy

    return _comfy.tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_vae(comfy):
    import _comfy

    return _comfy.tiny_vae(seed=0)


@pytest.fixture(scope="session")
def traj_nodes(comfy):
    from diffusion_sentinel.nodes.trajectory import comfy_nodes

    return comfy_nodes
