// Diffusion Sentinel: the labelling widget of "Label Artifacts (click)" (SentinelLabelArtifacts).
//
// While the node runs it waits for labels: the server sends "sentinel.label.request" (the batch as temp images,
// the classifier's P(artifact) per image, the least-sure items); this widget shows them as thumbnails inside the
// node (a DOM widget: classic canvas and Nodes 2.0). Click an image to mark it as an artifact, ⊘ to leave it out,
// then "Save labels & continue" (or Skip / Cancel run); the answer goes to POST /sentinel/label/answer and the
// node continues the graph. After the run the widget shows the saved labels (ui key "sentinel_label").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "SentinelLabelArtifacts";
const UI_KEY = "sentinel_label";
const ROUTE_ANSWER = "/sentinel/label/answer";
const ROUTE_PENDING = "/sentinel/label/pending";
const TILE = 112; // thumbnail size in px
const GAP = 6;
const WIDGETS = new Set(); // every Label widget, also in subgraphs

// ------------------------------------------------------------------------------------------- pure helpers
/** The labels a request starts with: all natural (0), or the classifier's flags with preselect. */
export function initialLabels(req) {
  const p = req.p || [];
  return p.map((v) => (req.preselect && (v === null || v >= req.threshold) ? 1 : 0));
}

/** Click: artifact <-> natural (a left-out image becomes an artifact). */
export function toggleArtifact(v) {
  return v === 1 ? 0 : 1;
}

/** ⊘: leave out <-> natural. */
export function toggleLeaveOut(v) {
  return v === null ? 0 : null;
}

export function countLabels(labels) {
  const c = { artifact: 0, natural: 0, left_out: 0 };
  for (const v of labels) c[v === 1 ? "artifact" : v === 0 ? "natural" : "left_out"] += 1;
  return c;
}

export function fmtP(v) {
  return v === null || v === undefined || !Number.isFinite(v) ? "nan" : Number(v).toFixed(2);
}

function fmtTime(s) {
  s = Math.max(0, Math.round(s));
  const m = Math.floor(s / 60);
  return m ? `${m}:${String(s % 60).padStart(2, "0")}` : `${s} s`;
}

function imageURL(ref) {
  const q = `filename=${encodeURIComponent(ref.filename)}&type=${encodeURIComponent(ref.type || "temp")}` +
    `&subfolder=${encodeURIComponent(ref.subfolder || "")}`;
  return api.apiURL(`/view?${q}`);
}

// ------------------------------------------------------------------------------------------------ styles
const CSS = `
.sentinel-label { display:flex; flex-direction:column; gap:6px; width:100%; box-sizing:border-box; padding:4px 2px;
  font: 12px sans-serif; color: var(--input-text, #ddd); }
.sentinel-label .sl-head { display:flex; justify-content:space-between; gap:8px; align-items:baseline; }
.sentinel-label .sl-status { font-weight:600; }
.sentinel-label .sl-status.waiting { color:#ffb74d; }
.sentinel-label .sl-status.error { color:#ef5350; }
.sentinel-label .sl-help { opacity:0.75; font-size:11px; }
.sentinel-label .sl-grid { display:grid; grid-template-columns:repeat(auto-fill, ${TILE}px); gap:${GAP}px;
  justify-content:start; }
.sentinel-label .sl-tile { position:relative; width:${TILE}px; height:${TILE}px; border-radius:6px; overflow:hidden;
  cursor:pointer; outline:2px solid rgba(120,200,120,0.55); outline-offset:-2px; background:#222; user-select:none; }
.sentinel-label .sl-tile img { width:100%; height:100%; object-fit:cover; display:block; pointer-events:none; }
.sentinel-label .sl-tile.artifact { outline:4px solid #e53935; outline-offset:-4px; }
.sentinel-label .sl-tile.leftout img { opacity:0.25; }
.sentinel-label .sl-tile.leftout { outline:2px dashed #888; }
.sentinel-label .sl-tile.readonly { cursor:default; }
.sentinel-label .sl-tag { position:absolute; padding:1px 4px; border-radius:3px; background:rgba(0,0,0,0.7);
  font-size:11px; line-height:14px; color:#eee; pointer-events:none; }
.sentinel-label .sl-idx { left:3px; top:3px; }
.sentinel-label .sl-p { left:3px; bottom:3px; }
.sentinel-label .sl-badge { right:3px; bottom:3px; background:#e53935; font-weight:700; display:none; }
.sentinel-label .sl-tile.artifact .sl-badge { display:block; }
.sentinel-label .sl-tile.leftout .sl-badge { display:block; background:#666; }
.sentinel-label .sl-mark { right:3px; top:3px; background:#ffb300; color:#000; font-weight:700; }
.sentinel-label .sl-btn-out, .sentinel-label .sl-btn-zoom { position:absolute; top:3px; width:18px; height:18px;
  padding:0; border:none; border-radius:3px; background:rgba(0,0,0,0.6); color:#eee; font-size:12px; line-height:18px;
  cursor:pointer; }
.sentinel-label .sl-btn-out { left:${TILE / 2 - 20}px; }
.sentinel-label .sl-btn-zoom { left:${TILE / 2 + 2}px; }
.sentinel-label .sl-bar { display:flex; gap:6px; align-items:center; flex-wrap:wrap; }
.sentinel-label .sl-bar button { padding:4px 10px; border-radius:4px; border:1px solid #555; cursor:pointer;
  background: var(--comfy-input-bg, #333); color: var(--input-text, #ddd); font-size:12px; }
.sentinel-label .sl-bar button.primary { background:#2e7d32; border-color:#2e7d32; color:#fff; font-weight:600; }
.sentinel-label .sl-bar button:disabled { opacity:0.4; cursor:default; }
.sentinel-label .sl-counts { white-space:nowrap; opacity:0.85; }
.sentinel-label-zoom { position:fixed; inset:0; z-index:10000; background:rgba(0,0,0,0.85); display:flex;
  align-items:center; justify-content:center; cursor:zoom-out; }
.sentinel-label-zoom img { max-width:92vw; max-height:92vh; image-rendering:auto; }
`;

