"""The web extension's pure JavaScript (web/sentinel_panels.js) and its glue (web/sentinel.js), tested with
Node's built-in test runner (tests/js/*.test.mjs; no npm package). Skipped when ``node`` is not on PATH.

tests/js/fixtures.json holds what the JS tests compare with, made here by Python: the reference output of
Python's ``format()`` for the number formats panels use, and panels built by nodes/common/ui.py. The first test
checks that the file is what Python gives today (set SENTINEL_UPDATE_JS_FIXTURES=1 to rewrite it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from diffusion_sentinel.nodes.common import ui

JS_DIR = Path(__file__).resolve().parent / "js"
FIXTURES = JS_DIR / "fixtures.json"

FORMAT_VALUES = [0.123456, -0.5, 1234567.891, 0.000123456, 1e-07, 12.0, 0.0, 3, 100, 1234567, 15000000000.0,
                 -2.5e-05, 0.9999, 0.00999, 123.456, -7, float("nan"), float("inf"), float("-inf"),
                 0.125, 2.5, -0.5, 1.25, 0.0625, 999.9996, 9.99999e-05, 1e+300, 5e-324, -0.0]  # ties, carries, extremes
FORMAT_SPECS = [".3f", ".2e", ".4g", "d", ".1%", "+.2f", ",d", ".0f", "g", ".3g", ".2E", ".1f", ",.2f", ".6f"]


def _encode(v):
    if isinstance(v, float) and v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return v


def format_cases() -> list[list]:
    """[value, spec, Python's format(value, spec)] for every pair Python accepts (value "nan"/"inf"/"-inf" as text).
    Floats that are whole numbers are left out of "d" (JSON cannot tell 12.0 from 12; Python refuses 12.0)."""
    out = []
    for v in FORMAT_VALUES:
        for spec in FORMAT_SPECS:
            if isinstance(v, float) and spec.endswith("d"):
                continue
            try:
                out.append([_encode(v), spec, format(v, spec)])
            except ValueError:
                pass
    return out


def sample_panels() -> dict:
    """Panels as the nodes send them (through nodes/common/ui.py), for the rendering tests."""
    predict = ui.panel(
        "Artifact Predict", summary="1 of 3 flagged (P >= 0.5)",
        columns=[ui.col("item"), ui.col("p_artifact", "P(artifact)", direction=ui.LOWER_IS_BETTER, fmt=".3f"),
                 ui.col("d_max", "D_max", fmt=".2e"), ui.col("is_artifact", "artifact")],
        rows=[[0, 0.2134, 0.000123, False], [1, 0.7391, 0.0456, True], [2, float("nan"), None, False]],
        highlight=[1],
        series=[[0.1, 0.5, 0.9, 0.8], [0.2, float("nan"), 0.4, 0.3], [float("nan")] * 4],
        series_label="similarity", notes=["threshold 0.5 <b>not</b> tuned"])
    vendi = ui.panel("Batch Diversity", summary="Vendi 2.31 of 4",
                     columns=[ui.col("item"), ui.col("c", "conformity", direction=ui.HIGHER_IS_BETTER, fmt=".2f"),
                              ui.col("d", "distance", direction="higher = more different", fmt=".4g")],
                     rows=[[0, 0.5, 12.3456], [1, 0.25, 0.001]], highlight=[0])
    return {"predict": predict, "vendi": vendi, "ui": ui.result_ui(predict, vendi)}


def fixtures() -> dict:
    return {"_comment": "made by tests/test_web_js.py (Python's format() and nodes/common/ui.py); do not edit",
            "formats": format_cases(), "panels": sample_panels()}


def fixtures_text() -> str:
    """The fixture file: one format case per line, the panels indented (readable diffs)."""
    f = fixtures()
    cases = ",\n  ".join(json.dumps(c, allow_nan=False) for c in f["formats"])
    panels = json.dumps(f["panels"], indent=1, allow_nan=False)
    return (f'{{"_comment": {json.dumps(f["_comment"])},\n "formats": [\n  {cases}\n ],\n'
            f' "panels": {panels}\n}}\n')


def test_js_fixtures_are_what_python_gives():
    want = fixtures_text()
    assert json.loads(want) == json.loads(json.dumps(fixtures(), allow_nan=False))
    if os.environ.get("SENTINEL_UPDATE_JS_FIXTURES"):
        FIXTURES.write_text(want)
    assert FIXTURES.read_text() == want, ("tests/js/fixtures.json is stale: rerun with "
                                          "SENTINEL_UPDATE_JS_FIXTURES=1 and review the diff")
    assert len(fixtures()["formats"]) > 150


def test_node_test_runner_passes():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (the web extension's JS tests need Node >= 18)")
    tests = sorted(str(p) for p in JS_DIR.glob("*.test.mjs"))
    assert tests, "no JS tests found"
    res = subprocess.run([node, "--test", *tests], capture_output=True, text=True, timeout=180, cwd=JS_DIR)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    # the summary lines of node's TAP reporter: every test ran and none failed
    assert "# fail 0" in out, out[-4000:]
    n_pass = int(out.split("# pass ")[1].split()[0])
    assert n_pass >= 20, out[-4000:]
