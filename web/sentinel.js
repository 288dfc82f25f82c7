// Diffusion Sentinel frontend extension: every node of the pack shows its result inside the node, in a DOM
// widget, after each run. The panels come from the ui key "sentinel_result" (nodes/common/ui.py: a small table
// per node with the direction of each score, highlighted rows, notes and one sparkline per row). Nodes that do
// not send panels yet are shown from their "sentinel_series" (Similarity Trajectory) or "text" ui key.
//
// A DOM widget works in the classic LiteGraph canvas and in the Vue node renderer ("Nodes 2.0", which never
// calls onDrawForeground). The widget is created on the first result, is not serialised (saved workflows keep
// their widgets_values and the prompt its inputs) and is refilled on every later result, and when the frontend
// restores a workflow's outputs (onNodeOutputsUpdated).
import { app } from "../../scripts/app.js";
import {
  PANEL_CSS,
  dropStaleControlValues,
  estimateHeight,
  folderFromURL,
  isOwnNode,
  noControlInts,
  panelsFromOutput,
  preferredWidth,
  widthWithRoom,
  renderPanelsHTML,
} from "./sentinel_panels.js";

const WIDGET_NAME = "sentinel_result";
const WIDGET_TYPE = "sentinel-panels"; // no core widget type of this name: the Vue renderer mounts the element
const MARGIN = 6;
const MIN_CAP = 360; // the node grows to show at most this much of the panels at once; the rest scrolls
const MAX_CAP = 1200;
const MAX_AUTO_WIDTH = 640;
const FOLDER = folderFromURL(import.meta.url);

function ensureStyle() {
  if (document.getElementById("sentinel-panels-css")) return;
  const style = document.createElement("style");
  style.id = "sentinel-panels-css";
  style.textContent = PANEL_CSS;
  document.head.appendChild(style);
}

function contentWidth(node) {
  return Math.max(120, (node.size?.[0] ?? 400) - 2 * MARGIN);
}

function applyHeights(state) {
  const h = state.contentH;
  state.el.style.setProperty("--sp-min-h", `${Math.min(h, MIN_CAP)}px`);
  state.el.style.setProperty("--sp-max-h", `${MIN_CAP}px`);
}

// Size the node so the panels show (bounded): on the first result grow to fit; later, follow the content
// (grow or shrink) unless the user resized the node since, then only grow.
function nodeBox(n) {
  const t = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  return [n.pos?.[0] ?? 0, (n.pos?.[1] ?? 0) - t, n.size?.[0] ?? 0, (n.size?.[1] ?? 0) + t];
}

function otherBoxes(node) {
  const g = node.graph ?? app.graph;
  const nodes = g?._nodes ?? g?.nodes ?? [];
  return nodes.filter((n) => n !== node && n.pos && n.size).map(nodeBox);
}

function fitNode(node, state, growWidth) {
  try {
    const wantW = Math.max(node.size[0], Math.min(state.prefW, MAX_AUTO_WIDTH));
    const w = growWidth ? widthWithRoom(nodeBox(node), otherBoxes(node), wantW) : node.size[0];
    if (w !== node.size[0]) node.setSize([w, node.size[1]]);
    const want = node.computeSize()[1];
    const userSized = state.autoH !== undefined && Math.abs(node.size[1] - state.autoH) > 1;
    const h = userSized || state.autoH === undefined ? Math.max(node.size[1], want) : want;
    if (Math.abs(h - node.size[1]) > 0.5) node.setSize([node.size[0], h]);
    state.autoH = node.size[1];
    node.setDirtyCanvas?.(true, true);
  } catch (e) {
    console.warn("Diffusion Sentinel: cannot resize the node for its results", e);
  }
}

