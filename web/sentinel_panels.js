// Diffusion Sentinel: pure helpers that turn a node's result panels (nodes/common/ui.py, ui key
// "sentinel_result") into HTML: number formats, direction labels, SVG sparklines, size estimates.
//
// No imports and no side effects: the frontend loads every .js under web/ as an extension, so this file
// is also imported on its own, where it must do nothing. web/sentinel.js is the extension that uses it;
// tests/js/sentinel_panels.test.mjs tests it with `node --test` (no browser, no DOM).

export const RESULT_KEY = "sentinel_result";
export const LEGACY_SERIES_KEY = "sentinel_series";
export const TEXT_KEY = "text";

// Sizes (CSS px) shared by the stylesheet below and the height estimate, so that the estimate matches.
export const SIZES = Object.freeze({
  font: 12, // table and summary text
  small: 10.5, // column subtitles, notes
  line: 16, // line height of the table text
  smallLine: 14,
  rowPad: 2, // td padding top + bottom
  sparkW: 120, // preferred width of a sparkline; it shrinks to sparkMinW in a narrow node
  sparkMinW: 64,
  sparkH: 22,
  panelPad: 6, // padding inside one panel
  panelGap: 6, // space between two panels
  border: 1,
  charW: 6.6, // average width of a 12 px character (used only for estimates)
  boldCharW: 7.2,
  smallCharW: 5.8,
  monoLine: 14,
  monoCharW: 6.6,
});

// Readable on the dark and the light palette (mid luminance), one per row.
export const COLORS = Object.freeze([
  "#4c9be8", "#f28e2b", "#3fae49", "#e15759", "#a67dd1", "#2bb7b3", "#d4a017", "#e377c2",
  "#8c8c8c", "#9c755f",
]);

export function colorFor(i) {
  return COLORS[((i % COLORS.length) + COLORS.length) % COLORS.length];
}

