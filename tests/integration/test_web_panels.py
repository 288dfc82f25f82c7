"""The on-node result panels (web/sentinel.js) in the real ComfyUI editor, headless Chromium: the pinned frontend
(1.27.10, classic LiteGraph canvas) and the newest comfyui-frontend-package (1.58.1) with the classic canvas and
with the Vue node renderer ("Nodes 2.0", which never calls onDrawForeground).

Each case adds Sentinel nodes to an empty graph, delivers realistic ``executed`` messages through the app's own
api event (payloads built here by nodes/common/ui.py), and checks from the DOM that the panel shows the title, the
formatted values, one sparkline path per row with a finite series, that it is visible, on top, tall enough and
inside the node, that the node's saved widgets_values and its prompt inputs are unchanged, and that the browser
logged no console error beyond stock ComfyUI's. Screenshots go to pytest's tmp dir (printed with -s).

The newest frontend is looked for in $SENTINEL_FRONTEND_NEW or $SENTINEL_NEW_FRONTEND, else /tmp/fe/1.58.1/comfyui_frontend_package/static
(``pip download comfyui-frontend-package==1.58.1 --no-deps`` and unzip the wheel); its cases skip without it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from _browser import Browser, browser_available
from diffusion_sentinel.nodes.common import ui

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
NEW_FRONTEND = (os.environ.get("SENTINEL_FRONTEND_NEW") or os.environ.get("SENTINEL_NEW_FRONTEND")
                or "/tmp/fe/1.58.1/comfyui_frontend_package/static")
NAN = math.nan
TINY = "sd15-tiny-random.safetensors"

CASES = [  # (id, use the newest frontend, Nodes 2.0)
    pytest.param("1.27.10-classic", False, False, id="1.27.10-classic"),
    pytest.param("1.58.1-classic", True, False, id="1.58.1-classic"),
    pytest.param("1.58.1-nodes2", True, True, id="1.58.1-nodes2"),
]


# ------------------------------------------------------------------ payloads (as the nodes send them)
def predict_ui(p1: float = 0.7391) -> dict:
    p = ui.panel(
        "Artifact Predict", summary=f"{int(p1 >= 0.5)} of 3 flagged (P >= 0.5)",
        columns=[ui.col("item"), ui.col("p_artifact", "P(artifact)", direction=ui.LOWER_IS_BETTER, fmt=".3f"),
                 ui.col("d_max", "D_max", direction=ui.LOWER_IS_BETTER, fmt=".2e"),
                 ui.col("is_artifact", "artifact")],
        rows=[[0, 0.2134, 0.000123, False], [1, p1, 0.0456, p1 >= 0.5], [2, NAN, None, False]],
        highlight=[1] if p1 >= 0.5 else [],
        series=[[0.98, 0.91, 0.85, 0.88, 0.90], [0.97, NAN, 0.62, 0.55, 0.58], [NAN] * 5],
        series_label="latent cosine", notes=["rule: D_max over the last 60% of steps"])
    return ui.result_ui(p)


def legacy_series_ui() -> dict:
    return {"sentinel_series": [{"metric": "latent_cosine", "noise_frame": True, "steps": [0, 1, 2, 3],
                                 "series": [[0.1, 0.9, 0.95, 0.97], [0.2, 0.7, 0.6, 0.8]],
                                 "summary": [{"min": 0.9, "argmin_step": 1, "d_max": 0.0, "mean_last_half": 0.96},
                                             {"min": 0.6, "argmin_step": 2, "d_max": 0.1, "mean_last_half": 0.7}],
                                 "finite": [True, True]}]}


def matrix_ui(n: int) -> dict:
    p = ui.panel("DiffSim", summary=f"{n} pairs, mean 0.61",
                 columns=[ui.col("pair"), ui.col("diffsim", "DiffSim", direction="higher = more similar", fmt=".3f"),
                          ui.col("images", "images")],
                 rows=[[i, 0.5 + 0.01 * i, f"0 vs {i + 1}"] for i in range(n)])
    return ui.result_ui(p)


TEXT_UI = {"text": ["pair 0 vs 1: DiffSim 0.812 (higher = more similar)\npair 0 vs 2: DiffSim 0.455"]}

# ------------------------------------------------------------------ page scripts
ADD_NODES = """(() => {
  app.graph.clear();
  const mk = (type, x, y) => { const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n; };
  const nodes = [mk('SentinelArtifactPredict', 20, 60), mk('SentinelDiffSim', 500, 60),
                 mk('SentinelSimilarityTrajectory', 960, 60)];
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [30, 40]; app.canvas.setDirty(true, true);
  return nodes.map(n => ({id: n.id, widgets_values: n.serialize().widgets_values || null,
                          widgets: (n.widgets || []).length}));
})()"""

DISPATCH = ("app.api.dispatchCustomEvent('executed', {node: String(arguments[0]), display_node: String(arguments[0]),"
            " output: arguments[1], prompt_id: 'sentinel-web-test'})")

INSPECT = """((id) => {
  const els = document.querySelectorAll(`.sentinel-panels[data-sentinel-node="${id}"]`);
  const el = els[0];
  const node = app.graph.getNodeById(id);
  if (!el) return {count: 0, widgets: (node.widgets || []).map(w => w.name)};
  const r = el.getBoundingClientRect();
  const probe = document.elementFromPoint(r.left + r.width / 2, r.top + Math.min(r.height / 2, 24));
  const cs = getComputedStyle(el);
  const texts = (sel) => [...el.querySelectorAll(sel)].map(e => e.textContent);
  return {
    count: els.length, titles: texts('.sp-title'), summaries: texts('.sp-summary'),
    cells: texts('td:not(.sp-sparkcell)'), nanSparks: el.querySelectorAll('.sp-sparkcell .sp-nan').length,
    headers: texts('th .sp-label'), dirs: texts('th .sp-dir'), paths: el.querySelectorAll('svg.sp-spark path').length,
    strokes: [...el.querySelectorAll('svg.sp-spark path')].map(p => p.getAttribute('stroke')),
    highlighted: el.querySelectorAll('tr.sp-hl').length, notes: texts('.sp-notes li'),
    pre: el.querySelector('pre.sp-text')?.textContent ?? null, source: el.dataset.source,
    rect: [r.left, r.top, r.width, r.height], clientH: el.clientHeight, scrollH: el.scrollHeight,
    visible: el.checkVisibility ? el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}) : true,
    onTop: !!probe && el.contains(probe), inVueNode: !!el.closest('.lg-node'), inDomWidget: !!el.closest('.dom-widget'),
    color: cs.color, background: cs.backgroundColor, fontSize: cs.fontSize,
    nodeSize: [node.size[0], node.size[1]], widgets_values: node.serialize().widgets_values || null,
    serializedWidgetNames: (node.widgets || []).filter(w => w.serialize !== false).map(w => w.name),
  };
})(arguments[0])"""

RELOAD_WITH_OUTPUTS = """(async () => {
  const outs = JSON.parse(JSON.stringify(app.nodeOutputs));
  const wf = JSON.parse(JSON.stringify(app.graph.serialize()));
  await app.loadGraphData(wf);
  app.nodeOutputs = outs;  // what the frontend does when a workflow tab is shown again
  const pred = app.graph.nodes.find(n => n.type === 'SentinelArtifactPredict');
  return {keys: Object.keys(outs), widgets_values: pred.serialize().widgets_values || null};
})()"""

PROMPT_INPUTS = "app.graphToPrompt().then(p => Object.fromEntries(Object.entries(p.output).map(([k, v]) => [k, v.inputs])))"


# ------------------------------------------------------------------ servers
class _Servers:
    """One server per frontend, started on first use (the settings the tests POST stay in their own folders)."""

    def __init__(self, factory):
        from _server import find_checkpoint

        self.factory = factory
        self.running: dict[bool, object] = {}
        self.ckpt_path = find_checkpoint(TINY)
        self.ckpt = TINY if self.ckpt_path else None

    def get(self, newest: bool):
        if newest not in self.running:
            from _server import ComfyServer

            if newest and not Path(NEW_FRONTEND, "index.html").is_file():
                pytest.skip(f"the newest frontend is not unpacked at {NEW_FRONTEND} (set SENTINEL_FRONTEND_NEW)")
            base = self.factory.mktemp("comfy-web-newfe" if newest else "comfy-web")
            yaml = None
            if self.ckpt_path:  # for the real run
                yaml = base / "extra_model_paths.yaml"
                yaml.write_text(f"sentinel_tests:\n    base_path: {Path(self.ckpt_path).parent.parent}\n"
                                "    checkpoints: checkpoints\n")
            self.running[newest] = ComfyServer(os.environ["COMFYUI_PATH"], base, extra_model_yaml=str(yaml) if yaml else None,
                                               front_end_root=NEW_FRONTEND if newest else None).start()
        return self.running[newest]

    def stop(self):
        for s in self.running.values():
            s.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    why = browser_available()
    if why:
        pytest.skip(why)
    s = _Servers(tmp_path_factory)
    yield s
    s.stop()


def _wait_panel(b: Browser, node_id, what: str, min_h: float = 40):
    return b.wait_for(
        "(() => { const e = document.querySelector(`.sentinel-panels[data-sentinel-node=\"${arguments[0]}\"]`);"
        " return !!e && e.isConnected && e.getBoundingClientRect().height > arguments[1] && e.textContent.length > 0;"
        " })()", node_id, min_h, timeout=30, what=what)


def _settle(b: Browser):
    b.js("app.canvas.setDirty(true, true)")
    time.sleep(0.6)  # a few frames: the canvas draws, the DOM widgets follow


def _wait_text(b: Browser, node_id, text: str):
    b.wait_for("(document.querySelector(`.sentinel-panels[data-sentinel-node=\"${arguments[0]}\"]`)"
               "?.textContent || '').includes(arguments[1])", node_id, text, timeout=20, what=f"'{text}' in the panel")


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize(("case", "newest", "vue"), CASES)
def test_result_panels_in_the_editor(servers, tmp_path, case, newest, vue):
    srv = servers.get(newest)
    settings = {"Comfy.ColorPalette": "dark", "Comfy.Minimap.Visible": False}
    if newest:
        settings["Comfy.VueNodes.Enabled"] = vue
    with Browser(srv.url + "/", settings=settings, window=(1500, 1000)) as b:
        version = b.js("window.__COMFYUI_FRONTEND_VERSION__ || null")
        assert version == ("1.58.1" if newest else "1.27.10"), version
        assert b.js("app.extensions.some(e => e.name === 'diffusion_sentinel.results')")
        if newest:
            assert b.js("app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") is vue

        nodes = b.js(ADD_NODES)
        pred, diff, traj = (n["id"] for n in nodes)
        before_prompt = b.js_async(PROMPT_INPUTS)
        b.screenshot(tmp_path / f"{case}-0-empty.png")

        # -------- Artifact Predict: a sentinel_result panel
        b.js(DISPATCH, pred, predict_ui())
        _wait_panel(b, pred, "the Artifact Predict panel")
        _settle(b)
        info = b.js(INSPECT, pred)
        b.screenshot(tmp_path / f"{case}-1-predict.png")
        b.screenshot(tmp_path / f"{case}-1-predict-panel.png", selector=f".sentinel-panels[data-sentinel-node='{pred}']")
        assert info["count"] == 1, info
        assert info["titles"] == ["Artifact Predict"], info
        assert info["summaries"] == ["1 of 3 flagged (P >= 0.5)"], info
        assert info["headers"] == ["item", "P(artifact)", "D_max", "artifact", "latent cosine"], info
        assert info["dirs"] == ["↓ better", "↓ better", "0.55 … 0.98"], info
        for v in ("0.213", "0.739", "1.23e-04", "4.56e-02", "yes", "no", "nan"):
            assert v in info["cells"], (v, info["cells"])
        assert info["cells"].count("nan") == 2, info["cells"]  # P and D_max of item 2
        assert info["paths"] == 2 and info["nanSparks"] == 1, info  # item 2's series is all NaN: "nan", no path
        assert len(set(info["strokes"])) == 2, info
        assert info["highlighted"] == 1 and info["notes"] == ["rule: D_max over the last 60% of steps"], info
        assert info["visible"] and info["onTop"], info
        assert info["rect"][3] >= 120, info  # at canvas scale 1: the whole table, not 2-3 lines
        assert info["scrollH"] <= info["clientH"] + 2, info  # a 3-row panel fits without scrolling
        assert info["inVueNode"] is vue and info["inDomWidget"] is (not vue), info
        assert info["nodeSize"][1] >= info["rect"][3] and info["nodeSize"][0] >= 300, info
        assert float(info["fontSize"].rstrip("px")) >= 11, info
        # not serialised: the saved node and the prompt are as before
        assert info["widgets_values"] == nodes[0]["widgets_values"], info
        assert "sentinel_result" not in info["serializedWidgetNames"], info
        assert b.js_async(PROMPT_INPUTS) == before_prompt

        # -------- 1.58.1: the right side panel lists the node's widgets; ours must stay in the node
        if newest:
            b.js("(app.canvas.selectNode(app.graph.getNodeById(arguments[0])), document.getElementById('vue-app')"
                 ".__vue_app__.config.globalProperties.$pinia._s.get('rightSidePanel').openPanel('parameters'), true)",
                 pred)
            time.sleep(1.5)
            side = b.js(INSPECT, pred)
            b.screenshot(tmp_path / f"{case}-1-side-panel.png")
            assert side["count"] == 1 and side["inVueNode"] is vue and side["inDomWidget"] is (not vue), side
            assert side["visible"] and side["rect"][3] >= 120, side
            assert "sentinel_result" not in b.js("document.body.innerText"), "the panel is listed as a parameter"
            b.js("(document.getElementById('vue-app').__vue_app__.config.globalProperties.$pinia._s"
                 ".get('rightSidePanel').closePanel(), app.canvas.deselectAll?.(), true)")

        # -------- a second result refills the same widget
        b.js(DISPATCH, pred, predict_ui(p1=0.25))
        _wait_text(b, pred, "0 of 3 flagged")
        again = b.js(INSPECT, pred)
        assert again["count"] == 1 and "0.250" in again["cells"] and "0.739" not in again["cells"], again
        assert again["highlighted"] == 0, again

        # -------- DiffSim (text until it sends panels) and Similarity Trajectory (old series payload)
        b.js(DISPATCH, diff, TEXT_UI)
        b.js(DISPATCH, traj, legacy_series_ui())
        _wait_panel(b, diff, "the DiffSim text")
        _wait_panel(b, traj, "the Similarity Trajectory panel")
        d = b.js(INSPECT, diff)
        t = b.js(INSPECT, traj)
        assert d["source"] == "text" and d["pre"] == TEXT_UI["text"][0], d
        assert d["visible"] and d["rect"][3] >= 40, d
        assert t["source"] == "sentinel_series" and t["paths"] == 2 and "0.900" in t["cells"], t
        assert t["visible"], t
        _settle(b)
        b.screenshot(tmp_path / f"{case}-2-all.png")

        # -------- a long result (40 pairs): the node grows only so far, the panel scrolls, it never collapses
        b.js(DISPATCH, diff, matrix_ui(40))
        _wait_text(b, diff, "40 pairs")
        _settle(b)
        big = b.js(INSPECT, diff)
        b.screenshot(tmp_path / f"{case}-2-long.png")
        assert big["source"] == "sentinel_result" and big["count"] == 1 and len(big["cells"]) == 40 * 3, big
        assert 330 <= big["clientH"] <= 372 and big["scrollH"] > big["clientH"] + 200, big
        assert big["visible"] and big["onTop"], big

        # -------- a re-opened workflow: the frontend restores its outputs (app.nodeOutputs -> onNodeOutputsUpdated)
        restored = b.js_async(RELOAD_WITH_OUTPUTS)
        assert str(pred) in restored["keys"], restored
        assert restored["widgets_values"] == nodes[0]["widgets_values"], restored  # nothing of ours was saved
        _wait_text(b, pred, "0 of 3 flagged")
        _wait_panel(b, traj, "the restored Similarity Trajectory panel")
        r = b.js(INSPECT, pred)
        assert r["count"] == 1 and r["paths"] == 2 and r["visible"], r
        _settle(b)
        b.screenshot(tmp_path / f"{case}-3-restored.png")

        # -------- the light palette: the panel follows the theme
        if not vue:
            b.js_async("app.extensionManager.setting.set('Comfy.ColorPalette', 'light')")
            b.wait_for("getComputedStyle(document.querySelector('.sentinel-panels')).color !== arguments[0]",
                       info["color"], timeout=10, what="the light palette's text colour")
            _settle(b)
            light = b.js(INSPECT, pred)
            b.screenshot(tmp_path / f"{case}-4-light.png")
            assert light["color"] != info["color"] and light["background"] != info["background"], (light, info)

        errors = b.console_errors()
        assert errors == [], errors
    print(f"\n{case}: screenshots in {tmp_path}")


def _example_api(name: str) -> Path | None:
    p = ROOT / "example_workflows" / "api" / f"{name}.json"
    return p if p.is_file() else None


def expected_cell(v, fmt) -> str:
    """What a table cell shows (web/sentinel_panels.js formatValue), from Python: format() for formatted numbers."""
    if v is None:
        return "nan"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ", ".join(expected_cell(x, fmt) for x in v)
    if isinstance(v, (int, float)):
        whole = float(v).is_integer()
        if fmt:
            if fmt.endswith("d"):
                return f"{int(v):{fmt}}" if whole else str(v)
            return format(v, fmt)
        return str(int(v)) if whole else format(v, ".4g")
    return str(v)


def _wait_history(srv, pid: str, timeout: float = 600) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        h = srv.get(f"/history/{pid}")
        if pid in h and h[pid].get("status", {}).get("completed") is not None:
            assert h[pid]["status"].get("status_str") != "error", json.dumps(h[pid]["status"])[:4000]
            return h[pid]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {pid} did not finish in {timeout}s")


@pytest.mark.parametrize(("case", "newest", "vue"), CASES)
def test_panels_after_a_real_run(servers, tmp_path, case, newest, vue):
    """An example workflow queued for the page (its client id) on the tiny checkpoint: every Sentinel node that
    returned a ui result shows it, with the values the server recorded in /history."""
    from _server import load_api_workflow

    srv = servers.get(newest)
    if not servers.ckpt:
        pytest.skip(f"{TINY} not found (COMFY_MODELS)")
    path = _example_api("artifact_predict_keep_best")
    assert path is not None, "example_workflows/api/artifact_predict_keep_best.json is missing"
    api = load_api_workflow(path, servers.ckpt)
    for node in api.values():  # a new sampler seed per case: two cases share a server, and ComfyUI sends no
        if "KSampler" in node["class_type"] and isinstance(node["inputs"].get("seed"), int):  # "executed" for
            node["inputs"]["seed"] += 1 + [c.values[0] for c in CASES].index(case)  # cached nodes that are no outputs
    settings = {"Comfy.ColorPalette": "dark", "Comfy.Minimap.Visible": False}
    if newest:
        settings["Comfy.VueNodes.Enabled"] = vue
    with Browser(srv.url + "/", settings=settings, window=(1600, 1000)) as b:
        b.js_async("app.loadApiJson(arguments[0], 'sentinel-web-test.json')", api)
        b.wait_for("app.graph.nodes.length === arguments[0]", len(api), what="the workflow's nodes")
        client = b.wait_for("app.api.clientId", what="the page's websocket client id")
        status, body = srv.post("/prompt", {"prompt": api, "client_id": client})
        assert status == 200, body
        outputs = _wait_history(srv, body["prompt_id"])["outputs"]
        shown = []
        for nid, node in api.items():
            out = outputs.get(nid) or {}
            if not node["class_type"].startswith("Sentinel"):
                continue
            source = ("sentinel_result" if out.get("sentinel_result") else "sentinel_series"
                      if out.get("sentinel_series") else "text" if any(out.get("text") or []) else None)
            if source is None:
                continue
            # DOM widgets are mounted for nodes in view only (classic canvas): look at the node, at scale 1
            b.js("(app.canvas.ds.scale = 1, app.canvas.centerOnNode(app.graph.getNodeById(arguments[0])),"
                 " app.canvas.setDirty(true, true), true)", int(nid))
            try:
                _wait_panel(b, int(nid), f"the panel of {node['class_type']}", min_h=20)  # one text line: 36 px
            except TimeoutError as e:
                b.screenshot(tmp_path / f"{case}-run-{nid}-missing.png")
                raise AssertionError(f"{e}\nhistory output: {json.dumps(out)[:1500]}\npage: "
                                     f"{b.js(INSPECT, int(nid))}\nnodeOutputs: "
                                     f"{json.dumps(b.js('app.nodeOutputs[arguments[0]] || null', nid))[:1500]}\n"
                                     f"console: {[m['message'][:300] for m in b.console_logs()][-8:]}") from None
            info = b.js(INSPECT, int(nid))
            b.screenshot(tmp_path / f"{case}-run-{nid}-{node['class_type']}.png")
            assert info["source"] == source and info["count"] == 1, (nid, info)
            assert info["visible"] and info["onTop"] and info["rect"][3] >= 20, (nid, info)
            assert info["scrollH"] <= info["clientH"] + 2 or info["clientH"] >= 300, (nid, info)  # fits, or capped
            if source == "sentinel_result":
                panels = out["sentinel_result"]
                assert info["titles"] == [p["title"] for p in panels if p.get("title")], (nid, info)
                first = panels[0]
                if first.get("rows") and first.get("columns"):
                    want = [expected_cell(v, c.get("fmt")) for v, c in zip(first["rows"][0], first["columns"])]
                    assert info["cells"][:len(want)] == want, (nid, info["cells"], want)
                n_series = sum(1 for p in panels for sr in (p.get("series") or []) if any(v is not None for v in sr))
                assert info["paths"] == n_series, (nid, info)
            shown.append(node["class_type"])
        _settle(b)
        b.js("app.canvas.ds.scale = 0.6, app.canvas.setDirty(true, true)")
        _settle(b)
        b.screenshot(tmp_path / f"{case}-run.png")
        assert len(shown) >= 2, (shown, {k: list(v) for k, v in outputs.items()})
        errors = b.console_errors()
        assert errors == [], errors
    print(f"\n{case}: panels of {shown}; screenshot in {tmp_path}")


def _doc_files() -> dict[str, Path]:
    docs = ROOT / "web" / "docs"
    return {p.stem: p for p in sorted(docs.glob("*.md"))} if docs.is_dir() else {}


HELP_URLS = """(async (name) => {
  // the URLs both frontends try (src/services/nodeHelpService.ts in 1.27.10 and 1.58.1): the pack is the
  // custom_nodes folder in the node's python_module (an "@version" suffix dropped)
  const def = LiteGraph.registered_node_types[name].nodeData;
  const pack = def.python_module.split('.')[1].split('@')[0];
  const out = {python_module: def.python_module, pack};
  for (const [k, url] of [['locale', `/extensions/${pack}/docs/${name}/en.md`], ['plain', `/extensions/${pack}/docs/${name}.md`]]) {
    const r = await fetch(api.fileURL(url));
    out[k] = {url, status: r.status, type: r.headers.get('content-type'), text: r.ok ? await r.text() : null};
  }
  return out;
})(arguments[0])"""


OPEN_HELP = """(async (name) => {
  // the node help panel, opened the way the UI opens it: 1.58.1 shows it in the right side panel's Info tab of
  // the selected node; 1.27.10 in the node library sidebar (the selection toolbox's info button does this)
  const pinia = document.getElementById('vue-app')?.__vue_app__?.config?.globalProperties?.$pinia;
  if (!pinia) return 'no pinia';
  app.graph.clear();
  const n = LiteGraph.createNode(name); n.pos = [100, 100]; app.graph.add(n);
  app.canvas.selectNode(n);
  const rsp = pinia._s.get('rightSidePanel');
  if (rsp) { rsp.openPanel('info'); return 'right side panel'; }
  const sidebar = pinia._s.get('sidebarTab'), help = pinia._s.get('nodeHelp');
  if (!sidebar || !help) return 'no help store';
  if (sidebar.activeSidebarTabId !== 'node-library') sidebar.toggleSidebarTab('node-library');
  help.openHelp(pinia._s.get('nodeDef').nodeDefsByName[name]);
  return 'node library';
})(arguments[0])"""


def _doc_probe(md: str) -> str:
    """A few words of the doc's first paragraph, as the rendered help shows them."""
    import re

    for line in md.splitlines():
        t = line.strip()
        if not t or t.startswith(("#", "-", "*", ">", "|", "```", "!", "<")) or re.match(r"\d+\.", t):
            continue
        t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
        t = re.sub(r"[*_`]", "", t)
        return " ".join(t.split()[:5])
    return ""


