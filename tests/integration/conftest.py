"""Fixtures for tests that run against a real ComfyUI checkout (COMFYUI_PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = "sd15-tiny-random.safetensors"


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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real ComfyUI server with this checkout of the pack linked into its custom_nodes (own port and folders)."""
    from _server import ComfyServer, find_checkpoint

    ckpt = find_checkpoint(TINY)
    if ckpt is None:
        pytest.skip(f"{TINY} not found: build it with ../shared/tools/comfyui/setup_comfyui.sh --models tiny "
                    "(or set COMFY_MODELS)")
    base = tmp_path_factory.mktemp("comfy-base")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"sentinel_tests:\n    base_path: {Path(ckpt).parent.parent}\n    checkpoints: checkpoints\n")
    srv = ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def object_info(server):
    return server.get("/object_info", timeout=60)
