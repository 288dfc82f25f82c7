"""Example workflows: API format (what tests post to /prompt) -> UI format (what the ComfyUI editor opens).

The UI files in example_workflows/ are generated from the *_api.json files with a running server's
/object_info (which knows each node's widget order), so the two never drift apart:

    python tests/_workflows.py --server http://127.0.0.1:8188      # rewrite example_workflows/<name>.json
    COMFYUI_PATH=... python tests/_workflows.py                    # same, with a temporary server of this checkout

The integration test test_server.py regenerates them and fails if a committed UI file is stale.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
import uuid
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _is_widget(spec) -> bool:
    t = spec[0]
    return isinstance(t, list) or t in WIDGET_TYPES


def _ordered_inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            out.append((name, info["input"][section][name]))
    return out


def _depths(api: dict) -> dict[str, int]:
    memo: dict[str, int] = {}

    def depth(nid: str) -> int:
        if nid not in memo:
            memo[nid] = 0
            ups = [v[0] for v in api[nid]["inputs"].values() if _is_link(v)]
            memo[nid] = 1 + max((depth(u) for u in ups), default=-1)
        return memo[nid]

    for nid in api:
        depth(nid)
    return memo


def api_to_ui(api: dict, object_info: dict, title: str = "") -> dict:
    """Build a LiteGraph (frontend) workflow equivalent to an API-format prompt."""
    links, nodes = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    depths = _depths(api)
    col_y: dict[int, int] = {}
    order = sorted(api, key=lambda n: (depths[n], int(n) if n.isdigit() else n))
    for nid in order:
        node = api[nid]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in _ordered_inputs(info):
            val = node["inputs"].get(name)
            typ = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if _is_widget(spec):
                if _is_link(val):
                    inputs.append({"name": name, "type": typ, "widget": {"name": name}, "link": None})
                    val = opts.get("default")
                elif val is None:
                    val = opts.get("default", spec[0][0] if isinstance(spec[0], list) and spec[0] else None)
                widgets.append(val)
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
            else:
                inputs.append({"name": name, "type": typ, "link": None})
        for inp in inputs:
            v = node["inputs"].get(inp["name"])
            if _is_link(v):
                lid = len(links) + 1
                src, slot = v
                src_type = object_info[api[src]["class_type"]]["output"][slot]
                links.append([lid, int(src), slot, int(nid), inputs.index(inp), src_type])
                inp["link"] = lid
                out_links.setdefault((src, slot), []).append(lid)
        d = depths[nid]
        height = 46 + 20 * max(len(inputs), len(info["output"])) + 24 * len(widgets)
        y = col_y.get(d, 40)
        col_y[d] = y + height + 60
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [40 + 380 * d, y],
            "size": [330, height], "flags": {}, "order": len(nodes), "mode": 0,
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        })
    for n in nodes:
        info = object_info[n["type"]]
        names = info.get("output_name") or info["output"]
        for slot, typ in enumerate(info["output"]):
            n["outputs"].append({"name": names[slot], "type": typ if isinstance(typ, str) else "COMBO",
                                 "links": out_links.get((str(n["id"]), slot), []), "slot_index": slot})
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, title or "diffusion-sentinel")), "revision": 0,
        "last_node_id": max(int(k) for k in api), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4,
    }


def ui_path(api_path: Path) -> Path:
    return api_path.with_name(api_path.name.replace("_api.json", ".json"))


def regenerate(object_info: dict, write: bool = True) -> dict[Path, dict]:
    out = {}
    for api_path in sorted(EXAMPLES.glob("*_api.json")):
        ui = api_to_ui(json.loads(api_path.read_text()), object_info, title=api_path.stem)
        out[ui_path(api_path)] = ui
        if write:
            ui_path(api_path).write_text(json.dumps(ui, indent=1) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=None, help="a running ComfyUI that loads this checkout of the pack; "
                    "default: start one from COMFYUI_PATH (run with that ComfyUI's Python)")
    a = ap.parse_args()
    if a.server:
        with urllib.request.urlopen(a.server + "/object_info", timeout=60) as r:
            info = json.loads(r.read().decode())
    else:
        import os
        import sys
        import tempfile

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _server import ComfyServer

        with tempfile.TemporaryDirectory() as base:
            srv = ComfyServer(os.environ["COMFYUI_PATH"], Path(base)).start()
            try:
                info = srv.get("/object_info", timeout=60)
            finally:
                srv.stop()
    for p in regenerate(info):
        print("wrote", p)


if __name__ == "__main__":
    main()
