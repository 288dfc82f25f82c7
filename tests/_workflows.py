"""Example workflows from one source: the API twin (``example_workflows/api/<name>.json``, what tests and
run_example.py post to /prompt) and the server's /object_info give the UI workflow (``example_workflows/<name>.json``,
what the editor and its template browser open), such that the editor turns it back into exactly the API twin.

    python tests/_workflows.py --server http://127.0.0.1:8188   # rewrite the UI files from a running server
    COMFYUI_PATH=... python tests/_workflows.py                 # same, with a temporary server of this checkout
    COMFYUI_PATH=... python tests/_workflows.py --thumbnails     # also run every example, rewrite <name>.jpg

Nothing about a node's widgets is written down here: their order, defaults and extra widgets come from
/object_info and the frontend's rules (checked in the bundles of frontend 1.27.10 and 1.58.1):

- Sockets first (required, then optional, in ``input_order``), then one widget socket per widget input, in the
  same order. A widget input is INT/FLOAT/STRING/BOOLEAN/COMBO (a V1 list or a V3 ``"COMBO"``) without
  ``forceInput``; anything else, ``forceInput`` included, is a plain socket. Hidden inputs are not on the node.
- ``widgets_values`` holds one value per widget input, plus the value-control widget's mode after an INT widget
  when ``control_after_generate`` is true, or is absent and the input is named ``seed``/``noise_seed`` (the
  frontend's legacy rule); ``control_after_generate: false`` means no control widget. A COMBO gets a control
  widget and a filter-list widget only when ``control_after_generate`` is true. A widget whose input is linked
  keeps a value (its default); the link wins in the prompt.
- The saved control mode is "randomize" for sampler noise seeds (nodes with a LATENT or NOISE output, as the
  built-in templates save KSampler and RandomNoise) and "fixed" for every other seed (a measurement's seed).
- An API twin may give a node a title with ``"_meta": {"title": ...}`` (the editor writes the same key).

Each template also gets a Markdown note (``example_workflows/api/<name>.md``: first line ``# Title``, then the
text) and a layout computed from the graph: columns by depth, rows sized from each node's sockets and widgets with
room for the larger node bodies of the Vue renderer ("Nodes 2.0").

Regenerating also normalises the API twins against the current schema: widget inputs a twin lacks get the
default the editor would send, inputs the node no longer has are dropped (both are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_workflows"
API_DIR = EXAMPLES / "api"
PACK_MODULE = "diffusion-sentinel"  # the custom_nodes folder name the test servers use (templates are per folder)

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_MODES = ("fixed", "increment", "decrement", "randomize")
LEGACY_SEED_NAMES = ("seed", "noise_seed")
SAMPLER_OUTPUTS = {"LATENT", "NOISE"}

# The model file names the examples use: what a user recognises and has. Test servers provide these names as
# links to the tiny random checkpoint and to generated files, so the templates run unchanged there.
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CLIP_VISION_VIT_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
CLIP_VISION_VIT_L = "clip-vit-large-patch14.safetensors"
IPADAPTER_PLUS = "ip-adapter-plus_sd15.safetensors"

# ---------------------------------------------------------------------------------------------------- names


def template_names() -> list[str]:
    return sorted(p.stem for p in API_DIR.glob("*.json"))


def api_path(name: str) -> Path:
    return API_DIR / f"{name}.json"


def ui_path(name: str) -> Path:
    return EXAMPLES / f"{name}.json"


def note_path(name: str) -> Path:
    return API_DIR / f"{name}.md"


def thumb_path(name: str) -> Path:
    return EXAMPLES / f"{name}.jpg"


def load_api(name: str) -> dict:
    return json.loads(api_path(name).read_text())


# ---------------------------------------------------------------------------------------------------- schema


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _opts(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def spec_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def combo_options(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else list(_opts(spec).get("options") or [])


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not _opts(spec).get("forceInput")


def control_widgets(name: str, spec) -> int:
    """How many value-control widgets the frontend adds after this widget (0, 1 for INT, 2 for COMBO)."""
    cag = _opts(spec).get("control_after_generate")
    t = spec_type(spec)
    if t == "INT":
        on = bool(cag) if cag is not None else name in LEGACY_SEED_NAMES
        return 1 if on else 0
    if t == "COMBO":
        return 2 if cag else 0
    return 0


def widget_default(spec):
    """The value a fresh widget of the editor holds."""
    o, t = _opts(spec), spec_type(spec)
    if "default" in o:
        return o["default"]
    if t == "COMBO":
        opts = combo_options(spec)
        return opts[0] if opts else None
    return {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}.get(t)


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of every input the node shows (required then optional, in the schema's order)."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [(n, info["input"][sec][n]) for sec in ("required", "optional") for n in order.get(sec, [])]


def schema_inputs(info: dict) -> set[str]:
    return {n for sec in ("required", "optional", "hidden") for n in (info["input"].get(sec) or {})}


def control_mode(info: dict, spec) -> str:
    cag = _opts(spec).get("control_after_generate")
    if isinstance(cag, str) and cag in CONTROL_MODES:
        return cag
    return "randomize" if SAMPLER_OUTPUTS & set(map(str, info.get("output") or [])) else "fixed"


def normalise_api(api: dict, object_info: dict) -> tuple[dict, list[str]]:
    """The twin the editor would give back: missing widget inputs get their defaults, unknown inputs go."""
    out, changes = {}, []
    for nid, node in api.items():
        info = object_info.get(node["class_type"])
        if info is None:
            raise KeyError(f"node {nid}: {node['class_type']} is not in /object_info (is the pack loaded?)")
        inputs = dict(node["inputs"])
        known = schema_inputs(info)
        for k in [k for k in inputs if k not in known]:
            changes.append(f"node {nid} ({node['class_type']}): dropped input {k!r} (not in the schema)")
            del inputs[k]
        for name, spec in ordered_inputs(info):
            if name not in inputs and is_widget(spec):
                inputs[name] = widget_default(spec)
                changes.append(f"node {nid} ({node['class_type']}): added {name}={inputs[name]!r} (the default)")
        required = set((info.get("input_order") or {}).get("required") or info["input"].get("required", {}))
        for name in sorted(required - set(inputs)):
            changes.append(f"node {nid} ({node['class_type']}): REQUIRED input {name!r} is not connected")
        out[nid] = {**node, "inputs": inputs}
    return out, changes


# ---------------------------------------------------------------------------------------------------- layout

NODE_WIDTH = 330
WIDE_NODE_WIDTH = 400  # nodes with a multiline text box
NOTE_WIDTH = 440
COLUMN_GAP = 90
ROW_GAP = 90  # between a node's bottom and the next node's title bar
TITLE = 30  # the title bar, drawn above ``pos``
MAX_COLUMN = 1150  # a column of nodes taller than this wraps into a second column
TOP = 40
LEFT = 20
RESULT_RESERVE = 150  # room inside a Sentinel node for the result panel drawn after a run
RESULT_NODE_WIDTH = 480  # Sentinel nodes with a result panel: room for a table of 5-6 columns and a sparkline
PREVIEW_RESERVE = 260  # room inside an output node with an IMAGE input for the preview it shows
# Sentinel nodes that also preview an image (a chart, a heatmap) under their result panel: Nodes 2.0 draws the
# preview inside the node body at about 330 px for a 330 px wide node (measured: Similarity Trajectory 841 px tall)
CHART_NODES = {"SentinelSimilarityTrajectory", "SentinelDiffSimMatrix"}
CHART_RESERVE = 340


def reports_result(info: dict) -> bool:
    """A Sentinel node that shows a result panel after a run (an output node, or one with scalar outputs)."""
    outs = set(map(str, info.get("output") or []))
    reports = info.get("output_node") or bool(outs & {"FLOAT", "INT", "BOOLEAN", "STRING"})
    return str(info.get("category", "")).startswith("Sentinel") and bool(reports)


def estimate_height(info: dict, n_sockets: int, n_outputs: int, widgets: list[tuple[str, list]],
                    n_controls: int) -> int:
    """Body height (below the title bar) of a node, enough for both renderers.

    Measured minimum heights of every node the examples use (frontend 1.27.10 classic canvas, 1.58.1 Nodes 2.0,
    title bar included), least-squares fits: classic 46 + 19.5/socket row + 24/widget + 52/multiline text box +
    23/value-control widget; Nodes 2.0 63 + 19/socket row + 30/widget + 50/multiline (control widgets folded into
    the number widget). The estimate takes the larger of the two with a few pixels to spare, plus room for what a
    node shows after a run: a result panel on this pack's nodes that report something, an image preview on output
    nodes that take images, a text box on output nodes without widgets (Preview Any).
    """
    multiline = sum(1 for _, s in widgets if spec_type(s) == "STRING" and _opts(s).get("multiline"))
    plain = len(widgets) - multiline
    rows = max(n_sockets, n_outputs)
    classic = 20 * rows + 24 * (plain + n_controls) + 54 * multiline + 22
    vue = 20 * rows + 31 * plain + 52 * multiline + 45
    h = max(classic, vue)
    if reports_result(info):
        h += RESULT_RESERVE + (CHART_RESERVE if info.get("name") in CHART_NODES else 0)
    elif info.get("output_node") and "IMAGE" in {str(s[0]) for _, s in ordered_inputs(info)}:
        h = max(h, PREVIEW_RESERVE)
    elif info.get("output_node") and not widgets:
        h = max(h, 150)
    return int(math.ceil(h / 10.0) * 10)


def note_size(title: str, text: str) -> list[int]:
    """[width, height] of the Markdown note: wide enough for its title, tall enough for its text."""
    width = max(NOTE_WIDTH, int(7.5 * len(title)) + 60)
    chars_per_line = max(20, (width - 30) // 7)
    lines = sum(max(1, math.ceil(len(line) / chars_per_line)) for line in text.splitlines())
    return [width, int(math.ceil((lines * 19 + 70) / 10.0) * 10)]


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


# ---------------------------------------------------------------------------------------------------- api -> ui


def _check_legacy_migration(class_type: str, info: dict, values: list) -> None:
    """Frontend 1.27.10 re-maps saved widget values on load ("migrateWidgetsValues") when a node has forceInput
    inputs and the number of values equals its count of widget inputs, forceInput ones included, with two for
    every input that has control_after_generate or is named seed/noise_seed (so a combo with a control widget,
    which saves three values, counts two). The values would then shift; refuse such a node. (Without such a
    combo the counts cannot match: every forceInput input adds one to the count and nothing to the values.)"""
    inputs = ordered_inputs(info)
    if not any(_opts(s).get("forceInput") for _, s in inputs):
        return
    count = sum(2 if (_opts(s).get("control_after_generate") or n in LEGACY_SEED_NAMES) else 1
                for n, s in inputs if is_widget(s) or _opts(s).get("forceInput"))
    if count == len(values):
        raise ValueError(f"{class_type}: frontend 1.27.10 would re-map this node's saved widget values on load "
                         "(forceInput inputs plus a seed without a control widget); the editor would not give back "
                         "the API twin. Change the node's inputs or teach tests/_workflows.py this case.")


def read_note(name: str) -> tuple[str, str]:
    """(title, markdown) of a template's note file; ("", "") when there is none."""
    p = note_path(name)
    if not p.is_file():
        return "", ""
    text = p.read_text().strip("\n")
    first, _, rest = text.partition("\n")
    if first.startswith("# "):
        return first[2:].strip(), rest.strip("\n")
    return "", text


