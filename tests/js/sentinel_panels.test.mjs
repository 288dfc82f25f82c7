// Unit tests of web/sentinel_panels.js (pure: no DOM, no app). Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { fixtures, loadPanels } from "./_load.mjs";

const P = await loadPanels();
const FX = fixtures();

const decode = (v) => (v === "nan" ? NaN : v === "inf" ? Infinity : v === "-inf" ? -Infinity : v);

test("loading the module has no side effect and exports no extension", () => {
  assert.equal(typeof globalThis.document, "undefined"); // it loaded without a DOM
  assert.equal(P.default, undefined);
  assert.ok(!("app" in P));
});

test("formatNumber gives exactly what Python's format() gives (fixture made by Python)", () => {
  const bad = [];
  for (const [v, spec, want] of FX.formats) {
    const got = P.formatNumber(decode(v), spec);
    if (got !== want) bad.push(`${v} ${spec}: got ${got} want ${want}`);
  }
  assert.ok(FX.formats.length > 150);
  assert.deepEqual(bad, []);
});

test("formatNumber refuses what Python refuses, formatValue falls back", () => {
  assert.equal(P.formatNumber(2.5, "d"), null);
  assert.equal(P.formatNumber(1, "x"), null);
  assert.equal(P.formatValue(2.5, "d"), "2.5");
  assert.equal(P.formatValue(0.1234567, "bogus"), "0.1235");
});

test("formatValue: None is nan, booleans yes/no, numbers with or without a format, lists", () => {
  assert.equal(P.formatValue(null, ".3f"), "nan");
  assert.equal(P.formatValue(undefined), "nan");
  assert.equal(P.formatValue(true), "yes");
  assert.equal(P.formatValue(false, ".3f"), "no");
  assert.equal(P.formatValue(0.21345, ".3f"), "0.213");
  assert.equal(P.formatValue(7), "7");
  assert.equal(P.formatValue(0.000123456), "0.0001235"); // default ".4g" as in ui.py's text form
  assert.equal(P.formatValue([1, 3, 4]), "1, 3, 4");
  assert.equal(P.formatValue([0.5, null], ".2f"), "0.50, nan");
  assert.equal(P.formatValue("dreamsim"), "dreamsim");
});

test("directionInfo: arrows for lower/higher is better, the text otherwise", () => {
  assert.deepEqual(P.directionInfo("lower is better"), { short: "↓ better", full: "lower is better" });
  assert.equal(P.directionInfo("Higher is better").short, "↑ better");
  assert.equal(P.directionInfo("higher = more similar").short, "higher = more similar");
  assert.equal(P.directionInfo("a very long direction text that goes on").short.length, 24);
  assert.equal(P.directionInfo(undefined), null);
});

test("seriesRange is shared over every row and skips missing values", () => {
  assert.deepEqual(P.seriesRange([[0.2, 0.9], [null, 0.1, NaN]]), [0.1, 0.9]);
  const [lo, hi] = P.seriesRange([[0.5, 0.5]]);
  assert.ok(Math.abs(lo - 0.475) < 1e-12 && Math.abs(hi - 0.525) < 1e-12);
  assert.deepEqual(P.seriesRange([[null, null]]), [0, 1]);
  assert.deepEqual(P.seriesRange([]), [0, 1]);
});

test("sparklinePath: coordinates by hand, NaN gaps start a new segment, a lone point is a dot", () => {
  // w=100, h=20, pad 2, range [0, 1]: x = 2 + 32 j, y = 2 + 16 (1 - v)
  assert.equal(P.sparklinePath([1, null, 0.5, 0.7], 0, 1, 100, 20), "M2.0 2.0h0M66.0 10.0L98.0 6.8");
  assert.equal(P.sparklinePath([0, 1], 0, 1, 100, 20), "M2.0 18.0L98.0 2.0");
  assert.equal(P.sparklinePath([0.25], 0, 1, 100, 20), "M50.0 14.0h0");
  assert.equal(P.sparklinePath([null, NaN], 0, 1, 100, 20), "");
  assert.equal(P.sparklinePath([], 0, 1, 100, 20), "");
});

test("sparklineSVG: one path, or a 'nan' label when nothing is finite", () => {
  const s = P.sparklineSVG([0.1, 0.4], { lo: 0, hi: 1, color: "#123456" });
  assert.equal((s.match(/<path /g) || []).length, 1);
  assert.match(s, /stroke="#123456"/);
  assert.match(s, /viewBox="0 0 120 22" preserveAspectRatio="none"/);
  assert.match(s, /vector-effect="non-scaling-stroke"/);
  const e = P.sparklineSVG([null], { lo: 0, hi: 1 });
  assert.equal((e.match(/<path /g) || []).length, 0);
  assert.match(e, /^<span class="sp-nan" title="no finite value">nan<\/span>$/);
});

