"""The pack's entry point against the real ComfyUI V3 API, and against the newer layout simulated on top of it:
``comfy_api.latest.io`` as a separate public facade module (``_io_public``, re-exporting ``_io``'s public names),
the ``IO``/``UI`` aliases, no ``comfy_io`` alias, and ``comfy_api.latest._io`` not importable from the pack."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _public_facade(name: str, real: types.ModuleType) -> types.ModuleType:
    m = types.ModuleType(name)
    for k, v in vars(real).items():
        if not k.startswith("_"):
            setattr(m, k, v)
    return m


@pytest.fixture
def newer_layout(comfy, monkeypatch):
    import comfy_api.latest as real

    io_public = _public_facade("comfy_api.latest._io_public", real.io)
    ui_public = _public_facade("comfy_api.latest._ui_public", real.ui)
    fake = types.ModuleType("comfy_api.latest")
    for k, v in vars(real).items():
        if not k.startswith("_") and k not in ("io", "ui", "comfy_io"):
            setattr(fake, k, v)
    fake.io, fake.IO, fake.ui, fake.UI = io_public, io_public, ui_public, ui_public
    fake._io_public, fake._ui_public = io_public, ui_public
    monkeypatch.setitem(sys.modules, "comfy_api.latest", fake)
    monkeypatch.setitem(sys.modules, "comfy_api.latest._io_public", io_public)
    monkeypatch.setitem(sys.modules, "comfy_api.latest._ui_public", ui_public)
    monkeypatch.setitem(sys.modules, "comfy_api.latest._io", None)  # private: an import from the pack fails
    monkeypatch.setitem(sys.modules, "comfy_api.latest._ui", None)
    return fake


def _load_pack(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _drop(name: str) -> None:
    for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        sys.modules.pop(k, None)


def _node_ids(classes) -> list[str]:
    return sorted(c.GET_SCHEMA().node_id for c in classes)


def test_entry_point_registers_every_family_on_the_pinned_comfyui(comfy):
    name = "sentinel_entry_pinned"
    try:
        mod = _load_pack(name)
        ext = asyncio.run(mod.comfy_entrypoint())
        classes = asyncio.run(ext.get_node_list())
        assert sys.modules[f"{name}.nodes.registry"].FAILED == {}
        ids = _node_ids(classes)
        fams = sys.modules[f"{name}.nodes.registry"].families()
    finally:
        _drop(name)
    assert set(fams) >= {"artifact", "diffsim", "diversity", "memorization", "trajectory"}
    assert len(ids) == len(set(ids)) and all(i.startswith("Sentinel") for i in ids) and len(ids) >= 20


def test_entry_point_with_the_newer_comfy_api_layout(comfy, newer_layout):
    from diffusion_sentinel.nodes.registry import load_nodes

    expected = _node_ids(load_nodes())
    name = "sentinel_entry_newer"
    try:
        mod = _load_pack(name)
        ext = asyncio.run(mod.comfy_entrypoint())
        classes = asyncio.run(ext.get_node_list())
        failed = dict(sys.modules[f"{name}.nodes.registry"].FAILED)
        assert failed == {}, "families failed to load with the newer layout:\n" + "\n".join(failed.values())
        types_mod = sys.modules[f"{name}.nodes.common.comfy_types"]
        assert types_mod.io is newer_layout.io  # the pack took the facade, not the private module
        ids = _node_ids(classes)
        # the schemas resolve and their V1 view (what /object_info sends) builds through the facade's classes
        infos = {c.GET_SCHEMA().node_id: c.GET_NODE_INFO_V1() for c in classes}
    finally:
        _drop(name)
    assert ids == expected
    assert infos["SentinelSimilarityTrajectory"]["input"]["required"]["trajectory"][0] == "TRAJECTORY"
