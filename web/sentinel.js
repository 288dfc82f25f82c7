// Diffusion Sentinel frontend extension: a summary badge and a sparkline on nodes that report a
// similarity series (ui key "sentinel_series"). The full chart is the node's IMAGE preview; this
// adds a compact live view that survives collapsing the preview.
import { app } from "../../scripts/app.js";

const SERIES_KEY = "sentinel_series";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

export function seriesRange(series) {
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const v of s) if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-6) { lo -= 5e-4; hi += 5e-4; }
  return [lo, hi];
}

export function badgeText(payload) {
  const s = payload?.summary?.[0];
  if (!s) return "";
  const n = payload.summary.length;
  const fmt = (v) => (v === null || v === undefined || Number.isNaN(v) ? "nan" : Number(v).toFixed(3));
  return `${payload.metric}: min ${fmt(s.min)} @${s.argmin_step}  D_max ${fmt(s.d_max)}` + (n > 1 ? `  (+${n - 1})` : "");
}

function drawSparkline(ctx, node, payload) {
  const series = payload.series || [];
  if (!series.length) return;
  const w = node.size[0] - 20, h = 36, x0 = 10, y0 = -LiteGraph.NODE_TITLE_HEIGHT - h - 6;
  const [lo, hi] = seriesRange(series);
  ctx.save();
  ctx.fillStyle = "rgba(20,20,20,0.75)";
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(x0 - 4, y0 - 14, w + 8, h + 18, 4) : ctx.rect(x0 - 4, y0 - 14, w + 8, h + 18);
  ctx.fill();
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  ctx.fillText(badgeText(payload), x0, y0 - 2);
  series.slice(0, COLORS.length).forEach((s, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    s.forEach((v, j) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      const px = x0 + (s.length > 1 ? (j / (s.length - 1)) * w : 0);
      const py = y0 + 2 + (1 - (v - lo) / (hi - lo)) * (h - 4);
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    });
    ctx.stroke();
  });
  ctx.restore();
}

app.registerExtension({
  name: "diffusion_sentinel.series",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("Sentinel")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const payload = message?.[SERIES_KEY]?.[0];
      if (payload) {
        this._sentinelSeries = payload;
        this.setDirtyCanvas(true, true);
      }
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed || !this._sentinelSeries) return;
      drawSparkline(ctx, this, this._sentinelSeries);
    };
  },
});