def api_to_ui(api: dict, object_info: dict, title: str = "", note: tuple[str, str] = ("", ""),
              min_sizes: dict[str, list[int]] | None = None) -> dict:
    """A LiteGraph workflow (what the frontend saves) that the frontend turns back into ``api``; ``min_sizes``:
    {class_type: [min width, min height]}, applied before the layout."""
    links: list[list] = []
    depths = _depths(api)
    built: dict[str, dict] = {}
    for nid in api:
        node = api[nid]
        info = object_info[node["class_type"]]
        sockets, widget_inputs, values = [], [], []
        n_controls = 0
        widgets = []
        for name, spec in ordered_inputs(info):
            if not is_widget(spec):
                sockets.append({"name": name, "type": spec_type(spec), "link": None})
                continue
            widgets.append((name, spec))
            val = node["inputs"].get(name)
            if _is_link(val) or name not in node["inputs"]:
                val = widget_default(spec)
            values.append(val)
            k = control_widgets(name, spec)
            if k:
                values.append(control_mode(info, spec))
                if k == 2:
                    values.append("")  # the combo's filter list
                n_controls += k
            widget_inputs.append({"name": name, "type": spec_type(spec), "widget": {"name": name}, "link": None})
        inputs = sockets + widget_inputs
        _check_legacy_migration(node["class_type"], info, values)
        outs = [str(t) if isinstance(t, str) else "COMBO" for t in info.get("output") or []]
        width = WIDE_NODE_WIDTH if any(spec_type(s) == "STRING" and _opts(s).get("multiline") for _, s in widgets) \
            else NODE_WIDTH
        if reports_result(info):
            width = max(width, RESULT_NODE_WIDTH)
        ui = {
            "id": int(nid), "type": node["class_type"], "pos": [0, 0],
            "size": [max(a, b) for a, b in zip([width, estimate_height(info, len(sockets), len(outs), widgets,
                                                                        n_controls)],
                                                (min_sizes or {}).get(node["class_type"], [0, 0]))],
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        }
        meta_title = (node.get("_meta") or {}).get("title")
        if meta_title and meta_title != info.get("display_name", node["class_type"]):
            ui["title"] = meta_title
        built[nid] = ui
    # links, in the order of the nodes' inputs
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in sorted(api, key=lambda n: (depths[n], int(n) if n.isdigit() else 0)):
        for slot, inp in enumerate(built[nid]["inputs"]):
            v = api[nid]["inputs"].get(inp["name"])
            if not _is_link(v):
                continue
            src, src_slot = v
            src_type = object_info[api[src]["class_type"]]["output"][src_slot]
            lid = len(links) + 1
            links.append([lid, int(src), src_slot, int(nid), slot, src_type if isinstance(src_type, str) else "*"])
            inp["link"] = lid
            out_links.setdefault((src, src_slot), []).append(lid)
    for nid, ui in built.items():
        info = object_info[api[nid]["class_type"]]
        names = info.get("output_name") or info.get("output") or []
        is_list = info.get("output_is_list") or []
        for slot, typ in enumerate(info.get("output") or []):
            o = {"name": names[slot] if slot < len(names) else str(typ),
                 "type": typ if isinstance(typ, str) else "COMBO",
                 "links": out_links.get((nid, slot), [])}
            if slot < len(is_list) and is_list[slot]:
                o["shape"] = 6  # the frontend draws list outputs as a grid socket
            ui["outputs"].append(o)
    # layout: the note first, then one column per depth; inside a column, nodes follow the mean height of what
    # feeds them (short links), and a column taller than MAX_COLUMN wraps into several
    ordered = sorted(api, key=lambda n: (depths[n], int(n) if n.isdigit() else 0))
    note_title, note_text = note
    x = LEFT
    nodes_out = []
    next_id = max(int(k) for k in api) + 1
    if note_text:
        size = note_size(note_title, note_text)
        nodes_out.append({
            "id": next_id, "type": "MarkdownNote", "pos": [x, TOP + TITLE], "size": size, "flags": {},
            "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [note_text], "title": note_title or "About this workflow",
            "color": "#432", "bgcolor": "#653",
        })
        x += size[0] + COLUMN_GAP
    centre: dict[str, float] = {}
    for d in range(max(depths.values()) + 1):
        col = [n for n in ordered if depths[n] == d]

        def key(n):
            ups = [v[0] for v in api[n]["inputs"].values() if _is_link(v)]
            ys = [centre[u] for u in ups if u in centre]
            return (sum(ys) / len(ys) if ys else 0.0, int(n) if n.isdigit() else 0)

        col.sort(key=key)
        y, width = TOP, 0
        for n in col:
            h = built[n]["size"][1] + TITLE
            if y > TOP and y + h > TOP + MAX_COLUMN:  # wrap
                x += width + COLUMN_GAP
                y, width = TOP, 0
            built[n]["pos"] = [x, y + TITLE]
            centre[n] = y + h / 2
            y += h + ROW_GAP
            width = max(width, built[n]["size"][0])
        x += width + COLUMN_GAP
    for i, n in enumerate(ordered):
        built[n]["order"] = i
        nodes_out.append(built[n])
    last_id = max(n["id"] for n in nodes_out)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "diffusion-sentinel/" + (title or "example"))), "revision": 0,
        "last_node_id": last_id, "last_link_id": len(links), "nodes": nodes_out, "links": links,
        "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}}, "version": 0.4,
    }


