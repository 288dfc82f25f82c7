"""Issue 12/9: ComfyUI titles an error with ``type(exc).__module__ + "." + qualname``; for a class defined in the pack
that is the absolute path of the custom_nodes folder. Every exception class the DiffSim and diversity families raise
to the user sets ``__module__ = "sentinel"`` (or is a built-in)."""

from __future__ import annotations

import inspect

import pytest
from diffusion_sentinel.nodes.diffsim import blocks, capture, ip_adapter
from diffusion_sentinel.nodes.diversity import vendi


@pytest.mark.parametrize("module", [blocks, capture, ip_adapter, vendi])
def test_pack_exception_classes_have_a_short_module(module):
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, BaseException) and c.__qualname__ in vars(module)]
    assert classes, module.__name__
    for c in classes:
        assert c.__module__ == "sentinel", c
        assert f"{c.__module__}.{c.__qualname__}" == f"sentinel.{c.__name__}"
