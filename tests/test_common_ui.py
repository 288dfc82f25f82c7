"""The on-node result protocol (nodes/common/ui.py): JSON-safe panels and their plain-text form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusion_sentinel.nodes.common import ui


def test_panel_is_json_safe_and_keeps_values():
    p = ui.panel("Artifact Predict", summary="1 of 2 flagged",
                 columns=[ui.col("item"), ui.col("p", "P(artifact)", direction=ui.LOWER_IS_BETTER, fmt=".3f"),
                          ui.col("flag", "artifact")],
                 rows=[[0, np.float32(0.25), False], [1, torch.tensor(float("nan")), True]], highlight=[1, 7],
                 series=[[1.0, 0.5, float("inf")], np.array([0.9, 0.8, 0.7])], series_label="similarity")
    s = json.dumps(p, allow_nan=False)  # would raise on NaN/inf
    back = json.loads(s)
    assert back["rows"] == [[0, 0.25, False], [1, None, True]]
    assert back["highlight"] == [1]  # 7 is out of range
    assert back["series"][0] == [1.0, 0.5, None]
    assert back["series"][1] == pytest.approx([0.9, 0.8, 0.7])
    assert back["columns"][1] == {"key": "p", "label": "P(artifact)", "direction": "lower is better", "fmt": ".3f"}
    assert back["v"] == ui.PROTOCOL_VERSION


def test_rows_must_match_columns():
    with pytest.raises(ValueError, match="row 0 has 1 values for 2 columns"):
        ui.panel("x", columns=[ui.col("a"), ui.col("b")], rows=[[1]])


def test_long_panels_are_capped_with_a_note_and_series_thinned():
    rows = [[i] for i in range(ui.MAX_ROWS + 5)]
    p = ui.panel("t", columns=[ui.col("i")], rows=rows, series=[list(range(1000))])
    assert len(p["rows"]) == ui.MAX_ROWS
    assert "first 256 of 261 rows" in p["notes"][-1]
    s = p["series"][0]
    assert len(s) == ui.MAX_SERIES_POINTS and s[0] == 0 and s[-1] == 999


def test_text_form_and_ui_dict():
    p = ui.panel("Vendi", summary="3.2 of 8", columns=[ui.col("item"), ui.col("c", "conformity", fmt=".2f")],
                 rows=[[0, 0.123], [1, None]], highlight=[0], notes=["few images"])
    d = ui.result_ui(p, extra={"images": [{"filename": "a.png"}]})
    assert d[ui.RESULT_KEY] == [p]
    assert d["images"] == [{"filename": "a.png"}]
    assert d["text"] == ["Vendi: 3.2 of 8\nitem  conformity\n0  0.12 *\n1  nan\nfew images"]
    assert all(isinstance(v, list) for v in d.values())
    with pytest.raises(TypeError, match="must be lists"):
        ui.result_ui(p, extra={"x": "not a list"})


def test_json_safe_scalars():
    assert ui.json_safe(np.int64(3)) == 3 and isinstance(ui.json_safe(np.int64(3)), int)
    assert ui.json_safe(np.bool_(True)) is True
    assert ui.json_safe((1.0, math.inf)) == [1.0, None]
    assert ui.json_safe({"a": np.array([1, 2])}) == {"a": [1, 2]}