# Templates whose editor version differs from the API twin on purpose: {name: ({node id: {input: value}}, {class_type:
# [min width, min height]})}. Label Artifacts: the twin types its labels (so it runs headless, in tests and in
# run_example.py); the editor version leaves them empty, so the node waits for clicks, at a batch a user would label.
UI_EDITS: dict[str, tuple[dict[str, dict], dict[str, list[int]]]] = {
    "artifact_label_by_clicking": ({"10": {"labels": ""}, "5": {"width": 512, "height": 512, "batch_size": 16},
                                    "3": {"steps": 20}}, {"SentinelLabelArtifacts": [560, 760]}),
}


# What the editor test types into a template before queueing it, on top of shrink_for_cpu, so that the run needs
# no user: Label Artifacts gets typed labels for its 16 images (tests/integration/test_artifact_label_browser.py
# clicks instead).
RUN_EDITS: dict[str, dict[str, dict]] = {
    "artifact_label_by_clicking": {"10": {"labels": "1,0,0,x,0,1,0,0,1,0,0,0,x,0,1,0"}},
}


def ui_api(name: str, api: dict) -> dict:
    """The prompt the editor version of a template gives: its API twin with the UI_EDITS."""
    return apply_edits(api, UI_EDITS.get(name, ({}, {}))[0])


