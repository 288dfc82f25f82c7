"""Optional DreamSim backend (the similarity the Similarity Trajectory paper used; docs/methods.md §1.1).

DreamSim (MIT, ``pip install dreamsim``) is not a dependency of the pack. Its weights are never downloaded by us:
put the files of DreamSim's ``pretrained.zip`` release in ComfyUI's ``models/dreamsim`` folder. Any attempt of
the package to download is stopped with a message that says where the files go.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger("diffusion_sentinel")

REQUIRED_FILES = (
    "dino_vitb16_pretrain.pth",
    "open_clip_vitb16_pretrain.pth.tar",
    "clip_vitb16_pretrain.pth.tar",
    "dino_vitb16_lora",
    "open_clip_vitb16_lora",
    "clip_vitb16_lora",
)
_CACHE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


class DreamSimUnavailable(RuntimeError):
    """DreamSim cannot be used here; the message says what to install or where to put the weights."""

    __module__ = "sentinel"  # ComfyUI titles errors with module + name: keep it short


def dreamsim_folder() -> str:
    import folder_paths

    paths = folder_paths.get_folder_paths("dreamsim") if "dreamsim" in folder_paths.folder_names_and_paths else []
    return paths[0] if paths else os.path.join(folder_paths.models_dir, "dreamsim")


def missing_files(folder: str) -> list[str]:
    return [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(folder, f))]


@contextlib.contextmanager
def _no_downloads(folder: str):
    import torch.hub

    original = torch.hub.download_url_to_file

    def refuse(url, *a, **k):
        raise DreamSimUnavailable(
            f"DreamSim tried to download {url}. Diffusion Sentinel never downloads weights: unzip DreamSim's "
            f"pretrained.zip (github.com/ssundaram21/dreamsim releases) into {folder} and run again."
        )

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def load_dreamsim_embedder(device: torch.device | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images [N, H, W, 3] in 0..1 -> DreamSim embeddings [N, D] (cached per device)."""
    import comfy.model_management

    device = device or comfy.model_management.get_torch_device()
    key = str(device)
    if key in _CACHE:
        return _CACHE[key]
    try:
        from dreamsim import dreamsim
    except ImportError as e:
        raise DreamSimUnavailable(
            "the 'dreamsim' metric needs the optional DreamSim package: run `pip install dreamsim` in ComfyUI's "
            "Python environment, put its weights in models/dreamsim, and restart ComfyUI. "
            "Or choose latent_cosine (no decode) or pixel_ssim."
        ) from e
    folder = dreamsim_folder()
    missing = missing_files(folder)
    if missing:
        raise DreamSimUnavailable(
            f"DreamSim weights not found in {folder} (missing: {', '.join(missing)}). Unzip DreamSim's "
            "pretrained.zip (github.com/ssundaram21/dreamsim releases) there; the pack never downloads weights."
        )
    with _no_downloads(folder):
        model, _ = dreamsim(pretrained=True, device=str(device), cache_dir=folder)
    model.eval()

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False,
                                            antialias=True).clamp(0, 1)
        return model.embed(x).float().cpu().reshape(x.shape[0], -1)

    _CACHE[key] = embed
    return embed
