"""benchmarks/gpu_check.py end to end on the CPU (its --device cpu --quick dry run, cut down further): the tiny
checkpoint is found (or built) and loaded through ComfyUI's checkpoint loader, a test selection runs on the test
device, a benchmark runs as a subprocess, and the table, the JSON and the final RESULT line come out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_on_cpu(comfy, tmp_path):
    from _server import find_checkpoint

    tiny = find_checkpoint("sd15-tiny-random.safetensors")
    models = Path(tiny).parent.parent if tiny else tmp_path / "models"  # reuse the harness's tiny checkpoint
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "SENTINEL_TEST_DEVICE")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
           "--models", str(models), "--out", str(out), "--benchmarks", "capture_b1", "--size", "64", "--steps", "2",
           "--reps", "1", "--tests", "tests/test_gpu_check.py", "--budget", "400"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-5000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    (ck,) = rep["checkpoints"]
    assert ck["variant"] == "tiny" and ck["detected"] == "SD15" and ck["unet_dtype"] == "float32", ck
    assert ck["comfy_device"] == "cpu"
    t = rep["tests"]
    assert (t["passed"], t["failed"], t["errors"]) == (t["total"], 0, 0) and t["total"] >= 5, t
    (b,) = rep["benchmarks"]
    assert b["name"] == "capture_b1" and b["status"] in ("ok", "no RESULT line"), b
    assert "--ckpt" in b["argv"] and str(models) in b["argv"][b["argv"].index("--ckpt") + 1]
    log = (out / "benchmarks.log").read_text()
    assert "device=cpu" in log  # the benchmark really ran, on the CPU (64 px, 2 steps)
    table = (out / "gpu_check.txt").read_text()
    assert "Diffusion Sentinel GPU check" in table and "checkpoint tiny" in table
    last = [ln for ln in r.stdout.splitlines() if ln.strip()][-1]
    assert last.startswith("RESULT gpu_check=done device=cpu") and f"tests_passed={t['passed']}" in last
    assert (out / "junit.xml").is_file() and (out / "pytest.log").is_file()