def build(name: str, object_info: dict) -> tuple[dict, dict, list[str]]:
    """(normalised API twin, UI workflow, what normalising changed) of one template."""
    api, changes = normalise_api(load_api(name), object_info)
    ui = api_to_ui(ui_api(name, api), object_info, title=name, note=read_note(name),
                   min_sizes=UI_EDITS.get(name, ({}, {}))[1])
    return api, ui, changes


def regenerate(object_info: dict, write: bool = True) -> dict[str, dict]:
    """Rewrite every UI workflow (and normalised API twin) from the API twins; returns {name: ui}."""
    out = {}
    for name in template_names():
        api, ui, changes = build(name, object_info)
        for c in changes:
            print(f"{name}: {c}")
        out[name] = ui
        if write:
            if changes:
                api_path(name).write_text(json.dumps(api, indent=1) + "\n")
            ui_path(name).write_text(json.dumps(ui, indent=1) + "\n")
    return out


# ---------------------------------------------------------------------------------------------------- comparison


def prompt_difference(got: dict, want: dict, object_info: dict | None = None) -> list[str]:
    """Differences between two API prompts (class types, inputs, and titles where ``want`` names one).

    With ``object_info``, inputs that the node's schema does not have are left out of the comparison: the server
    ignores them, and frontend 1.27.10 sends the display-only text box of Preview Any as an input ``preview``.
    """
    diffs = []
    for nid in sorted(set(got) | set(want), key=lambda n: int(n) if n.isdigit() else 0):
        if nid not in got:
            diffs.append(f"node {nid} ({want[nid]['class_type']}) is missing from the editor's prompt")
            continue
        if nid not in want:
            diffs.append(f"node {nid} ({got[nid]['class_type']}) is in the editor's prompt but not in the twin")
            continue
        g, w = got[nid], want[nid]
        if g["class_type"] != w["class_type"]:
            diffs.append(f"node {nid}: class_type {g['class_type']} != {w['class_type']}")
            continue
        keep = schema_inputs(object_info[w["class_type"]]) if object_info else None
        gi = {k: v for k, v in g["inputs"].items() if keep is None or k in keep}
        wi = {k: v for k, v in w["inputs"].items() if keep is None or k in keep}
        for k in sorted(set(gi) | set(wi)):
            if k not in gi:
                diffs.append(f"node {nid} ({w['class_type']}).{k}: missing in the editor (twin {wi[k]!r})")
            elif k not in wi:
                diffs.append(f"node {nid} ({w['class_type']}).{k}: editor sends {gi[k]!r}, the twin has none")
            elif json.dumps(gi[k]) != json.dumps(wi[k]) and gi[k] != wi[k]:
                diffs.append(f"node {nid} ({w['class_type']}).{k}: editor {gi[k]!r} != twin {wi[k]!r}")
        want_title = (w.get("_meta") or {}).get("title")
        if want_title and (g.get("_meta") or {}).get("title") != want_title:
            diffs.append(f"node {nid}: title {(g.get('_meta') or {}).get('title')!r} != {want_title!r}")
    return diffs