function createWidget(node) {
  ensureStyle();
  const el = document.createElement("div");
  el.className = "sentinel-panels";
  el.dataset.sentinelNode = String(node.id);
  const content = document.createElement("div");
  content.className = "sentinel-panels-content";
  el.appendChild(content);
  const state = { el, content, panels: [], contentH: 0, prefW: 0, autoH: undefined };
  const widget = node.addDOMWidget(WIDGET_NAME, WIDGET_TYPE, el, {
    serialize: false, // not in the prompt
    hideInPanel: true, // 1.58.1's right side panel lists widgets: this is a display, not a parameter
    margin: MARGIN,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => Math.min(state.contentH, MIN_CAP) + 2 * MARGIN,
    getMaxHeight: () => Math.min(state.contentH, MAX_CAP) + 2 * MARGIN,
  });
  widget.serialize = false; // not in the workflow's widgets_values
  widget.sentinelState = state;
  // Once the element is laid out, replace the estimate by the measured height (and follow wrapping changes
  // when the node's width changes); a horizontal scrollbar, if any, is counted in.
  if (typeof ResizeObserver === "function") {
    const ro = new ResizeObserver(() => {
      if (!(content.offsetHeight > 0)) return;
      const hbar = el.scrollWidth > el.clientWidth + 1 ? Math.max(0, el.offsetHeight - el.clientHeight) || 12 : 0;
      const h = Math.ceil(content.offsetHeight + 8 + hbar);
      if (Math.abs(h - state.contentH) > 3) {
        state.contentH = h;
        applyHeights(state);
        fitNode(node, state, false);
      }
    });
    ro.observe(content);
    ro.observe(el);
    const onRemoved = node.onRemoved;
    node.onRemoved = function () {
      ro.disconnect();
      return onRemoved?.apply(this, arguments);
    };
  }
  return widget;
}

function showResult(node, output) {
  const view = panelsFromOutput(output);
  if (!view) return false;
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (!widget) widget = createWidget(node);
  const state = widget.sentinelState;
  state.panels = view.panels;
  state.content.innerHTML = renderPanelsHTML(view.panels);
  state.el.dataset.source = view.source;
  state.prefW = preferredWidth(view.panels);
  state.contentH = estimateHeight(view.panels, Math.max(contentWidth(node), Math.min(state.prefW, MAX_AUTO_WIDTH)));
  applyHeights(state);
  fitNode(node, state, true);
  return true;
}

function safeShow(node, output) {
  try {
    return showResult(node, output);
  } catch (e) {
    console.warn("Diffusion Sentinel: cannot show the result on the node", e);
    return false;
  }
}

function nodeFromLocator(locator) {
  const root = app.rootGraph ?? app.graph;
  if (!root) return null;
  const key = String(locator);
  const i = key.lastIndexOf(":");
  if (i < 0) return root.getNodeById?.(key) ?? root.getNodeById?.(Number(key)) ?? null;
  const sub = root.subgraphs?.get?.(key.slice(0, i));
  const id = key.slice(i + 1);
  return sub?.getNodeById?.(id) ?? sub?.getNodeById?.(Number(id)) ?? null;
}

const ownTypes = new Set();

app.registerExtension({
  name: "diffusion_sentinel.results",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isOwnNode(nodeData, FOLDER)) return;
    ownTypes.add(nodeData.name);
    // Old saved workflows: drop the control value that used to follow an analysis seed (see sentinel_panels.js).
    const noControl = noControlInts(nodeData);
    if (noControl.length && typeof nodeType.prototype.configure === "function") {
      const configure = nodeType.prototype.configure;
      nodeType.prototype.configure = function (info) {
        try {
          const saved = (this.widgets || []).filter((w) => w.serialize !== false);
          const fixed = dropStaleControlValues(saved, info?.widgets_values, noControl);
          if (fixed !== info?.widgets_values) info = { ...info, widgets_values: fixed };
        } catch (e) {
          console.warn("Diffusion Sentinel: cannot migrate the saved widget values", e);
        }
        return configure.call(this, info, ...Array.prototype.slice.call(arguments, 1));
      };
    }
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      safeShow(this, message);
      return r;
    };
  },
  // A re-opened workflow tab gets its outputs back here (both frontends); there is no onExecuted then.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [locator, output] of Object.entries(nodeOutputs || {})) {
      const node = nodeFromLocator(locator);
      if (node && ownTypes.has(node.type)) safeShow(node, output);
    }
  },
});
