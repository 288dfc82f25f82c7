// Tests of web/sentinel.js (the glue) with a fake `app`, a fake node type and a tiny fake DOM: which node types
// it wraps, that the DOM widget is made once, is not serialised, is refilled on every result, and sizes the node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { fixtures, loadExtension } from "./_load.mjs";

const FX = fixtures();

// ---------------------------------------------------------------- fakes
class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.dataset = {};
    this.props = {};
    this.style = { setProperty: (k, v) => { this.props[k] = v; } };
    this.innerHTML = "";
    this.offsetHeight = 0;
    this.id = "";
  }
  appendChild(c) { this.children.push(c); return c; }
}

function installDOM() {
  const head = new FakeElement("head");
  globalThis.document = {
    head,
    createElement: (t) => new FakeElement(t),
    getElementById: (id) => head.children.find((c) => c.id === id) ?? null,
  };
  const observers = [];
  globalThis.ResizeObserver = class {
    constructor(cb) { this.cb = cb; this.targets = []; observers.push(this); }
    observe(t) { this.targets.push(t); }
    disconnect() { this.targets = []; }
  };
  return { head, observers };
}

class FakeNode {
  constructor(type, id) {
    this.type = type;
    this.id = id;
    this.size = [240, 120];
    this.widgets = [{ name: "seed", value: 2334 }];
    this.sizes = [];
  }
  addDOMWidget(name, type, element, options) {
    const w = { name, type, element, options };
    this.widgets.push(w);
    return w;
  }
  // what LiteGraph's computeSize does with a DOM widget: its min height plus the rest of the node
  computeSize() {
    const dom = this.widgets.find((w) => w.options?.getMinHeight);
    return [200, 80 + (dom ? dom.options.getMinHeight() : 0)];
  }
  setSize(s) { this.size = [...s]; this.sizes.push([...s]); }
  setDirtyCanvas() {}
}

async function setup() {
  const dom = installDOM();
  const exts = [];
  const graphNodes = new Map();
  globalThis.__sentinelFakeApp = {
    registerExtension: (e) => exts.push(e),
    graph: { getNodeById: (id) => graphNodes.get(String(id)) ?? null, get _nodes() { return [...graphNodes.values()]; } },
  };
  await loadExtension();
  assert.equal(exts.length, 1);
  const ext = exts[0];
  const types = {};
  for (const [name, mod] of [["SentinelArtifactPredict", "custom_nodes.diffusion-sentinel"],
    ["SentinelDiffSim", "custom_nodes.diffusion-sentinel"], ["KSampler", "nodes"]]) {
    let calls = 0;
    const proto = { onExecuted() { calls++; } };
    await ext.beforeRegisterNodeDef({ prototype: proto }, { name, python_module: mod });
    types[name] = { proto, calls: () => calls };
  }
  const make = (type, id) => {
    const n = new FakeNode(type, id);
    n.onExecuted = types[type].proto.onExecuted;
    graphNodes.set(String(id), n);
    return n;
  };
  return { ext, types, make, dom };
}

const panelWidget = (n) => n.widgets.filter((w) => w.name === "sentinel_result");

// ---------------------------------------------------------------- tests
test("registers one extension; wraps only the pack's node types and keeps their onExecuted", async () => {
  const { ext, types, make } = await setup();
  assert.equal(ext.name, "diffusion_sentinel.results");
  assert.equal(typeof ext.onNodeOutputsUpdated, "function");
  assert.notEqual(types.SentinelArtifactPredict.proto.onExecuted.toString(), "onExecuted() { calls++; }");
  assert.equal(types.KSampler.proto.onExecuted.toString(), "onExecuted() { calls++; }");
  const n = make("SentinelArtifactPredict", 7);
  n.onExecuted(FX.panels.ui);
  assert.equal(types.SentinelArtifactPredict.calls(), 1);
});

test("the first result makes one unserialised DOM widget; later results refill it", async () => {
  const { make, dom } = await setup();
  const n = make("SentinelArtifactPredict", 3);
  n.onExecuted(FX.panels.ui);
  const ws = panelWidget(n);
  assert.equal(ws.length, 1);
  const w = ws[0];
  assert.equal(w.serialize, false); // not in widgets_values
  assert.equal(w.options.serialize, false); // not in the prompt
  assert.equal(w.options.hideInPanel, true); // not a parameter in 1.58.1's side panel
  assert.equal(w.type, "sentinel-panels");
  assert.equal(w.options.getValue(), "");
  const content = w.element.children[0];
  assert.match(content.innerHTML, /Artifact Predict/);
  assert.match(content.innerHTML, /Batch Diversity/);
  assert.equal((content.innerHTML.match(/<path /g) || []).length, 2);
  assert.equal(w.element.dataset.source, "sentinel_result");
  assert.equal(dom.head.children.filter((c) => c.id === "sentinel-panels-css").length, 1);

  n.onExecuted({ text: ["kept 1 of 2: [0]"] });
  assert.equal(panelWidget(n).length, 1);
  assert.match(content.innerHTML, /<pre class="sp-text">kept 1 of 2: \[0\]<\/pre>/);
  assert.equal(w.element.dataset.source, "text");
  // the seed widget (and its value) is untouched: saved widgets_values keep their slots
  assert.deepEqual(n.widgets[0], { name: "seed", value: 2334 });
});

