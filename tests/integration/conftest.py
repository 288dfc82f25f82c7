"""Fixtures for tests that run against a real ComfyUI checkout (COMFYUI_PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = "sd15-tiny-random.safetensors"


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's ``nodes`` module, booted in-process on the test device (SENTINEL_TEST_DEVICE) with comfy_extras."""
    import _comfy

    return _comfy.boot_comfy()


@pytest.fixture(scope="session")
def tiny(comfy):
    import _comfy

    m = _comfy.tiny_model(seed=0)
    _comfy.warm_up(m)  # CUDA: the first sampling call of a process may differ from later ones; CPU: no-op
    return m


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
    from _prereq import require
    from _server import ComfyServer, find_checkpoint

    ckpt = find_checkpoint(TINY)
    require("checkpoint", ckpt is not None,
            f"{TINY} not found: build it with ../shared/tools/comfyui/setup_comfyui.sh --models tiny (or set COMFY_MODELS)")
    base = tmp_path_factory.mktemp("comfy-base")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"sentinel_tests:\n    base_path: {Path(ckpt).parent.parent}\n    checkpoints: checkpoints\n")
    srv = ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml)).start()
    srv.models = base / "models"  # = ComfyUI's models_dir for this server: tests may add files at any time
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def vit_l_clip_vision(server, comfy):
    """Name of a random ViT-L/14 CLIP vision file in the shared server's models/clip_vision (written once)."""
    import _comfy

    name = "vitl-random-test.safetensors"
    folder = server.models / "clip_vision"
    folder.mkdir(parents=True, exist_ok=True)
    _comfy.write_random_vit_l(folder / name, seed=0)
    yield name
    (folder / name).unlink(missing_ok=True)  # 610 MB: do not leave it in pytest's kept temp folders


@pytest.fixture(scope="session")
def object_info(server):
    return server.get("/object_info", timeout=60)