@pytest.mark.parametrize("newest", [False, True], ids=["1.27.10", "1.58.1"])
def test_node_help_finds_the_packs_docs(servers, newest, tmp_path):
    """Both frontends fetch /extensions/<pack>/docs/<NodeId>/<locale>.md, then /extensions/<pack>/docs/<NodeId>.md
    (web/docs/<NodeId>.md here), and show it as the node's help. Nodes whose doc is not written yet are skipped."""
    docs = _doc_files()
    if not docs:
        pytest.skip("no web/docs/<NodeId>.md yet")
    srv = servers.get(newest)
    with Browser(srv.url + "/", settings={"Comfy.VueNodes.Enabled": False} if newest else {}) as b:
        b.js("(window.api = window.comfyAPI.api.api, true)")
        ids = b.js("Object.keys(LiteGraph.registered_node_types).filter(k => k.startsWith('Sentinel'))")
        checked = []
        for name in ids:
            if name not in docs:
                continue  # the family's doc is not written yet
            got = b.js_async(HELP_URLS, name)
            assert got["pack"] == "diffusion-sentinel", got
            assert got["plain"]["status"] == 200, got
            assert "text/html" not in (got["plain"]["type"] or ""), got  # 1.58.1 refuses HTML answers
            assert got["plain"]["text"] == docs[name].read_text(), name
            checked.append(name)
        assert checked, f"none of {sorted(docs)} is a registered node id"
        # the first documented node's help, opened in the UI
        name = checked[0]
        probe = _doc_probe(docs[name].read_text())
        how = b.js_async(OPEN_HELP, name)
        if how.startswith("no "):
            pytest.skip(f"cannot open the help panel here ({how})")
        if probe:
            b.wait_for("document.body.innerText.replace(/\\s+/g, ' ').includes(arguments[0])", probe, timeout=20,
                       what=f"the help of {name} ({how})")
        b.screenshot(tmp_path / f"help-{'1.58.1' if newest else '1.27.10'}-{name}.png")
        # the only console errors beyond stock ComfyUI: the locale file, which both frontends try first
        rest = [e for e in b.console_errors() if not ("/docs/" in e and "/en.md" in e and "404" in e)]
        assert rest == [], rest
