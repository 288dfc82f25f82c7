"""benchmarks/gpu_check.py without a GPU: RESULT-line parsing, JUnit counting, the table and its own RESULT line.
tests/integration/test_gpu_check_dry_run.py runs the whole script on the CPU (--device cpu --quick)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("sentinel_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_result_lines_are_merged_and_typed(gc):
    text = "\n".join([
        "device=cpu ckpt=x", "RESULT ratio_b1=1.0123 reps=20 device=cuda", "noise RESULT not=this",
        "RESULT ratio_b1=1.004 note='two words' flag", "RESULTS=nope",
    ])
    assert gc.parse_result_lines(text) == {"ratio_b1": 1.004, "reps": 20, "device": "cuda", "note": "two words",
                                           "_words": ["flag"]}
    assert gc.parse_result_lines("no result here\nRESULTS x=1") is None
    # an unbalanced quote falls back to whitespace splitting instead of failing
    assert gc.parse_result_lines("RESULT a=don't b=2") == {"a": "don't", "b": 2}


def test_own_result_line_survives_both_parsers(gc):
    line = gc.result_line({"gpu": "NVIDIA H100 80GB HBM3", "x": 0.123456, "n": 3, "empty": ""})
    assert line == "RESULT gpu=NVIDIA_H100_80GB_HBM3 x=0.1235 n=3 empty=-"
    assert gc.parse_result_lines(line) == {"gpu": "NVIDIA_H100_80GB_HBM3", "x": 0.1235, "n": 3, "empty": "-"}
    assert len(shlex.split(line)) == len(line.split())


def test_junit_counts(gc, tmp_path):
    p = tmp_path / "j.xml"
    p.write_text("""<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.a" name="t1"/>
<testcase classname="tests.a" name="t2"><failure message="boom"/></testcase>
<testcase classname="tests.b" name="t3"><skipped message="prerequisite missing: chromium"/></testcase>
<testcase classname="tests.b" name="t4"><skipped message="prerequisite missing: chromium"/></testcase>
<testcase classname="tests.c" name="t5"><error message="fixture"/></testcase>
</testsuite></testsuites>""")
    j = gc.parse_junit(p)
    assert (j["total"], j["passed"], j["failed"], j["errors"], j["skipped"]) == (5, 1, 1, 1, 2)
    assert j["failures"] == ["tests.a::t2", "tests.c::t5 (error)"]
    assert j["skip_reasons"] == {"prerequisite missing: chromium": 2}


def _report(**kw):
    r = {"started": "2026-01-01 00:00:00", "seconds": 300.0, "quick": False, "model": "full", "dtype": None,
         "comfyui": "0.3.64 at /x", "size": 512,
         "device": {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "gpu_mem_gib": 79.1, "capability": "9.0",
                    "torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91000, "python": "3.12.3",
                    "tf32_matmul": False, "tf32_cudnn": True, "nvidia_tf32_override": "-"},
         "checkpoints": [{"variant": "full", "path": "/m/sd15-random.safetensors", "built": True, "size_mib": 2045,
                          "detected": "SD15", "unet_dtype": "float16", "manual_cast": "None", "vae_dtype": "bfloat16",
                          "comfy_device": "cuda:0"}],
         "tests": {"total": 130, "passed": 127, "failed": 1, "errors": 0, "skipped": 2, "rc": 1, "seconds": 200.0,
                   "failures": ["tests.integration.test_x::test_y"], "skip_reasons": {"prerequisite missing: chromium": 2}},
         "benchmarks": [
             {"name": "capture_b1", "status": "ok", "seconds": 40.0, "result": {"ratio_wall": 1.004, "reps": 20}},
             {"name": "diffsim_speed", "status": "no RESULT line", "seconds": 30.0, "result": None},
             {"name": "diversity_speed", "status": "failed (exit 2): error: unrecognized arguments: --x",
              "seconds": 1.0, "result": None}]}
    r.update(kw)
    return r


def test_table_and_final_result(gc):
    rep = _report()
    text = gc.render(rep)
    for s in ("cuda  NVIDIA H100 80GB HBM3", "2.11.0+cu130 / 13.0", "matmul False, cudnn True",
              "UNet float16", "127 passed, 1 failed, 0 errors, 2 skipped of 130", "tests.integration.test_x::test_y",
              "capture_b1", "ratio_wall=1.004", "no RESULT line", "unrecognized arguments: --x"):
        assert s in text, s
    line = gc.final_result(rep)
    parsed = gc.parse_result_lines(line)
    assert parsed["gpu"] == "NVIDIA_H100_80GB_HBM3" and parsed["unet_dtype"] == "float16"
    assert parsed["tests_passed"] == 127 and parsed["tests_failed"] == 1 and parsed["benchmarks_ok"] == "1/3"
    assert parsed["capture_b1.ratio_wall"] == 1.004 and parsed["capture_b1.reps"] == 20
    assert "diffsim_speed.ratio" not in line
    assert gc.render(_report(tests=None, benchmarks=[])).count("not run") == 1


def test_cpu_quick_defaults_to_a_dry_run(gc):
    a = gc.parse_args(["--device", "cpu", "--quick"])
    assert (a.model, a.size, a.steps, a.tests) == ("tiny", 64, 4, ["tests/integration/test_entrypoint_comfy.py"])
    a = gc.parse_args(["--device", "cuda"])
    assert (a.model, a.size, a.steps, a.tests) == ("full", 512, 20, ["tests"])
    specs = gc.benchmark_specs(gc.parse_args(["--device", "cuda"]), "/m/full.safetensors")
    assert set(specs) == {"capture_b1", "capture_b4", "memorization_cost", "diffsim_speed", "diversity_speed"}
    assert specs["capture_b4"][1][specs["capture_b4"][1].index("--batch") + 1] == "4"
    assert specs["capture_b1"][1][specs["capture_b1"][1].index("--reps") + 1] == "20"
    assert "--checkpoint" in specs["memorization_cost"][1] and "512" in specs["diffsim_speed"][1]
