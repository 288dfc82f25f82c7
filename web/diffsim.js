// Diffusion Sentinel frontend extension for the DiffSim nodes: show the scores the node reports (ui key "text":
// one line per pair / candidate, or the matrix as a table) in a read-only text box on the node. The box is not
// serialised, so saved workflows keep the same widget values.
import { app } from "../../scripts/app.js";

const DIFFSIM_NODES = new Set(["SentinelDiffSim", "SentinelDiffSimMatrix", "SentinelStyleSimilarityGate"]);
const BOX = "sentinel_scores";

export function scoresText(message) {
  const t = message?.text;
  if (Array.isArray(t)) return t.join("\n");
  return typeof t === "string" ? t : "";
}

function showScores(node, text) {
  let w = node.widgets?.find((x) => x.name === BOX);
  if (!w) {
    const el = document.createElement("textarea");
    el.readOnly = true;
    el.style.fontFamily = "monospace";
    el.style.fontSize = "11px";
    el.style.opacity = "0.85";
    w = node.addDOMWidget(BOX, "sentinel_text", el, { serialize: false, getValue: () => el.value,
                                                       setValue: (v) => { el.value = v; } });
    w.serialize = false;
  }
  w.element.value = text;
  const lines = Math.min(14, text.split("\n").length + 1);
  node.setSize([Math.max(node.size[0], 320), Math.max(node.size[1], node.computeSize()[1] + lines * 13)]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "diffusion_sentinel.diffsim",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!DIFFSIM_NODES.has(nodeData?.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = scoresText(message);
      if (!text) return;
      try {
        showScores(this, text);
      } catch (e) {
        console.warn("Diffusion Sentinel: cannot show the DiffSim scores on the node", e);
      }
    };
  },
});