test("a panel made by nodes/common/ui.py renders title, directions, formatted values, highlight, sparklines", () => {
  const p = FX.panels.predict;
  const html = P.renderPanel(p);
  assert.match(html, /<span class="sp-title">Artifact Predict<\/span>/);
  assert.match(html, /1 of 3 flagged \(P &gt;= 0\.5\)/);
  assert.match(html, /<span class="sp-label">P\(artifact\)<\/span><span class="sp-dir">↓ better<\/span>/);
  assert.match(html, /title="lower is better"/);
  for (const v of [">0.213<", ">0.739<", ">1.23e-04<", ">4.56e-02<", ">yes<", ">no<"]) assert.ok(html.includes(v), v);
  assert.equal((html.match(/>nan</g) || []).length, 3); // P and D_max of row 2, and its empty sparkline
  assert.equal((html.match(/data-highlight="1"/g) || []).length, 1);
  assert.match(html, /<tr class="sp-hl" data-highlight="1"><td class="sp-num">1<\/td>/);
  // one path per row with a finite value (row 2 is all NaN), each row its own colour, one shared scale
  const paths = html.match(/<path [^>]*stroke="([^"]+)"/g) || [];
  assert.equal(paths.length, 2);
  assert.notEqual(paths[0].match(/stroke="([^"]+)"/)[1], paths[1].match(/stroke="([^"]+)"/)[1]);
  assert.match(html, /<span class="sp-label">similarity<\/span><span class="sp-dir">0\.1 … 0\.9<\/span>/);
  // notes are escaped text, never markup
  assert.ok(html.includes("threshold 0.5 &lt;b&gt;not&lt;/b&gt; tuned"));
  assert.ok(!html.includes("<b>"));
});