export function escapeHTML(s) {
  return String(s)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

// ------------------------------------------------------------------ numbers (Python format specs)

const SPEC_RE = /^([+\- ]?)(,?)(?:\.(\d+))?([deEfFgGn%]?)$/;

// Exact decimal digits of a finite x > 0: x = d1.d2d3... × 10^exp. toPrecision(100) is exact far beyond the
// 17 digits a double carries, so rounding ties (0.125 -> "0.12" with ".2f") are decided as Python decides them.
function exactDigits(ax) {
  const s = ax.toPrecision(100);
  if (s.includes("e")) {
    const [mant, e] = s.split("e");
    return { digits: mant.replace(".", ""), exp: Number(e) };
  }
  const [ip, fp = ""] = s.split(".");
  if (ip !== "0") return { digits: ip + fp, exp: ip.length - 1 };
  const z = /^0*/.exec(fp)[0].length;
  return { digits: fp.slice(z), exp: -z - 1 };
}

// Keep the first `keep` digits, rounding half to even (Python's rule). Returns the kept digits (one more when
// the rounding carried: "999" -> "1000") and whether it carried.
function roundDigits(digits, keep) {
  if (keep < 0) return { d: "", carry: false };
  const head = digits.slice(0, keep).padEnd(keep, "0");
  const tail = digits.slice(keep);
  let up = false;
  if (tail[0] > "5") up = true;
  else if (tail[0] === "5") up = /[1-9]/.test(tail.slice(1)) || (keep > 0 && Number(head[keep - 1]) % 2 === 1);
  if (!up) return { d: head, carry: false };
  const a = head.split("");
  let i = keep - 1;
  while (i >= 0 && a[i] === "9") a[i--] = "0";
  if (i < 0) return { d: "1" + a.join(""), carry: true };
  a[i] = String(Number(a[i]) + 1);
  return { d: a.join(""), carry: false };
}

function fixedAbs(ax, p) {
  let n; // the value times 10^p, rounded, as digits
  if (ax === 0) n = "0";
  else if (ax >= 2 ** 53) n = BigInt(ax).toString() + "0".repeat(p); // a whole number: exact digits
  else {
    const { digits, exp } = exactDigits(ax);
    n = roundDigits(digits, exp + 1 + p).d || "0";
  }
  n = n.padStart(p + 1, "0");
  const ip = n.slice(0, n.length - p).replace(/^0+(?=\d)/, "");
  return p ? `${ip}.${n.slice(n.length - p)}` : ip;
}

function expAbs(ax, p) {
  let d = "0".repeat(p + 1);
  let e = 0;
  if (ax !== 0) {
    const { digits, exp } = exactDigits(ax);
    const r = roundDigits(digits, p + 1);
    d = r.d.slice(0, p + 1);
    e = exp + (r.carry ? 1 : 0);
  }
  const mant = p ? `${d[0]}.${d.slice(1)}` : d[0];
  return `${mant}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
}

function stripZeros(s) {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

function generalAbs(ax, p) {
  // Python's "g": p significant digits, fixed when -4 <= exponent < p, trailing zeros removed.
  if (p === 0) p = 1;
  if (ax === 0) return "0";
  const { digits, exp } = exactDigits(ax);
  const e = exp + (roundDigits(digits, p).carry ? 1 : 0);
  if (e >= -4 && e < p) return stripZeros(fixedAbs(ax, p - 1 - e));
  const [m, x] = expAbs(ax, p - 1).split("e");
  return `${stripZeros(m)}e${x}`;
}

function groupThousands(s) {
  const m = /^(\d+)(.*)$/.exec(s);
  return m ? m[1].replace(/\B(?=(\d{3})+(?!\d))/g, ",") + m[2] : s;
}

/** A number formatted like Python's ``format(x, spec)`` for the specs panels use (".3f", ".2e", "d", ".4g",
 * ".1%", "+.2f", ",d"), ties rounded half to even as Python does. Returns null when the spec is not understood
 * or Python would refuse it ("d" for a non-integer). NaN and infinities give "nan", "inf", "-inf". */
export function formatNumber(x, spec) {
  const m = SPEC_RE.exec(spec ?? "");
  if (typeof x !== "number" || !m) return null;
  const [, sign, comma, precStr, type] = m;
  const prec = precStr === undefined ? undefined : Number(precStr);
  const neg = x < 0 || Object.is(x, -0);
  const ax = Math.abs(x);
  let s;
  if (!Number.isFinite(x)) {
    s = Number.isNaN(x) ? "nan" : "inf";
    if ("EFG".includes(type) && type) s = s.toUpperCase();
    if (type === "%") s += "%";
  } else {
    switch (type) {
      case "d":
        if (!Number.isInteger(x)) return null;
        s = String(ax);
        break;
      case "f":
      case "F":
        s = fixedAbs(ax, prec ?? 6);
        break;
      case "e":
      case "E":
        s = expAbs(ax, prec ?? 6);
        if (type === "E") s = s.toUpperCase();
        break;
      case "%":
        s = fixedAbs(ax * 100, prec ?? 6) + "%";
        break;
      case "g":
      case "G":
      case "n":
        s = generalAbs(ax, prec ?? 6);
        if (type === "G") s = s.toUpperCase();
        break;
      default: // no type: str() without a precision, "g"-like with one
        if (prec === undefined) return neg && ax !== 0 ? "-" + String(ax) : String(x);
        s = generalAbs(ax, prec);
    }
    if (comma) s = groupThousands(s);
  }
  if (neg && !Number.isNaN(x)) return "-" + s;
  if (sign === "+") return "+" + s;
  if (sign === " ") return " " + s;
  return s;
}

/** One table cell as text: None -> "nan", booleans -> yes/no, numbers with the column's format. */
export function formatValue(v, fmt) {
  if (v === null || v === undefined) return "nan";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "number") {
    if (fmt) {
      const s = formatNumber(v, fmt);
      if (s !== null) return s;
    }
    if (Number.isInteger(v)) return String(v);
    return formatNumber(v, ".4g");
  }
  if (Array.isArray(v)) return v.map((x) => formatValue(x, fmt)).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// ------------------------------------------------------------------ columns

/** A short header subtitle for a column's direction: "↓ better", "↑ better" or the text itself (shortened). */
export function directionInfo(direction) {
  if (!direction) return null;
  const full = String(direction).trim();
  const low = full.toLowerCase();
  if (/^(lower|smaller|less|fewer)\b.*\bbetter\b/.test(low)) return { short: "↓ better", full };
  if (/^(higher|larger|greater|more|bigger)\b.*\bbetter\b/.test(low)) return { short: "↑ better", full };
  return { short: full.length > 24 ? full.slice(0, 23) + "…" : full, full };
}

function isNumericColumn(rows, j) {
  let any = false;
  for (const r of rows) {
    const v = r[j];
    if (v === null || v === undefined) continue;
    if (typeof v !== "number") return false;
    any = true;
  }
  return any;
}

// ------------------------------------------------------------------ sparklines

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** [lo, hi] over every finite value of every series (null/NaN skipped); a flat or empty set is widened. */
export function seriesRange(seriesList) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of seriesList || []) {
    for (const v of s || []) {
      if (finite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  if (lo === Infinity) return [0, 1];
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    const pad = Math.max(Math.abs(hi) * 0.05, 1e-3);
    return [lo - pad, hi + pad];
  }
  return [lo, hi];
}

function num(x) {
  const s = x.toFixed(1);
  return s === "-0.0" ? "0.0" : s;
}

/** The SVG path data of one series in a w×h box (y grows downwards), shared range [lo, hi]. A null/NaN value
 * breaks the line (a new "M"); an isolated finite value becomes a zero-length segment (a dot with round caps).
 * Returns "" when the series has no finite value. */
export function sparklinePath(series, lo, hi, w, h, pad = 2) {
  const n = (series || []).length;
  if (!n) return "";
  const span = hi - lo || 1;
  const xOf = (j) => (n > 1 ? pad + (j * (w - 2 * pad)) / (n - 1) : w / 2);
  const yOf = (v) => pad + (1 - (v - lo) / span) * (h - 2 * pad);
  const parts = [];
  let run = [];
  const flush = () => {
    if (run.length === 1) parts.push(`M${run[0][0]} ${run[0][1]}h0`);
    else if (run.length > 1) parts.push("M" + run.map(([x, y]) => `${x} ${y}`).join("L"));
    run = [];
  };
  for (let j = 0; j < n; j++) {
    const v = series[j];
    if (finite(v)) run.push([num(xOf(j)), num(yOf(v))]);
    else flush();
  }
  flush();
  return parts.join("");
}

/** One sparkline as an SVG string with one <path>; a "nan" label (no SVG) when every value is missing. */
export function sparklineSVG(series, { lo, hi, color = COLORS[0], width = SIZES.sparkW, height = SIZES.sparkH,
  label = "" } = {}) {
  const d = sparklinePath(series, lo, hi, width, height);
  const vals = (series || []).filter(finite);
  const tip = vals.length
    ? `${label ? label + ": " : ""}${vals.length} values, min ${formatValue(Math.min(...vals), ".4g")}, ` +
      `max ${formatValue(Math.max(...vals), ".4g")}`
    : `${label ? label + ": " : ""}no finite value`;
  if (!d) return `<span class="sp-nan" title="${escapeHTML(tip)}">nan</span>`; // HTML text: never stretched
  // The box stretches with the column (preserveAspectRatio none); the stroke keeps its width.
  return (
    `<svg class="sp-spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" ` +
    `preserveAspectRatio="none" role="img" aria-label="${escapeHTML(tip)}"><title>${escapeHTML(tip)}</title>` +
    `<path d="${d}" fill="none" stroke="${escapeHTML(color)}" stroke-width="1.5" ` +
    `stroke-linecap="round" stroke-linejoin="round" vector-effect="non-scaling-stroke"/></svg>`
  );
}

// ------------------------------------------------------------------ what a node sent

/** A panel built from the old Similarity Trajectory payload (ui key "sentinel_series"), until that node sends
 * panels itself. */
export function legacySeriesPanel(payload) {
  const sums = Array.isArray(payload?.summary) ? payload.summary : [];
  const series = Array.isArray(payload?.series) ? payload.series : [];
  const n = Math.max(sums.length, series.length);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const s = sums[i] || {};
    rows.push([i, s.min ?? null, s.argmin_step ?? null, s.d_max ?? null, s.mean_last_half ?? null]);
  }
  return {
    v: 1,
    kind: "table",
    title: "Similarity Trajectory",
    summary: payload?.metric ? `metric ${payload.metric}` : "",
    columns: [
      { key: "item", label: "item" },
      { key: "min", label: "min", fmt: ".3f" },
      { key: "argmin_step", label: "argmin step", fmt: "d" },
      { key: "d_max", label: "D_max", fmt: ".3f", tooltip: "largest drop from a running peak" },
      { key: "mean_last_half", label: "mean last half", fmt: ".3f" },
    ],
    rows,
    highlight: [],
    notes: [],
    series,
    series_label: payload?.metric || "similarity",
  };
}

/** A panel that shows plain text (the "text" ui key of nodes that do not send panels yet). */
export function textPanel(text) {
  return { v: 1, kind: "text", title: "", summary: "", text: String(text) };
}

/** What to show for one ui output: the panels of "sentinel_result", else the old series payload, else the
 * "text" key. Returns {source, panels} or null when the output carries none of them. */
export function panelsFromOutput(output) {
  if (!output || typeof output !== "object") return null;
  const res = output[RESULT_KEY];
  if (Array.isArray(res)) {
    const panels = res.filter((p) => p && typeof p === "object");
    if (panels.length) return { source: RESULT_KEY, panels };
  }
  const legacy = output[LEGACY_SERIES_KEY];
  if (Array.isArray(legacy) && legacy.length) {
    return { source: LEGACY_SERIES_KEY, panels: legacy.filter((p) => p && typeof p === "object").map(legacySeriesPanel) };
  }
  const t = output[TEXT_KEY];
  const text = Array.isArray(t) ? t.filter((x) => x !== null && x !== undefined).join("\n\n") : t;
  if (typeof text === "string" && text.trim()) return { source: TEXT_KEY, panels: [textPanel(text)] };
  return null;
}

/** Whether a node definition belongs to this pack: its python_module is custom_nodes.<our folder>, or (when the
 * folder is unknown) its name starts with "Sentinel". */
export function isOwnNode(nodeData, folder) {
  const mod = nodeData?.python_module;
  if (folder && typeof mod === "string") {
    if (mod === `custom_nodes.${folder}` || mod.startsWith(`custom_nodes.${folder}.`)) return true;
  }
  return typeof nodeData?.name === "string" && nodeData.name.startsWith("Sentinel");
}

/** The pack's folder name from this module's URL (".../extensions/<folder>/sentinel.js"), or null. */
export function folderFromURL(url) {
  const m = /\/extensions\/([^/]+)\//.exec(String(url || ""));
  return m ? decodeURIComponent(m[1]) : null;
}

// ------------------------------------------------------------------ HTML

function panelSeries(p) {
  return Array.isArray(p.series) ? p.series.map((s) => (Array.isArray(s) ? s : [])) : null;
}

function renderTable(p) {
  const cols = Array.isArray(p.columns) ? p.columns : [];
  const rows = Array.isArray(p.rows) ? p.rows : [];
  const series = panelSeries(p);
  const hl = new Set(Array.isArray(p.highlight) ? p.highlight : []);
  if (!cols.length && !series?.length) return "";
  const [lo, hi] = series ? seriesRange(series) : [0, 1];
  const numeric = cols.map((_, j) => isNumericColumn(rows, j));
  let h = '<table class="sp-table"><thead><tr>';
  cols.forEach((c, j) => {
    const dir = directionInfo(c.direction);
    const tip = [c.tooltip, dir?.full].filter(Boolean).join(" · ");
    h += `<th${numeric[j] ? ' class="sp-num"' : ""}${tip ? ` title="${escapeHTML(tip)}"` : ""}>` +
      `<span class="sp-label">${escapeHTML(c.label ?? c.key ?? "")}</span>` +
      (dir ? `<span class="sp-dir">${escapeHTML(dir.short)}</span>` : "") + "</th>";
  });
  if (series) {
    const label = p.series_label || "series";
    h += `<th class="sp-sparkhead" title="${escapeHTML(`${label}, every row on the same scale`)}">` +
      `<span class="sp-label">${escapeHTML(label)}</span>` +
      `<span class="sp-dir">${escapeHTML(formatValue(lo, ".3g"))} … ${escapeHTML(formatValue(hi, ".3g"))}</span></th>`;
  }
  h += "</tr></thead><tbody>";
  const nRows = cols.length ? rows.length : series.length;
  for (let i = 0; i < nRows; i++) {
    const r = cols.length ? rows[i] || [] : [];
    h += `<tr${hl.has(i) ? ' class="sp-hl" data-highlight="1"' : ""}>`;
    cols.forEach((c, j) => {
      h += `<td${numeric[j] ? ' class="sp-num"' : ""}>${escapeHTML(formatValue(r[j], c.fmt))}</td>`;
    });
    if (series) {
      h += '<td class="sp-sparkcell">' +
        (series[i] ? sparklineSVG(series[i], { lo, hi, color: colorFor(i), label: `row ${i}` }) : "") + "</td>";
    }
    h += "</tr>";
  }
  return h + "</tbody></table>";
}

/** One panel as HTML. */
export function renderPanel(p) {
  let h = `<section class="sp-panel" data-kind="${escapeHTML(p.kind || "table")}">`;
  if (p.title || p.summary) {
    h += '<div class="sp-head">' +
      (p.title ? `<span class="sp-title">${escapeHTML(p.title)}</span>` : "") +
      (p.summary ? `<span class="sp-summary">${escapeHTML(p.summary)}</span>` : "") + "</div>";
  }
  if (p.kind === "text") {
    h += `<pre class="sp-text">${escapeHTML(p.text ?? "")}</pre>`;
  } else {
    h += renderTable(p);
  }
  const notes = Array.isArray(p.notes) ? p.notes : [];
  if (notes.length) h += '<ul class="sp-notes">' + notes.map((n) => `<li>${escapeHTML(n)}</li>`).join("") + "</ul>";
  return h + "</section>";
}

/** Every panel as HTML (what goes inside the node's DOM widget). */
export function renderPanelsHTML(panels) {
  return (panels || []).map(renderPanel).join("");
}

// ------------------------------------------------------------------ sizes

function wrappedLines(text, widthPx, charW) {
  const perLine = Math.max(8, Math.floor(widthPx / charW));
  let n = 0;
  for (const line of String(text).split("\n")) n += Math.max(1, Math.ceil(line.length / perLine));
  return n;
}

/** Estimated height (px) of one panel laid out ``width`` px wide with the stylesheet below. */
export function estimatePanelHeight(p, width) {
  const S = SIZES;
  const inner = Math.max(80, width - 2 * (S.panelPad + S.border));
  let h = 2 * (S.panelPad + S.border);
  if (p.title || p.summary) {
    const head = `${p.title || ""}  ${p.summary || ""}`;
    h += wrappedLines(head, inner, S.charW) * S.line + 2;
  }
  if (p.kind === "text") {
    h += wrappedLines(p.text ?? "", inner, S.monoCharW) * S.monoLine + 4;
  } else {
    const cols = Array.isArray(p.columns) ? p.columns : [];
    const series = panelSeries(p);
    if (cols.length || series?.length) {
      const sub = series || cols.some((c) => c.direction);
      h += S.line + (sub ? S.smallLine : 0) + 2 * S.rowPad + 2; // header
      const nRows = cols.length ? (p.rows || []).length : series.length;
      const rowH = Math.max(S.line, series ? S.sparkH + 2 : 0) + 2 * S.rowPad;
      h += nRows * rowH + 2;
    }
  }
  for (const n of Array.isArray(p.notes) ? p.notes : []) h += wrappedLines(n, inner - 14, S.smallCharW) * S.smallLine + 1;
  return Math.ceil(h);
}

/** Estimated height (px) of every panel stacked, with the gaps and the outer padding. */
export function estimateHeight(panels, width) {
  const ps = panels || [];
  if (!ps.length) return 0;
  let h = 2 * 4; // outer padding of the widget element
  ps.forEach((p, i) => {
    h += estimatePanelHeight(p, width - 8) + (i ? SIZES.panelGap : 0);
  });
  return Math.ceil(h);
}

/** The width a node may grow to without covering a node to its right. ``box`` = [x, y, w, h] of the node (graph
 * units, title bar included), ``others`` = the other nodes' boxes, ``want`` = the width it would like. Nodes whose
 * rows overlap the node's and that start at or right of its right edge limit it to their left edge minus ``gap``;
 * it never shrinks below its current width. (Growing over a neighbour hid it in saved layouts.) */
export function widthWithRoom(box, others, want, gap = 20) {
  const [x, y, w, h] = box;
  let limit = Infinity;
  for (const o of others || []) {
    if (!o || o.length < 4) continue;
    const [ox, oy, ow, oh] = o;
    const rowsOverlap = oy < y + h && oy + oh > y;
    if (rowsOverlap && ox >= x + w - 1) limit = Math.min(limit, ox - gap - x);
  }
  return Math.max(w, Math.min(want, limit));
}

/** A width (px) for the node at which the widest panel's table fits with its headers on one line, within
 * [minW, maxW]. It allows for the widget's margins and the Vue renderer's slot column (about 24 px). */
export function preferredWidth(panels, minW = 300, maxW = 640) {
  const S = SIZES;
  let best = minW;
  for (const p of panels || []) {
    let w;
    if (p.kind === "text") {
      const longest = Math.max(0, ...String(p.text ?? "").split("\n").map((l) => l.length));
      w = longest * S.monoCharW;
    } else {
      const cols = Array.isArray(p.columns) ? p.columns : [];
      const rows = Array.isArray(p.rows) ? p.rows : [];
      w = 0;
      cols.forEach((c, j) => {
        let px = Math.max(String(c.label ?? c.key ?? "").length * S.boldCharW,
          (directionInfo(c.direction)?.short.length ?? 0) * S.smallCharW);
        for (const r of rows.slice(0, 64)) px = Math.max(px, formatValue(r[j], c.fmt).length * S.charW);
        w += px + 10;
      });
      if (Array.isArray(p.series)) w += Math.max(S.sparkW, String(p.series_label || "").length * S.boldCharW) + 10;
    }
    best = Math.max(best, w + 2 * (S.panelPad + S.border) + 8 + 24);
  }
  return Math.ceil(Math.min(maxW, best));
}

// ------------------------------------------------------------------ stylesheet

/** The stylesheet of the panels (themed with the frontend's palette variables, with fallbacks). */
// ---------------------------------------------------------------------------------------------- saved workflows
// Analysis seeds (DiffSim, Memorization Guard, Calibrate, Volume Growth Rate) declare control_after_generate:
// false, so the frontend no longer adds a "control after generate" widget after them. Workflows saved while the
// control existed carry one extra value ("fixed", "randomize", ...) right after such a seed, which would shift
// every later widget value by one slot. These two functions find and drop exactly those values.
export const CONTROL_VALUES = Object.freeze(["fixed", "increment", "decrement", "randomize"]);

/** Names of the INT inputs of a node definition that say control_after_generate: false. */
export function noControlInts(nodeData) {
  const out = [];
  for (const section of ["required", "optional"]) {
    const inputs = nodeData?.input?.[section];
    if (!inputs || typeof inputs !== "object") continue;
    for (const [name, spec] of Object.entries(inputs)) {
      if (Array.isArray(spec) && spec[0] === "INT" && spec[1]?.control_after_generate === false) out.push(name);
    }
  }
  return out;
}

/** ``widgets``: the node's saved widgets in order ({name, options}); ``values``: the saved widgets_values.
 * Returns ``values`` without the stale control entries (a new array), or ``values`` itself when nothing is stale. */
export function dropStaleControlValues(widgets, values, noControl) {
  if (!Array.isArray(values) || !Array.isArray(widgets) || !noControl?.length) return values;
  let extra = values.length - widgets.length;
  if (extra <= 0) return values;
  const out = values.slice();
  for (let i = 0; i < widgets.length && extra > 0; i++) {
    if (!noControl.includes(widgets[i]?.name)) continue;
    const v = out[i + 1];
    const next = widgets[i + 1];
    const nextAccepts = Array.isArray(next?.options?.values) && next.options.values.includes(v);
    if (typeof v === "string" && CONTROL_VALUES.includes(v) && !nextAccepts) {
      out.splice(i + 1, 1);
      extra--;
    }
  }
  return out;
}

export const PANEL_CSS = `
.sentinel-panels { box-sizing: border-box; overflow: auto; padding: 4px; user-select: text; cursor: auto;
  font: ${SIZES.font}px/${SIZES.line}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--input-text, var(--fg-color, #ddd)); background: var(--comfy-input-bg, rgba(0,0,0,0.25));
  border-radius: 6px; scrollbar-width: thin; }
.lg-node .sentinel-panels { flex: 0 0 auto; min-height: var(--sp-min-h, 96px); max-height: var(--sp-max-h, 360px); }
.sentinel-panels .sp-panel { padding: ${SIZES.panelPad}px; border: ${SIZES.border}px solid var(--border-color, #555);
  border-radius: 5px; }
.sentinel-panels .sp-panel + .sp-panel { margin-top: ${SIZES.panelGap}px; }
.sentinel-panels .sp-head { margin-bottom: 2px; }
.sentinel-panels .sp-title { font-weight: 600; margin-right: 8px; }
.sentinel-panels .sp-summary { color: var(--descrip-text, #aaa); }
.sentinel-panels .sp-table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
.sentinel-panels .sp-table th, .sentinel-panels .sp-table td { padding: ${SIZES.rowPad}px 5px; text-align: left;
  vertical-align: middle; white-space: nowrap; line-height: ${SIZES.line}px; }
.sentinel-panels .sp-table th { font-weight: 600; vertical-align: bottom; white-space: normal;
  border-bottom: 1px solid var(--border-color, #555); }
.sentinel-panels .sp-table th.sp-sparkhead { max-width: 0; }
.sentinel-panels .sp-sparkhead > span { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.sentinel-panels .sp-table th[title] { cursor: help; }
.sentinel-panels .sp-label { display: block; }
.sentinel-panels .sp-dir { display: block; font-weight: 400; font-size: ${SIZES.small}px; line-height: ${SIZES.smallLine}px;
  color: var(--descrip-text, #aaa); }
.sentinel-panels .sp-num { text-align: right; }
.sentinel-panels .sp-table tbody tr:nth-child(even) { background: rgba(127,127,127,0.09); }
.sentinel-panels .sp-table tr.sp-hl { background: rgba(255,170,0,0.20); font-weight: 600; }
.sentinel-panels .sp-table tr.sp-hl td:first-child { box-shadow: inset 3px 0 0 #f0a020; }
.sentinel-panels .sp-sparkcell { min-width: ${SIZES.sparkMinW}px; padding-top: 1px; padding-bottom: 1px; }
.sentinel-panels .sp-spark { display: block; width: 100%; min-width: ${SIZES.sparkMinW}px; height: ${SIZES.sparkH}px; }
.sentinel-panels .sp-nan { display: block; text-align: center; font-size: ${SIZES.small}px;
  line-height: ${SIZES.sparkH}px; color: var(--descrip-text, #999); }
.sentinel-panels .sp-notes { margin: 4px 0 0 0; padding-left: 14px; font-size: ${SIZES.small}px;
  line-height: ${SIZES.smallLine}px; color: var(--descrip-text, #aaa); }
.sentinel-panels .sp-text { margin: 0; white-space: pre-wrap; word-break: break-word;
  font: 11px/${SIZES.monoLine}px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
`;
