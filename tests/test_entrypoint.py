"""The pack's entry point without ComfyUI, and a static check that the pack reaches ComfyUI's V3 API only through
public names that exist in 0.3.64 and in newer versions (``comfy_api.latest.io`` is ``_io`` in 0.3.64 and
``_io_public`` later; the 0.3.64 alias ``comfy_io`` is gone). tests/integration/test_entrypoint_comfy.py loads the pack
against a simulated newer layout."""

from __future__ import annotations

import ast
import importlib.util
import logging
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Public names of comfy_api.latest present in 0.3.64 and in the newest source read (see CONTRIBUTING.md).
PUBLIC_LATEST = {"io", "ui", "IO", "UI", "ComfyExtension", "Input", "InputImpl", "Types", "ComfyAPI", "ComfyAPISync"}


def _pack_sources():
    return sorted(p for p in [ROOT / "__init__.py", *(ROOT / "nodes").rglob("*.py")] if "__pycache__" not in p.parts)


def _load_pack_as(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(k, None)
    return mod


def test_pack_imports_comfy_api_only_through_public_names():
    bad = []
    for path in _pack_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("comfy_api"):
                names = {a.name for a in node.names}
                if node.module != "comfy_api.latest" or not names <= PUBLIC_LATEST:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {sorted(names)}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("comfy_api") and a.name != "comfy_api.latest":
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}")
            elif isinstance(node, ast.Attribute) and node.attr == "comfy_io":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: .comfy_io (0.3.64-only alias)")
    assert not bad, "private or version-specific comfy_api imports:\n" + "\n".join(bad)


def test_entry_point_outside_comfyui_registers_nothing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "comfy_api", None)  # `import comfy_api...` now raises ImportError
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    monkeypatch.delitem(sys.modules, "comfy", raising=False)
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    with caplog.at_level(logging.ERROR, logger="diffusion_sentinel"):
        mod = _load_pack_as("sentinel_entry_tooling")
    assert mod.ComfyExtension is None and not hasattr(mod, "comfy_entrypoint")
    assert mod.WEB_DIRECTORY == "./web"
    assert not caplog.records  # tooling import: silent


def test_entry_point_in_a_comfyui_without_v3_api_says_what_to_do(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "comfy_api", None)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))  # "inside ComfyUI"
    with caplog.at_level(logging.ERROR, logger="diffusion_sentinel"):
        mod = _load_pack_as("sentinel_entry_old")
    assert not hasattr(mod, "comfy_entrypoint")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "needs ComfyUI 0.3.64 or newer" in msgs[0] and "Update ComfyUI" in msgs[0]


@pytest.mark.parametrize("layout", ["0.3.64", "newer"])
def test_entry_point_with_a_fake_v3_api(monkeypatch, layout):
    """A minimal fake comfy_api.latest (no ComfyUI): the entry point returns an extension built on its
    ComfyExtension, in both layouts (io as ``_io`` + ``comfy_io`` alias, or as ``_io_public`` + ``IO`` alias)."""

    class FakeExtension:
        pass

    latest = types.ModuleType("comfy_api.latest")
    io_mod = types.ModuleType("comfy_api.latest._io" if layout == "0.3.64" else "comfy_api.latest._io_public")
    latest.io = io_mod
    if layout == "0.3.64":
        latest.comfy_io = io_mod
    else:
        latest.IO = io_mod
    latest.ComfyExtension = FakeExtension
    pkg = types.ModuleType("comfy_api")
    pkg.latest = latest
    monkeypatch.setitem(sys.modules, "comfy_api", pkg)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    mod = _load_pack_as(f"sentinel_entry_fake_{layout.replace('.', '_')}")
    import asyncio

    ext = asyncio.run(mod.comfy_entrypoint())
    assert isinstance(ext, FakeExtension) and hasattr(ext, "get_node_list")
