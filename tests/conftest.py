"""Test set-up: the pack is imported as the package ``diffusion_sentinel`` (its pure modules need no ComfyUI);
integration tests find a ComfyUI checkout through COMFYUI_PATH and are skipped, with a printed notice, without it.

``SENTINEL_REQUIRE_INTEGRATION=1`` (CI) turns every skip for a missing prerequisite (ComfyUI, the tiny checkpoint,
Chromium, the newest frontend) into a failure; see tests/_prereq.py. ``SENTINEL_TEST_DEVICE`` / ``_DTYPE`` /
``_TF32`` choose the device the integration tests run on (tests/_device.py); the header says what was used.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

# OpenMP threads that spin while they wait make torch 10-100x slower as soon as another process wants a core (a
# 2-core CI machine running a test server, a shared dev machine): a 6-step KSampler on the tiny UNet took 12.6 s
# instead of 0.19 s here. Passive waiting costs next to nothing. It must be set before torch is first imported;
# test servers and subprocesses inherit it. Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (_comfy.py, _device.py, _prereq.py)

import _device  # noqa: E402
import _prereq  # noqa: E402


def comfy_available() -> bool:
    return _prereq.comfy_available()


def pytest_report_header(config):
    lines = []
    if comfy_available():
        lines.append(f"ComfyUI integration tests: ON (COMFYUI_PATH={COMFYUI_PATH})")
    else:
        lines.append("ComfyUI integration tests: SKIPPED - COMFYUI_PATH is not set to a ComfyUI checkout "
                     "(see CONTRIBUTING.md, 'Integration tests')")
    if _prereq.REQUIRED:
        lines.append("SENTINEL_REQUIRE_INTEGRATION=1: a missing prerequisite (ComfyUI, checkpoint, chromium, "
                     "frontend) FAILS its tests instead of skipping them")
    try:
        lines.append(_device.describe())
    except Exception as e:  # a header must never stop the run (e.g. torch missing in a bare venv)
        lines.append(f"test device: {_device.RAW} (torch not importable: {e})")
    return lines


def pytest_configure(config):
    _device.apply_tf32()


def pytest_collection_modifyitems(config, items):
    integ = Path(__file__).resolve().parent / "integration"
    in_integ = [it for it in items if integ in Path(str(it.fspath)).resolve().parents]
    if in_integ and not comfy_available() and _prereq.REQUIRED:
        raise pytest.UsageError(
            f"SENTINEL_REQUIRE_INTEGRATION=1 but COMFYUI_PATH={COMFYUI_PATH!r} is not a ComfyUI checkout (no main.py): "
            f"{len(in_integ)} integration tests would be skipped. Build one with "
            "../shared/tools/comfyui/setup_comfyui.sh --models tiny (or run .ci/run).")
    skip = pytest.mark.skip(reason="integration test: set COMFYUI_PATH to a ComfyUI checkout to run it")
    for item in in_integ:
        item.add_marker(pytest.mark.integration)
        if not comfy_available():
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under SENTINEL_REQUIRE_INTEGRATION=1 a skip for a missing prerequisite is a failure (safety net for skips
    that do not go through _prereq.require)."""
    outcome = yield
    rep = outcome.get_result()
    if not (_prereq.REQUIRED and rep.skipped) or getattr(rep, "wasxfail", None) is not None:
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
    if _prereq.is_prereq_skip(reason):
        rep.outcome = "failed"
        rep.longrepr = (f"SENTINEL_REQUIRE_INTEGRATION=1: this test was skipped for a missing prerequisite, which "
                        f"CI counts as a failure.\nSkip reason: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])

    def _reason(r):
        lr = getattr(r, "longrepr", None)
        reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
        return reason.removeprefix("Skipped: ")

    n_integ = sum(1 for r in skipped if "set COMFYUI_PATH" in _reason(r))
    if not comfy_available() and n_integ:
        terminalreporter.write_line(
            f"NOTE: {n_integ} ComfyUI integration test(s) were SKIPPED because COMFYUI_PATH is not set. "
            "Run them with a ComfyUI checkout: see CONTRIBUTING.md, 'Integration tests'.", yellow=True, bold=True)
    prereq = Counter(_reason(r) for r in skipped if _prereq.is_prereq_skip(_reason(r)) and "set COMFYUI_PATH" not in _reason(r))
    for reason, n in prereq.most_common():
        terminalreporter.write_line(f"NOTE: {n} test(s) SKIPPED: {reason}", yellow=True, bold=True)
    terminalreporter.write_line(_device_line(), bold=False)


def _device_line() -> str:
    try:
        return "(" + _device.describe() + ")"
    except Exception:
        return f"(test device: {_device.RAW})"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
