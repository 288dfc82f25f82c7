"""Pieces of the DiffSim pipeline that need no ComfyUI: pairing, settings, model-option fingerprints."""

from __future__ import annotations

import pytest
import torch
from diffusion_sentinel.nodes.diffsim.pipeline import Settings, _fingerprint, model_identity, pair_up


def test_pair_up():
    assert pair_up(1, 3) == [(0, 0), (0, 1), (0, 2)]
    assert pair_up(3, 1) == [(0, 0), (1, 0), (2, 0)]
    assert pair_up(2, 2) == [(0, 0), (1, 1)]
    assert pair_up(1, 1) == [(0, 0)]
    with pytest.raises(ValueError, match="3 images and image_b has 2"):
        pair_up(3, 2)
    with pytest.raises(ValueError, match="empty"):
        pair_up(0, 2)


def test_settings():
    assert Settings.parse_mode("DiffSim-S (self-attention)") == "S"
    assert Settings.parse_mode("DiffSim-C (IP-Adapter cross-attention)") == "C"
    with pytest.raises(ValueError):
        Settings.parse_mode("X")
    with pytest.raises(ValueError, match="multiple of 64"):
        Settings(resolution=500)
    with pytest.raises(ValueError):
        Settings(mode="Q")
    assert Settings() == Settings() and hash(Settings()) == hash(Settings())


def test_fingerprint_tracks_patches_by_identity():
    def patch_a(q, k, v, eo):
        return q

    def patch_b(q, k, v, eo):
        return q

    opts = {"transformer_options": {"patches_replace": {"attn1": {("output", 5): patch_a}}}, "x": [1, 2.0, "s"]}
    same = {"x": [1, 2.0, "s"], "transformer_options": {"patches_replace": {"attn1": {("output", 5): patch_a}}}}
    other = {"transformer_options": {"patches_replace": {"attn1": {("output", 5): patch_b}}}, "x": [1, 2.0, "s"]}
    assert _fingerprint(opts) == _fingerprint(same) != _fingerprint(other)
    hash(_fingerprint({"t": torch.zeros(2)}))

    class Patcher:
        patches_uuid = "u1"
        model_options = opts
        object_patches = {}
        hook_patches = {}

    p = Patcher()
    before = model_identity(p)
    p.patches_uuid = "u2"  # a LoRA was added
    assert model_identity(p) != before