test("an output with nothing to show makes no widget", async () => {
  const { make } = await setup();
  const n = make("SentinelDiffSim", 4);
  n.onExecuted({ images: [{ filename: "a.png" }] });
  assert.equal(panelWidget(n).length, 0);
  n.onExecuted(undefined);
  assert.equal(panelWidget(n).length, 0);
});

test("the node grows to show the panels (bounded), and follows the content unless the user resized it", async () => {
  const { make, dom } = await setup();
  const n = make("SentinelArtifactPredict", 5);
  n.onExecuted(FX.panels.ui);
  const w = panelWidget(n)[0];
  const minH = w.options.getMinHeight();
  assert.ok(minH > 150 && minH <= 360 + 12, String(minH));
  assert.ok(w.options.getMaxHeight() >= minH);
  assert.ok(n.size[0] > 240 && n.size[0] <= 640, String(n.size)); // wider for the table
  assert.equal(n.size[1], 80 + minH);
  assert.equal(w.element.props["--sp-min-h"], `${minH - 12}px`);

  // 300 rows: the node stops growing at the cap, the panel scrolls
  const rows = Array.from({ length: 300 }, (_, i) => [i, 0.5, 0.1, false]);
  const big = { ...FX.panels.predict, rows, series: null, highlight: [] };
  n.onExecuted({ sentinel_result: [big] });
  assert.equal(w.options.getMinHeight(), 360 + 12);
  assert.equal(n.size[1], 80 + 360 + 12);

  // back to a small result: the node shrinks again (it was sized by us)
  n.onExecuted({ text: ["one line"] });
  assert.ok(n.size[1] < 200, String(n.size));

  // the user makes the node taller: a new small result does not shrink it
  n.setSize([n.size[0], 500]);
  n.onExecuted({ text: ["two"] });
  assert.equal(n.size[1], 500);

  // once laid out, the measured height replaces the estimate
  const ro = dom.observers.at(-1);
  w.element.children[0].offsetHeight = 40;
  ro.cb();
  assert.equal(w.options.getMinHeight(), 48 + 12);
});

test("outputs restored by the frontend (onNodeOutputsUpdated) are shown on the pack's nodes only", async () => {
  const { ext, make } = await setup();
  const a = make("SentinelArtifactPredict", 11);
  const k = make("KSampler", 12);
  k.addDOMWidget = () => assert.fail("KSampler must not get a widget");
  ext.onNodeOutputsUpdated({ 11: FX.panels.ui, 12: { text: ["x"] }, 99: { text: ["no such node"] } });
  assert.equal(panelWidget(a).length, 1);
  assert.match(panelWidget(a)[0].element.children[0].innerHTML, /Artifact Predict/);
});

test("configure of an old saved node drops the stale seed control value before the frontend applies it", async () => {
  installDOM();
  const exts = [];
  globalThis.__sentinelFakeApp = { registerExtension: (e) => exts.push(e), graph: { getNodeById: () => null } };
  await loadExtension();
  const seen = [];
  const proto = { configure(info) { seen.push(info.widgets_values); } };
  const def = { name: "SentinelDiffSim", python_module: "custom_nodes.diffusion-sentinel",
                input: { required: { seed: ["INT", { default: 2334, control_after_generate: false }],
                                     resolution: ["INT", { default: 512 }] } } };
  await exts[0].beforeRegisterNodeDef({ prototype: proto }, def);
  const node = Object.create(proto);
  node.widgets = [{ name: "seed" }, { name: "resolution" }, { name: "sentinel_result", serialize: false }];
  node.configure({ id: 1, widgets_values: [2334, "fixed", 256] });
  node.configure({ id: 1, widgets_values: [2334, 256] });
  assert.deepEqual(seen, [[2334, 256], [2334, 256]]);
  // a node type without such an input keeps the frontend's configure untouched
  const proto2 = { configure() {} };
  const orig = proto2.configure;
  await exts[0].beforeRegisterNodeDef({ prototype: proto2 }, { name: "SentinelArtifactPredict",
    python_module: "custom_nodes.diffusion-sentinel", input: { required: { threshold: ["FLOAT", {}] } } });
  assert.equal(proto2.configure, orig);
});

test("the node does not grow over a node to its right", async () => {
  const { make } = await setup();
  const n = make("SentinelArtifactPredict", 5);
  n.pos = [0, 40];
  const right = make("KSampler", 6);
  right.pos = [330, 40]; // 90 px right of the node's 240 px edge: it may grow by 70 px (a 20 px gap stays)
  n.onExecuted(FX.panels.ui);
  assert.equal(n.size[0], 310);
  assert.deepEqual(right.pos, [330, 40]);
  // alone in the graph, the same result makes it wider than that
  const { make: make2 } = await setup();
  const m = make2("SentinelArtifactPredict", 7);
  m.pos = [0, 40];
  m.onExecuted(FX.panels.ui);
  assert.ok(m.size[0] > 310, String(m.size));
});