function ensureStyle() {
  if (document.getElementById("sentinel-label-style")) return;
  const s = document.createElement("style");
  s.id = "sentinel-label-style";
  s.textContent = CSS;
  document.head.appendChild(s);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function zoom(src) {
  const o = el("div", "sentinel-label-zoom");
  const img = el("img");
  img.src = src;
  o.appendChild(img);
  const close = () => { o.remove(); document.removeEventListener("keydown", onKey, true); };
  const onKey = (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } };
  o.addEventListener("click", close);
  document.addEventListener("keydown", onKey, true);
  document.body.appendChild(o);
}

// ------------------------------------------------------------------------------------------------ widget
class LabelWidget {
  constructor(node) {
    this.node = node;
    this.queue = []; // open requests for this node (normally one)
    this.req = null; // the request shown
    this.labels = [];
    this.final = null; // the state after the run (ui key)
    this.status = "";
    this.statusKind = "";
    this.busy = false;
    ensureStyle();
    this.root = el("div", "sentinel-label");
    this.root.dataset.sentinelLabel = "1";
    // keep clicks in the widget (no node drag / canvas selection)
    for (const ev of ["pointerdown", "mousedown", "dblclick"]) this.root.addEventListener(ev, (e) => e.stopPropagation());
    this.head = el("div", "sl-head");
    this.statusEl = el("span", "sl-status");
    this.countsEl = el("span", "sl-counts");
    this.head.append(this.statusEl, this.countsEl);
    this.helpEl = el("div", "sl-help");
    this.grid = el("div", "sl-grid");
    this.bar = el("div", "sl-bar");
    this.saveBtn = this.button("Save labels & continue", "primary", () => this.answer("save"));
    this.skipBtn = this.button("Skip (save nothing)", "", () => this.answer("skip"));
    this.cancelBtn = this.button("Cancel run", "", () => this.answer("cancel"));
    this.allBtn = this.button("All natural", "", () => { this.labels = this.labels.map(() => 0); this.render(); });
    this.bar.append(this.saveBtn, this.skipBtn, this.cancelBtn, this.allBtn);
    this.root.append(this.head, this.helpEl, this.grid, this.bar);
    this.timer = setInterval(() => this.tick(), 1000);
    this.render();
  }

  button(text, cls, fn) {
    const b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", (e) => { e.stopPropagation(); fn(); });
    return b;
  }

  show(req) {
    if (this.queue.some((r) => r.token === req.token) || this.req?.token === req.token) return;
    req._received = performance.now();
    this.queue.push(req);
    if (!this.req) this.next();
  }

  next() {
    this.req = this.queue.shift() || null;
    this.busy = false;
    if (this.req) {
      this.final = null;
      this.labels = initialLabels(this.req);
      this.status = `Waiting for your labels`;
      this.statusKind = "waiting";
      this.fit();
    }
    this.render();
  }

