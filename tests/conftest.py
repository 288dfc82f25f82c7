"""Test set-up: the pack is imported as the package ``diffusion_sentinel`` (its pure modules need no ComfyUI);
integration tests find a ComfyUI checkout through COMFYUI_PATH and are skipped, with a printed notice, without it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SENTINEL_SHARED_DATA", ROOT.parent / "shared" / "data"))
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")


def _install_package_alias() -> None:
    """Make ``import diffusion_sentinel.<sub>`` work without running the pack's ComfyUI entry point."""
    if "diffusion_sentinel" in sys.modules:
        return
    spec = importlib.machinery.ModuleSpec("diffusion_sentinel", None, is_package=True)
    mod = importlib.util.module_from_spec(spec)
    mod.__path__ = [str(ROOT)]
    sys.modules["diffusion_sentinel"] = mod


_install_package_alias()
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (_comfy.py)


def comfy_available() -> bool:
    return bool(COMFYUI_PATH) and os.path.isfile(os.path.join(COMFYUI_PATH, "main.py"))


def pytest_report_header(config):
    if comfy_available():
        return f"ComfyUI integration tests: ON (COMFYUI_PATH={COMFYUI_PATH})"
    return ("ComfyUI integration tests: SKIPPED - COMFYUI_PATH is not set to a ComfyUI checkout "
            "(see README, 'Integration tests')")


def pytest_collection_modifyitems(config, items):
    integ = Path(__file__).resolve().parent / "integration"
    skip = pytest.mark.skip(reason="integration test: set COMFYUI_PATH to a ComfyUI checkout to run it")
    for item in items:
        if integ in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            if not comfy_available():
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "integration" in str(getattr(r, "longrepr", ""))]
    if not comfy_available():
        terminalreporter.write_line(
            f"NOTE: {len(skipped)} ComfyUI integration test(s) were SKIPPED because COMFYUI_PATH is not set. "
            "Run them with a ComfyUI checkout: see README.md, 'Integration tests'.", yellow=True, bold=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
