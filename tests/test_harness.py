"""The test harness itself (tests/conftest.py, tests/_prereq.py, tests/_device.py): the pure run skips the
integration tests with a notice, SENTINEL_REQUIRE_INTEGRATION=1 turns every skip for a missing prerequisite into a
failure, and the device/dtype settings map to the right ComfyUI flags. Runs pytest in subprocesses (no ComfyUI)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HARNESS_ENV = ("COMFYUI_PATH", "SENTINEL_REQUIRE_INTEGRATION", "PYTEST_ADDOPTS", "SENTINEL_TEST_DEVICE",
               "SENTINEL_TEST_DTYPE", "SENTINEL_TEST_TF32")


def _pytest(args, cwd, **env):
    e = {k: v for k, v in os.environ.items() if k not in HARNESS_ENV}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300)


def test_pure_run_skips_integration_tests_with_a_notice():
    r = _pytest(["tests/integration/test_entrypoint_comfy.py", "-q", "-rs"], ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "2 skipped" in out and "set COMFYUI_PATH to a ComfyUI checkout" in out
    assert "NOTE: 2 ComfyUI integration test(s) were SKIPPED because COMFYUI_PATH is not set" in out
    assert "(test device: SENTINEL_TEST_DEVICE=cpu" in out


def test_required_integration_without_comfyui_stops_the_run():
    r = _pytest(["tests/integration/test_entrypoint_comfy.py", "-q"], ROOT, SENTINEL_REQUIRE_INTEGRATION="1")
    out = r.stdout + r.stderr
    assert r.returncode == 4, out[-3000:]  # pytest's usage error: nothing ran
    assert "SENTINEL_REQUIRE_INTEGRATION=1 but COMFYUI_PATH" in out and "2 integration tests would be skipped" in out


SKIPPERS = '''
import pytest
import _prereq

def test_require_helper():
    _prereq.require("chromium", False, "chromium and chromedriver are not installed")

def test_bare_skip_for_a_prerequisite():
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")

def test_bare_skip_for_the_checkpoint():
    pytest.skip("sd15-tiny-random.safetensors not found")

def test_unrelated_skip():
    pytest.skip("dreamsim is installed here")

def test_passes():
    assert _prereq.REQUIRED in (True, False)
'''


@pytest.mark.parametrize("required", [False, True])
def test_prerequisite_skips_fail_only_when_required(tmp_path, required):
    (tmp_path / "test_skippers.py").write_text(SKIPPERS)
    env = {"PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if required:
        env["SENTINEL_REQUIRE_INTEGRATION"] = "1"
    # load tests/conftest.py as a plugin so its hooks apply to a test file outside tests/
    r = _pytest(["-p", "conftest", "-q", "-rsf", str(tmp_path / "test_skippers.py")], tmp_path, **env)
    out = r.stdout + r.stderr
    if required:
        assert r.returncode == 1, out[-3000:]
        assert "3 failed, 1 passed, 1 skipped" in out
        assert "prerequisite missing: chromium" in out and "CI counts as a failure" in out
    else:
        assert r.returncode == 0, out[-3000:]
        assert "1 passed, 4 skipped" in out
        assert "NOTE: 1 test(s) SKIPPED: prerequisite missing: chromium" in out


@pytest.fixture
def device_module(monkeypatch):
    """Reload tests/_device.py under a given environment; restore it afterwards."""
    import _device

    def load(**env):
        for k in ("SENTINEL_TEST_DEVICE", "SENTINEL_TEST_DTYPE", "SENTINEL_TEST_TF32"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return importlib.reload(_device)

    yield load
    monkeypatch.undo()
    importlib.reload(_device)


def test_device_settings_map_to_comfyui_flags(device_module):
    d = device_module()
    assert (d.RAW, d.ON_CUDA, d.FORCED_DTYPE, d.comfy_args(), d.comfy_env()) == ("cpu", False, None, ["--cpu"], {})
    d = device_module(SENTINEL_TEST_DEVICE="cuda")
    assert d.ON_CUDA and d.comfy_args() == [] and str(d.device()) == "cuda:0"
    d = device_module(SENTINEL_TEST_DEVICE="cuda:1", SENTINEL_TEST_DTYPE="fp16", SENTINEL_TEST_TF32="0")
    assert d.comfy_args() == ["--cuda-device", "1", "--fp16-unet"] and d.comfy_env() == {"NVIDIA_TF32_OVERRIDE": "0"}
    d = device_module(SENTINEL_TEST_DTYPE="fp32")
    assert d.comfy_args() == ["--cpu", "--force-fp32"]

    class Args:
        cpu = False
        force_fp32 = fp16_unet = bf16_unet = False

    a = Args()
    device_module(SENTINEL_TEST_DTYPE="bf16").apply_to_comfy_args(a)
    assert a.cpu and a.bf16_unet and not a.fp16_unet and not a.force_fp32


@pytest.mark.parametrize("env", [{"SENTINEL_TEST_DEVICE": "gpu"}, {"SENTINEL_TEST_DTYPE": "fp8"},
                                 {"SENTINEL_TEST_TF32": "maybe"}])
def test_bad_device_settings_are_refused(device_module, env):
    with pytest.raises(RuntimeError, match="SENTINEL_TEST_"):
        device_module(**env)


def test_tolerances_follow_device_and_dtype(device_module):
    import torch

    d = device_module()
    assert d.tol("float32") == {"rtol": 1e-5, "atol": 1e-6} == d.tol("model") == d.tol("exact_math")
    assert d.tol("float16") == {"rtol": 1e-2, "atol": 1e-3} and d.tol("bfloat16")["rtol"] == 2e-2
    assert d.model_dtype() == torch.float32 and d.dtype_kind(torch.float16) == "float16"
    with pytest.raises(ValueError, match="unknown tolerance kind"):
        d.tol("float64")
    d = device_module(SENTINEL_TEST_DTYPE="fp16")
    assert d.model_dtype() == torch.float16 and d.tol("model") == d.tol("float16")
    assert 1.0 + 5e-3 == d.approx(1.0, "model") and 1.0 + 5e-3 != d.approx(1.0, "float32")
    d.assert_close(torch.tensor([1.0, 2.0], dtype=torch.float16), torch.tensor([1.0, 2.001]), "float16")
    with pytest.raises(AssertionError):
        d.assert_close(torch.tensor([1.0]), torch.tensor([1.0001]), "float32")


def test_to_device_keeps_structure_and_casts_floats_only():
    import _device
    import torch

    x = {"samples": torch.zeros(1, 4, 2, 2), "batch_index": [torch.tensor([0])], "n": 3}
    y = _device.to_device(x, torch.float16)
    assert y["samples"].dtype == torch.float16 and y["batch_index"][0].dtype == torch.int64 and y["n"] == 3
    assert y["samples"].device == _device.device()


def test_node_detection(monkeypatch, tmp_path):
    import shutil

    import _prereq

    real = shutil.which("node")
    if real:  # a real Node: found when >= 18 (the JS tests need its built-in test runner)
        import subprocess

        major = int(subprocess.run([real, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
                    .split(".")[0])
        assert (_prereq.node() == real) == (major >= 18)
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\nexit 1\n")  # an old or broken node: not accepted
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _prereq.node() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert _prereq.node() is None
