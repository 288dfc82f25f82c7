"""Prerequisites of the integration tests (ComfyUI, the tiny checkpoint, Chromium, the newest frontend) and one way
to skip for a missing one that CI can turn into a failure.

``SENTINEL_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``) makes every ``require(...)`` that is not met fail the test
instead of skipping it, so a CI run can never go green with the integration tests silently left out. Without it a
missing prerequisite skips with a message that says what to install.

Stdlib only: the pure suite imports this without ComfyUI or torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED = os.environ.get("SENTINEL_REQUIRE_INTEGRATION", "").strip().lower() in ("1", "true", "yes", "on")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SENTINEL_SHARED", ROOT.parent / "shared"))
TAG = "prerequisite missing"
# Words in a skip reason that mean "a prerequisite CI promised is missing" (safety net for skips that do not go
# through require(); conftest.py turns such skips into failures when REQUIRED).
PREREQ_WORDS = ("prerequisite missing", "COMFYUI_PATH", "ComfyUI checkout", "chromium", "chromedriver",
                "sd15-tiny-random", "ui_check.py", "SENTINEL_FRONTEND_NEW", "SENTINEL_NEW_FRONTEND",
                "comfyui-frontend-package", "newest frontend", "node is not on PATH", "Node >= 18")


def require(what: str, ok: bool, why: str = "") -> None:
    """Skip (or, under SENTINEL_REQUIRE_INTEGRATION=1, fail) the calling test unless ``ok``.

    ``what``: "comfyui", "checkpoint", "chromium", "frontend-new", ...; ``why``: what is missing and how to get it.
    """
    if ok:
        return
    msg = f"{TAG}: {what}" + (f" ({why})" if why else "")
    if REQUIRED:
        pytest.fail(msg + " - SENTINEL_REQUIRE_INTEGRATION=1 asks for every integration test to run", pytrace=False)
    pytest.skip(msg)


def is_prereq_skip(reason: str) -> bool:
    low = reason.lower()
    return any(w.lower() in low for w in PREREQ_WORDS)


def comfyui_path() -> str:
    return os.environ.get("COMFYUI_PATH", "")


def comfy_available() -> bool:
    p = comfyui_path()
    return bool(p) and os.path.isfile(os.path.join(p, "main.py"))


def chromium() -> tuple[str | None, str | None]:
    """(chromium binary, chromedriver) from SENTINEL_CHROMIUM / SENTINEL_CHROMEDRIVER or Debian's packages."""
    browser = os.environ.get("SENTINEL_CHROMIUM") or next(
        (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
         if p and os.path.exists(p)), None)
    driver = os.environ.get("SENTINEL_CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def require_chromium() -> tuple[str, str]:
    browser, driver = chromium()
    require("chromium", bool(browser and driver),
            "chromium and chromedriver are not installed: apt-get install chromium chromium-driver, "
            "or ../shared/tools/comfyui/setup_comfyui.sh --chromium")
    return browser, driver


def node() -> str | None:
    """Node.js >= 18 (the web extension's JS tests use its built-in test runner), or None."""
    exe = shutil.which("node")
    if not exe:
        return None
    import subprocess

    r = subprocess.run([exe, "-e", "process.exit(+process.versions.node.split('.')[0] >= 18 ? 0 : 1)"], capture_output=True)
    return exe if r.returncode == 0 else None


def require_node() -> str:
    exe = node()
    require("node", exe is not None, "node is not on PATH or older than 18: apt-get install nodejs")
    return exe


def ui_check_script() -> Path:
    return SHARED / "tools" / "comfyui" / "ui_check.py"


def frontend_new() -> str | None:
    """Static folder of the newest frontend (comfyui-frontend-package 1.58.1): SENTINEL_FRONTEND_NEW (CI also
    exports the same path as SENTINEL_NEW_FRONTEND)."""
    p = os.environ.get("SENTINEL_FRONTEND_NEW", "") or os.environ.get("SENTINEL_NEW_FRONTEND", "")
    return p if p and os.path.isfile(os.path.join(p, "index.html")) else None


def require_frontend_new() -> str:
    p = frontend_new()
    require("frontend-new", p is not None,
            "set SENTINEL_FRONTEND_NEW to the static/ folder of comfyui-frontend-package 1.58.1 "
            "(pip download --no-deps comfyui-frontend-package==1.58.1, unzip; .ci/run does this)")
    return p