  done(msg) {
    if (this.req?.token === msg.token) {
      const words = { save: "Saving…", skip: "Skipped: nothing saved", cancel: "Cancelled: nothing saved",
        timeout: "Timed out: nothing saved" };
      this.status = words[msg.outcome] || msg.outcome;
      this.statusKind = msg.outcome === "save" ? "" : "error";
      const answered = { ...this.req, labels: this.labels.slice() }; // shown read-only until the run reports
      this.req = null;
      this.next();
      if (!this.req) { this.final = answered; this.render(); }
    } else {
      this.queue = this.queue.filter((r) => r.token !== msg.token);
    }
  }

  executed(state) {
    this.final = state;
    if (!this.req) {
      const c = countLabels(state.labels || []);
      this.status = state.outcome === "save"
        ? `Saved ${state.written} (${c.artifact} artifact, ${c.natural} natural) to ${state.dataset}: ${state.size} in the dataset`
        : state.outcome === "timeout" ? "Timed out: nothing saved" : `Skipped: nothing saved to ${state.dataset}`;
      this.statusKind = "";
      this.render();
      this.fit();
    }
  }

  remaining() {
    if (!this.req) return null;
    return this.req.remaining_s - (performance.now() - this.req._received) / 1000;
  }

  tick() {
    if (this.req && !this.busy) this.renderHead();
  }

  async answer(action) {
    if (!this.req || this.busy) return;
    this.busy = true;
    this.status = action === "save" ? "Sending labels…" : action === "skip" ? "Skipping…" : "Cancelling…";
    this.statusKind = "";
    this.render();
    try {
      const r = await api.fetchApi(ROUTE_ANSWER, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: this.req.token, action, labels: this.labels }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    } catch (e) {
      this.busy = false;
      this.status = `Not sent: ${e.message}`;
      this.statusKind = "error";
      this.render();
    }
  }

  view() {
    // what to draw: the open request (editable) or the last run's state (read-only)
    if (this.req) return { req: this.req, labels: this.labels, editable: !this.busy };
    if (this.final) return { req: this.final, labels: this.final.labels || [], editable: false };
    return null;
  }

  renderHead() {
    const left = this.remaining();
    const v = this.view();
    this.statusEl.textContent = this.status + (this.req && !this.busy && left !== null ? ` (${fmtTime(left)} left)` : "")
      || "Label Artifacts";
    this.statusEl.className = `sl-status ${this.statusKind}`;
    if (this.req) {
      this.helpEl.textContent = `click: artifact · ⊘: leave out · ⌕: full size · ? 1, ? 2…: least sure (${this.req.model})`;
    } else if (!v) {
      this.helpEl.textContent = "Queue the workflow: the batch appears here to be labelled.";
    } else {
      this.helpEl.textContent = `P(artifact) by ${v.req.model}; ? 1, ? 2…: least sure`;
    }
  }

  render() {
    this.renderHead();
    const v = this.view();
    this.grid.replaceChildren();
    const waiting = !!this.req;
    for (const b of [this.saveBtn, this.skipBtn, this.cancelBtn, this.allBtn]) {
      b.disabled = !waiting || this.busy;
      b.style.display = waiting ? "" : "none";
    }
    if (!v) { this.countsEl.textContent = ""; return; }
    const req = v.req;
    const marked = req.marked || [];
    const order = req.order && req.order.length === v.labels.length ? req.order : v.labels.map((_, i) => i);
    for (const i of order) {
      const lab = v.labels[i];
      const t = el("div", "sl-tile" + (lab === 1 ? " artifact" : "") + (lab === null ? " leftout" : "") +
        (v.editable ? "" : " readonly"));
      t.dataset.index = String(i);
      t.title = `image ${i}: P(artifact) ${fmtP(req.p?.[i])}` + (marked.includes(i) ? " (least sure)" : "");
      const img = el("img");
      img.src = imageURL(req.images[i]);
      img.alt = `image ${i}`;
      t.append(img, Object.assign(el("span", "sl-tag sl-idx", `#${i}`)),
        el("span", "sl-tag sl-p", `P ${fmtP(req.p?.[i])}`),
        el("span", "sl-tag sl-badge", lab === null ? "left out" : "artifact"));
      const rank = marked.indexOf(i);
      if (rank >= 0) t.append(el("span", "sl-tag sl-mark", `? ${rank + 1}`));
      const zoomBtn = el("button", "sl-btn-zoom", "⌕");
      zoomBtn.title = "view full size (Esc closes)";
      zoomBtn.addEventListener("click", (e) => { e.stopPropagation(); zoom(img.src); });
      t.append(zoomBtn);
      if (v.editable) {
        const out = el("button", "sl-btn-out", "⊘");
        out.title = "leave this image out (not saved)";
        out.addEventListener("click", (e) => { e.stopPropagation(); this.labels[i] = toggleLeaveOut(this.labels[i]); this.render(); });
        t.append(out);
        t.addEventListener("click", () => { this.labels[i] = toggleArtifact(this.labels[i]); this.render(); });
      }
      this.grid.appendChild(t);
    }
    const c = countLabels(v.labels);
    this.countsEl.textContent = `${c.artifact} artifact · ${c.natural} natural` + (c.left_out ? ` · ${c.left_out} left out` : "");
  }

