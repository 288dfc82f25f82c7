"""What a node shows on itself after a run: one protocol for every Sentinel node (pure: no ComfyUI import).

A node returns ``io.NodeOutput(..., ui=result_ui(panel, ...))``. The web extension (web/sentinel.js) draws every
panel of the ui key ``sentinel_result`` in a DOM widget inside the node, so it works in the classic canvas and in
the Vue renderer ("Nodes 2.0"), and the same payload reaches API users in /history. A panel is a small table, one
row per batch item (or per pair, per prompt), whose columns say which way is better, plus optional sparklines
(one series per row) and notes::

    panel("Artifact Predict", summary="1 of 2 flagged (P >= 0.5)",
          columns=[col("item"), col("p_artifact", "P(artifact)", direction="lower is better", fmt=".3f"),
                   col("is_artifact", "artifact")],
          rows=[[0, 0.21, False], [1, 0.74, True]], highlight=[1])

Everything is made JSON-safe here: NaN and inf become None (shown as "nan"/"inf" text), numpy and torch scalars
become Python numbers. Values in a ComfyUI ui dict must be lists; ``result_ui`` takes care of that too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

RESULT_KEY = "sentinel_result"
PROTOCOL_VERSION = 1
MAX_ROWS = 256  # a panel never carries more rows than this (the rest is summarised in a note)
MAX_SERIES_POINTS = 400  # sparklines are thinned to at most this many points per series

LOWER_IS_BETTER = "lower is better"
HIGHER_IS_BETTER = "higher is better"


def json_safe(v: Any) -> Any:
    """A JSON-serialisable copy: NaN/inf -> None, numpy/torch scalars and 0-d arrays -> Python, tuples -> lists."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    item = getattr(v, "item", None)  # numpy / torch scalar or single-element array
    if callable(item) and getattr(v, "ndim", 0) == 0:
        return json_safe(item())
    tolist = getattr(v, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    if isinstance(v, Iterable):
        return [json_safe(x) for x in v]
    return str(v)


def col(key: str, label: str | None = None, *, direction: str | None = None, fmt: str | None = None,
        tooltip: str | None = None) -> dict:
    """A column: ``key`` names the output it mirrors, ``label`` is shown, ``direction`` says which way is better
    (e.g. "lower is better", "higher = more similar"), ``fmt`` is a Python/JS-style number format (".3f", ".2e",
    "d") applied by the frontend."""
    c = {"key": key, "label": label or key}
    if direction:
        c["direction"] = direction
    if fmt:
        c["fmt"] = fmt
    if tooltip:
        c["tooltip"] = tooltip
    return c


def _thin(series: Sequence[float]) -> list:
    s = list(series)
    if len(s) <= MAX_SERIES_POINTS:
        return s
    step = len(s) / MAX_SERIES_POINTS
    return [s[min(len(s) - 1, int(i * step))] for i in range(MAX_SERIES_POINTS - 1)] + [s[-1]]


def panel(title: str, *, summary: str = "", columns: Sequence[dict] = (), rows: Sequence[Sequence[Any]] = (),
          highlight: Iterable[int] = (), series: Sequence[Sequence[float]] | None = None,
          series_label: str = "", notes: Iterable[str] = (), kind: str = "table") -> dict:
    """One block of the on-node display. ``highlight`` lists row positions to mark (flagged, kept, best);
    ``series`` (optional) is one curve per row, drawn as sparklines with ``series_label`` as the y-axis name."""
    cols = [dict(c) for c in columns]
    rows = [list(r) for r in rows]
    for i, r in enumerate(rows):
        if len(r) != len(cols):
            raise ValueError(f"panel {title!r}: row {i} has {len(r)} values for {len(cols)} columns")
    notes = [str(n) for n in notes]
    if len(rows) > MAX_ROWS:
        notes.append(f"showing the first {MAX_ROWS} of {len(rows)} rows; every value is in the node's outputs")
        rows = rows[:MAX_ROWS]
    out = {"v": PROTOCOL_VERSION, "kind": kind, "title": str(title), "summary": str(summary), "columns": cols,
           "rows": rows, "highlight": sorted({int(h) for h in highlight if 0 <= int(h) < len(rows)}),
           "notes": notes}
    if series is not None:
        out["series"] = [_thin(s) for s in list(series)[:MAX_ROWS]]
        out["series_label"] = str(series_label)
    return json_safe(out)


def _fmt(v: Any, fmt: str | None) -> str:
    if v is None:
        return "nan"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and fmt:
        try:
            return format(v, fmt)
        except ValueError:
            return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def panel_text(p: dict) -> str:
    """The panel as plain text (for logs, the ``text`` ui key and API users who do not render panels)."""
    lines = [p["title"] + (f": {p['summary']}" if p.get("summary") else "")]
    cols = p.get("columns", [])
    if cols and p.get("rows"):
        lines.append("  ".join(c["label"] + (f" ({c['direction']})" if c.get("direction") else "") for c in cols))
        for i, r in enumerate(p["rows"]):
            mark = " *" if i in p.get("highlight", []) else ""
            lines.append("  ".join(_fmt(v, c.get("fmt")) for v, c in zip(r, cols)) + mark)
    lines.extend(p.get("notes", []))
    return "\n".join(lines)


def result_ui(*panels: dict, extra: dict | None = None) -> dict:
    """The ``ui`` dict of a node: every panel under ``sentinel_result`` plus their plain-text form under ``text``.
    ``extra`` adds other ui keys (e.g. the ``images`` of a preview); each value must be a list (a tuple is
    converted)."""
    ps = [p for p in panels if p]
    ui = {RESULT_KEY: ps, "text": ["\n\n".join(panel_text(p) for p in ps)]}
    for k, v in (extra or {}).items():
        if isinstance(v, tuple):  # e.g. PreviewImage.as_dict()["animated"] is a tuple: merged like a list
            v = list(v)
        if not isinstance(v, list):
            raise TypeError(f"ui values must be lists (ComfyUI merges them); got {type(v).__name__} for {k!r}")
        ui[k] = v
    return ui