def boxes_overlap(boxes: dict[str, list[float]], margin: float = 0.0) -> list[str]:
    """Pairs of [x, y, w, h] boxes that overlap (touching is fine)."""
    ids = sorted(boxes)
    bad = []
    for i, a in enumerate(ids):
        ax, ay, aw, ah = boxes[a]
        for b in ids[i + 1:]:
            bx, by, bw, bh = boxes[b]
            if ax < bx + bw - margin and bx < ax + aw - margin and ay < by + bh - margin and by < ay + ah - margin:
                bad.append(f"{a} {[round(v) for v in boxes[a]]} overlaps {b} {[round(v) for v in boxes[b]]}")
    return bad


# ---------------------------------------------------------------------------------------------------- test models


def checkpoint_cross_widths(path: str | os.PathLike) -> list[int]:
    """Widths of a checkpoint U-Net's cross-attention layers in IP-Adapter order (input, output, middle)."""
    from safetensors import safe_open

    order = {"input_blocks": 0, "output_blocks": 1, "middle_block": 2}
    found = []
    with safe_open(str(path), "pt") as f:
        for k in f.keys():
            m = re.fullmatch(r"model\.diffusion_model\.(input_blocks|output_blocks|middle_block)\.?(\d*)\.\d+\."
                             r"transformer_blocks\.(\d+)\.attn2\.to_k\.weight", k)
            if m:
                found.append(((order[m.group(1)], int(m.group(2) or 0), int(m.group(3))),
                              f.get_slice(k).get_shape()[0]))
    return [w for _, w in sorted(found)]