test("row 1's sparkline has a gap where the series is NaN", () => {
  const html = P.renderPanel(FX.panels.predict);
  const d = [...html.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(d[0].split("M").length - 1, 1);
  assert.equal(d[1].split("M").length - 1, 2); // [0.2, NaN, 0.4, 0.3] -> a dot, then a line
  assert.match(d[1], /^M[\d.]+ [\d.]+h0M/);
});

test("direction text that is not lower/higher is shown as is; numeric columns right-aligned", () => {
  const html = P.renderPanel(FX.panels.vendi);
  assert.match(html, /<span class="sp-dir">↑ better<\/span>/);
  assert.match(html, /<span class="sp-dir">higher = more different<\/span>/);
  assert.match(html, /<td class="sp-num">12\.35<\/td>/);
  assert.match(html, /<td class="sp-num">0\.001<\/td>/);
  assert.ok(!html.includes("<svg"));
});

test("panelsFromOutput: sentinel_result first, then the old series payload, then text", () => {
  const out = FX.panels.ui;
  const v = P.panelsFromOutput(out);
  assert.equal(v.source, "sentinel_result");
  assert.equal(v.panels.length, 2);
  assert.equal(v.panels[0].title, "Artifact Predict");

  const legacy = { sentinel_series: [{ metric: "latent_cosine", series: [[1, 0.5], [0.9, 0.8]],
    summary: [{ min: 0.5, argmin_step: 1, d_max: 0.5, mean_last_half: 0.5 }, { min: 0.8, argmin_step: 1, d_max: 0.1,
      mean_last_half: 0.8 }] }], images: [] };
  const l = P.panelsFromOutput(legacy);
  assert.equal(l.source, "sentinel_series");
  assert.equal(l.panels[0].rows.length, 2);
  assert.deepEqual(l.panels[0].rows[1], [1, 0.8, 1, 0.1, 0.8]);
  assert.equal((P.renderPanelsHTML(l.panels).match(/<path /g) || []).length, 2);

  const t = P.panelsFromOutput({ text: ["pair 0: 0.25", "pair 1: 0.5"] });
  assert.equal(t.source, "text");
  assert.match(P.renderPanelsHTML(t.panels), /<pre class="sp-text">pair 0: 0.25\n\npair 1: 0.5<\/pre>/);

  assert.equal(P.panelsFromOutput({ images: [{ filename: "x.png" }] }), null);
  assert.equal(P.panelsFromOutput({ text: [""] }), null);
  assert.equal(P.panelsFromOutput(null), null);
  assert.equal(P.panelsFromOutput({ sentinel_result: [], text: ["fallback"] }).source, "text");
});

test("estimateHeight grows with rows and notes and stays reasonable; preferredWidth is bounded", () => {
  const p = FX.panels.predict;
  const one = P.estimateHeight([p], 420);
  assert.ok(one > 120 && one < 260, String(one));
  const more = { ...p, rows: [...p.rows, ...p.rows, ...p.rows], series: [...p.series, ...p.series, ...p.series] };
  const h3 = P.estimateHeight([more], 420);
  // 6 more rows of (sparkline 22 + 2 + 2 * rowPad 2) = 28 px each
  assert.equal(h3 - one, 6 * 28);
  assert.equal(P.estimateHeight([p, FX.panels.vendi], 420),
    one + P.estimatePanelHeight(FX.panels.vendi, 412) + P.SIZES.panelGap);
  assert.equal(P.estimateHeight([], 420), 0);
  const w = P.preferredWidth([p]);
  assert.ok(w >= 300 && w <= 640, String(w));
  assert.equal(P.preferredWidth([{ kind: "text", text: "x".repeat(500) }]), 640);
});

test("isOwnNode and folderFromURL", () => {
  assert.equal(P.folderFromURL("http://h:1/extensions/diffusion-sentinel/sentinel.js"), "diffusion-sentinel");
  assert.equal(P.folderFromURL("http://h:1/extensions/My%20Pack/sentinel.js"), "My Pack");
  assert.equal(P.folderFromURL("data:text/javascript;base64,xx"), null);
  assert.ok(P.isOwnNode({ name: "X", python_module: "custom_nodes.diffusion-sentinel" }, "diffusion-sentinel"));
  assert.ok(!P.isOwnNode({ name: "KSampler", python_module: "nodes" }, "diffusion-sentinel"));
  assert.ok(P.isOwnNode({ name: "SentinelDiffSim", python_module: "custom_nodes.renamed" }, null));
});

test("escapeHTML", () => {
  assert.equal(P.escapeHTML(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
});

test("old saved workflows: the control value after an analysis seed is dropped, nothing else", () => {
  const def = { input: { required: { seed: ["INT", { default: 2334, control_after_generate: false }],
                                     steps: ["INT", { default: 20 }], noise_seed: ["INT", {}] },
                         optional: { mode: [["fixed", "other"], {}] } } };
  assert.deepEqual(P.noControlInts(def), ["seed"]);
  assert.deepEqual(P.noControlInts({}), []);
  const widgets = [{ name: "seed" }, { name: "steps" }, { name: "mode", options: { values: ["fixed", "other"] } }];
  // saved with the stale control entry: one value too many
  assert.deepEqual(P.dropStaleControlValues(widgets, [2334, "randomize", 20, "other"], ["seed"]), [2334, 20, "other"]);
  // saved without it: unchanged (same array)
  const ok = [2334, 20, "other"];
  assert.equal(P.dropStaleControlValues(widgets, ok, ["seed"]), ok);
  // the next widget is a combo that accepts the string: not a stale control value
  const w2 = [{ name: "seed" }, { name: "mode", options: { values: ["fixed", "other"] } }, { name: "steps" }];
  const v2 = [5, "fixed", 20, 7];
  assert.deepEqual(P.dropStaleControlValues(w2, v2, ["seed"]), v2);
  // not a control word: left alone
  assert.deepEqual(P.dropStaleControlValues(widgets, [2334, "abc", 20, "other"], ["seed"]), [2334, "abc", 20, "other"]);
});

test("widthWithRoom grows a node only up to the next node on its right", () => {
  const box = [0, 0, 330, 500];
  // a node in the next column (starts at 420: 330 + a 90 px gap) limits the growth to 420 - 20 = 400
  assert.equal(P.widthWithRoom(box, [[420, 40, 330, 120]], 640), 400);
  // nothing on the right: the wanted width; a node below or above (rows do not overlap) does not count
  assert.equal(P.widthWithRoom(box, [], 640), 640);
  assert.equal(P.widthWithRoom(box, [[420, 600, 330, 120], [420, -200, 330, 150]], 640), 640);
  // a node to the left, or one the node already overlaps, does not limit it
  assert.equal(P.widthWithRoom(box, [[-400, 0, 330, 100], [100, 50, 100, 100]], 500), 500);
  // never narrower than it is, even with a neighbour closer than the gap
  assert.equal(P.widthWithRoom(box, [[340, 0, 100, 100]], 640), 330);
  // the nearest neighbour wins; the wanted width wins when it is smaller
  assert.equal(P.widthWithRoom(box, [[900, 0, 10, 10], [500, 10, 10, 10]], 640), 480);
  assert.equal(P.widthWithRoom(box, [[900, 0, 10, 10]], 450), 450);
});