  minHeight() {
    const v = this.view();
    if (!v) return 44;
    const width = Math.max(TILE, (this.node.size?.[0] ?? 400) - 30);
    const cols = Math.max(1, Math.floor((width + GAP) / (TILE + GAP)));
    const rows = Math.ceil((v.labels.length || 1) / cols);
    return 44 + rows * (TILE + GAP) + (this.req ? 40 : 10);
  }

  fit() {
    // widen the node for about four thumbnails per row and make room for all rows
    const node = this.node;
    if (!node.size) return;
    const w = Math.max(node.size[0], 4 * (TILE + GAP) + 40);
    if (w !== node.size[0]) node.setSize?.([w, node.size[1]]);
    const need = node.computeSize?.()?.[1];
    if (need && need > node.size[1]) node.setSize?.([node.size[0], need]);
    node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
  }

  remove() {
    clearInterval(this.timer);
    WIDGETS.delete(this);
  }
}

// ------------------------------------------------------------------------------------------------ lookup
function nodeByExecutionId(graph, id) {
  let g = graph;
  let node = null;
  for (const part of String(id).split(":")) {
    node = g?.getNodeById?.(part) ?? g?.getNodeById?.(Number(part)) ?? null;
    if (!node) return null;
    g = node.subgraph;
  }
  return node;
}

function rootGraph() {
  return app.rootGraph ?? app.graph;
}

function findNode(req) {
  const graph = rootGraph();
  if (!graph) return null;
  if (req.workflow_id && graph.id && req.workflow_id !== graph.id) return null; // another workflow is open
  for (const id of [req.node, req.display_node]) {
    if (id === undefined || id === null) continue;
    const n = nodeByExecutionId(graph, id);
    if (n && (n.comfyClass ?? n.type) === NODE_TYPE && n._sentinelLabel) return n;
  }
  return null;
}

function toast(summary, detail, severity = "info") {
  try {
    app.extensionManager?.toast?.add?.({ severity, summary, detail, life: 6000 });
  } catch (e) { /* an older frontend without toasts */ }
}

async function showPending() {
  try {
    const r = await api.fetchApi(ROUTE_PENDING);
    if (!r.ok) return;
    const { pending } = await r.json();
    for (const req of pending || []) findNode(req)?._sentinelLabel.show(req);
  } catch (e) { /* server without the route (pack not loaded) */ }
}

function attach(node) {
  if (node._sentinelLabel) return node._sentinelLabel;
  const w = new LabelWidget(node);
  node._sentinelLabel = w;
  WIDGETS.add(w);
  const widget = node.addDOMWidget("sentinel_label", "sentinel_label", w.root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => w.minHeight(),
  });
  if (widget) widget.serialize = false;
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    w.remove();
    return onRemoved?.apply(this, arguments);
  };
  return w;
}

app.registerExtension({
  name: "diffusion_sentinel.label",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      attach(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const state = message?.[UI_KEY]?.[0];
      if (state) attach(this).executed(state);
    };
  },
  async setup() {
    api.addEventListener("sentinel.label.request", ({ detail }) => {
      const node = findNode(detail);
      if (!node) return;
      node._sentinelLabel.show(detail);
      toast("Label Artifacts is waiting", `Click the images with artifacts in node #${detail.display_node}, then ` +
        "'Save labels & continue'.");
    });
    api.addEventListener("sentinel.label.done", ({ detail }) => {
      for (const w of WIDGETS) w.done(detail);
    });
    api.addEventListener("reconnected", () => showPending());
    await showPending();
  },
  async afterConfigureGraph() {
    await showPending(); // a workflow (re)opened while its Label node waits
  },
});