def _link(dst: Path, target: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(target)


def provide_example_models(models_dir: Path, tiny_checkpoint: str | os.PathLike, vit_l_file: str | os.PathLike | None,
                           ipadapter_dir: Path | None = None) -> None:
    """Make a test server's ``models_dir`` hold every file name the examples use: the checkpoint and the CLIP
    vision names link to the tiny checkpoint and to a random ViT-L/14 file, and an IP-Adapter Plus file sized for
    the tiny checkpoint's U-Net is written (random weights, the released key layout)."""
    _link(models_dir / "checkpoints" / CHECKPOINT, Path(tiny_checkpoint))
    if vit_l_file is not None:
        for name in (CLIP_VISION_VIT_H, CLIP_VISION_VIT_L):
            if (models_dir / "clip_vision" / name).resolve() != Path(vit_l_file).resolve():
                _link(models_dir / "clip_vision" / name, Path(vit_l_file))
    folder = ipadapter_dir or models_dir / "ipadapter"
    target = folder / IPADAPTER_PLUS
    if not target.exists():
        import _diffsim as D

        folder.mkdir(parents=True, exist_ok=True)
        sd = D.ip_adapter_state_dict(dim=768, depth=1, heads=12, num_queries=16, embedding_dim=1024, output_dim=768,
                                     layer_widths=checkpoint_cross_widths(tiny_checkpoint), seed=1)
        D.save_ip_adapter(target, sd)


def shrink_for_cpu(api: dict) -> dict[str, dict]:
    """Edits that make an example cheap on a CPU without changing its graph: {node id: {input: value}}.
    64 px images, at most 3 sampler steps; the editor tests apply them as widget edits before queueing."""
    edits: dict[str, dict] = {}
    for nid, node in api.items():
        inp, ct = node["inputs"], node["class_type"]
        e = {}
        for k in ("width", "height"):
            if isinstance(inp.get(k), int) and inp[k] > 64:
                e[k] = 64
        if isinstance(inp.get("resolution"), int) and inp["resolution"] > 64:
            e["resolution"] = 64
        if isinstance(inp.get("steps"), int) and inp["steps"] > 3 and ("Sampler" in ct or ct == "BasicScheduler"):
            e["steps"] = 3
        if e:
            edits[nid] = e
    return edits


def apply_edits(api: dict, edits: dict[str, dict]) -> dict:
    out = json.loads(json.dumps(api))
    for nid, e in edits.items():
        out[nid]["inputs"].update(e)
    return out


# ---------------------------------------------------------------------------------------------------- cli


def _object_info_from_temp_server() -> dict:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _server import ComfyServer

    with tempfile.TemporaryDirectory() as base:
        srv = ComfyServer(os.environ["COMFYUI_PATH"], Path(base)).start()
        try:
            return srv.get("/object_info", timeout=60)
        finally:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=None, help="a running ComfyUI that loads this checkout of the pack; "
                    "default: start one from COMFYUI_PATH (run with that ComfyUI's Python)")
    ap.add_argument("--thumbnails", action="store_true",
                    help="also run every example on a temporary test server and rewrite the <name>.jpg thumbnails")
    ap.add_argument("--only", action="append", default=[], help="thumbnails of these templates only")
    a = ap.parse_args()
    if a.thumbnails:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _thumbnails

        _thumbnails.main(only=a.only)
        return
    if a.server:
        with urllib.request.urlopen(a.server + "/object_info", timeout=60) as r:
            info = json.loads(r.read().decode())
    else:
        info = _object_info_from_temp_server()
    for name in regenerate(info):
        print("wrote", ui_path(name).relative_to(ROOT))


if __name__ == "__main__":
    main()
