// Zephyra web app. Renders every page from the JSON API; data only ever goes into textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
const main = () => $("#main");
const status = (msg, isError) => { const s = $("#status"); s.textContent = msg || ""; s.className = isError ? "error" : "muted"; };
const fmt = (x, d = 3) => (x === 0 ? "0" : Math.abs(x) >= 1e-2 && Math.abs(x) < 1e4 ? x.toFixed(d) : x.toExponential(2));
const shade = (a, max) => {
  const t = max > 0 ? Math.max(0, Math.min(1, a / max)) : 0;
  return t <= 0 ? "transparent" : `rgba(234, 88, 12, ${(0.1 + 0.8 * t).toFixed(3)})`;
};
const visible = (t) => t.replace(/\n/g, "\u21b5");

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
  return j;
}

// POSTs `body` and calls `onLine` with each JSON line of the streamed (NDJSON) answer as it arrives.
async function streamLines(path, body, onLine) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) {
    const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    throw new Error(j.error || `HTTP ${r.status}`);
  }
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    buf += decoder.decode(value || new Uint8Array(), { stream: !done });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
      if (line.trim()) onLine(JSON.parse(line));
    }
    if (done) break;
  }
  if (buf.trim()) onLine(JSON.parse(buf));
}

function tokenSpan(tok, act, max, extra) {
  const s = el("span", { class: "tok" + (extra ? " " + extra : ""), text: visible(tok), title: `activation ${fmt(act)}` });
  s.style.background = shade(act, max);
  return s;
}

function contextRow(ex, max) {
  const row = el("div", { class: "ctx" }, el("span", { class: "act", text: fmt(ex.act, 2) }));
  ex.tokens.forEach((t, i) => row.append(tokenSpan(t, ex.acts[i] || 0, max, i === ex.center ? "center" : "")));
  return row;
}

// ---------------------------------------------------------------- browser
async function browser() {
  const params = new URLSearchParams(location.search);
  const state = { sort: params.get("sort") || "density", order: "desc", q: params.get("q") || "", offset: 0, limit: 50 };
  const q = el("input", { id: "q", placeholder: "search tokens, logits or an id", value: state.q });
  const sort = el("select", { id: "sort" },
    el("option", { value: "density", text: "density" }), el("option", { value: "max", text: "max activation" }),
    el("option", { value: "mean", text: "mean activation" }), el("option", { value: "id", text: "id" }));
  sort.value = state.sort;
  const order = el("select", { id: "order" }, el("option", { value: "desc", text: "descending" }), el("option", { value: "asc", text: "ascending" }));
  const prev = el("button", { text: "‹ prev" }), next = el("button", { text: "next ›" });
  const count = el("span", { class: "muted", id: "count" });
  const body = el("tbody", { id: "rows" });
  const table = el("table", { id: "features" },
    el("thead", {}, el("tr", {}, ...["id", "density", "max", "mean", "top tokens", "promotes"].map((h) => el("th", { text: h })))), body);
  main().append(el("div", { class: "controls" }, q, sort, order, prev, next, count), table);
  async function load() {
    const u = new URLSearchParams({ sort: state.sort, order: state.order, offset: state.offset, limit: state.limit });
    if (state.q) u.set("q", state.q);
    try {
      const j = await api("/api/features?" + u);
      body.replaceChildren(...j.features.map((f) => el("tr", {},
        el("td", {}, el("a", { href: `/feature/${f.id}`, text: String(f.id) })),
        el("td", { class: "num", text: fmt(f.density, 5) }), el("td", { class: "num", text: fmt(f.max_act) }),
        el("td", { class: "num", text: fmt(f.mean_act) }),
        el("td", {}, ...f.top_tokens.map((t) => el("span", { class: "pill tok", text: visible(t) }))),
        el("td", {}, ...f.top_logits.map((t) => el("span", { class: "pill tok", text: visible(t) }))))));
      count.textContent = `${j.total ? state.offset + 1 : 0}–${Math.min(state.offset + state.limit, j.total)} of ${j.total}`;
      prev.disabled = state.offset === 0; next.disabled = state.offset + state.limit >= j.total;
      status("");
    } catch (e) { status(e.message, true); }
  }
  let timer;
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.q = q.value.trim(); state.offset = 0; load(); }, 200); });
  sort.addEventListener("change", () => { state.sort = sort.value; state.offset = 0; load(); });
  order.addEventListener("change", () => { state.order = order.value; state.offset = 0; load(); });
  prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
  next.addEventListener("click", () => { state.offset += state.limit; load(); });
  await load();
}

// ---------------------------------------------------------------- feature page
function histogram(counts, info) {
  const w = 560, h = 120, n = counts.length, max = Math.max(1, ...counts);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "hist"); svg.setAttribute("width", w); svg.setAttribute("height", h + 18);
  counts.forEach((c, i) => {
    if (!c) return;
    const r = document.createElementNS(ns, "rect");
    const bh = (h * c) / max;
    r.setAttribute("x", (i * w) / n); r.setAttribute("y", h - bh); r.setAttribute("width", Math.max(1, w / n - 1)); r.setAttribute("height", bh);
    const lo = Math.pow(10, info.hist_log10_min + (i * (info.hist_log10_max - info.hist_log10_min)) / n);
    const t = document.createElementNS(ns, "title"); t.textContent = `≥ ${fmt(lo)}: ${c}`; r.append(t);
    svg.append(r);
  });
  for (let d = Math.ceil(info.hist_log10_min); d <= info.hist_log10_max; d++) {
    const x = ((d - info.hist_log10_min) / (info.hist_log10_max - info.hist_log10_min)) * w;
    const t = document.createElementNS(ns, "text"); t.setAttribute("x", Math.min(x, w - 30)); t.setAttribute("y", h + 14);
    t.setAttribute("font-size", "10"); t.textContent = `1e${d}`; svg.append(t);
  }
  return svg;
}

function logitTable(title, rows) {
  return el("div", { class: "card" }, el("h2", { text: title }),
    el("table", {}, el("tbody", {}, ...rows.map((r) => el("tr", {}, el("td", { class: "tok", text: visible(r.token) }), el("td", { class: "num", text: fmt(r.value) }))))));
}

async function feature() {
  const id = location.pathname.split("/").pop();
  // A transcoder feature lives at /layer/L/feature/ID and reads that layer's store.
  const layer = (location.pathname.match(/^\/layer\/(\d+)\//) || [])[1];
  const base = layer === undefined ? "" : `/layer/${layer}`;
  try {
    const [f, info] = await Promise.all([api(`/api${base}/feature/${id}`), api(`/api${base}/info`)]);
    $("#title").textContent = layer === undefined ? `Feature ${f.id}` : `Layer ${layer} feature ${f.id}`;
    const stats = el("p", { id: "stats", text: `density ${fmt(f.density, 5)} · fires on ${f.n_fires} tokens · mean ${fmt(f.mean_act)} · max ${fmt(f.max_act)}` });
    const steerLink = layer === undefined ? el("a", { href: `/steer?feature=${f.id}`, id: "steer-link", text: "steer with this feature →" }) : null;
    const top = el("div", { id: "top-contexts" }, ...f.top.map((ex) => contextRow(ex, f.max_act)));
    const quant = el("div", { id: "quantiles" }, ...f.quantiles.map((g) => el("div", {},
      el("h2", { text: `activations ${fmt(g.min_act, 2)} – ${fmt(g.max_act, 2)}` }), ...g.examples.map((ex) => contextRow(ex, f.max_act)))));
    const cof = el("div", { id: "cofire" }, ...f.cofire.map((c) =>
      el("span", { class: "pill" }, el("a", { href: `${base}/feature/${c.id}`, text: String(c.id) }), ` ${(100 * c.fraction).toFixed(1)}%`)));
    main().append(stats, steerLink,
      el("h2", { text: "Activation histogram (log10 bins)" }), histogram(f.histogram, info),
      el("div", { class: "grid2", id: "logits" }, logitTable("Promoted tokens", f.logits_pos), logitTable("Suppressed tokens", f.logits_neg)),
      el("h2", { text: "Top activating contexts" }), top,
      el("h2", { text: "Co-firing features" }), cof,
      el("h2", { text: "Samples by activation quantile" }), quant);
    if (!f.top.length) top.append(el("p", { class: "muted", text: "This feature never fired on the corpus." }));
    status("");
  } catch (e) { status(e.message, true); }
}

// ---------------------------------------------------------------- explain
async function explain() {
  const text = el("textarea", { id: "text", placeholder: "Paste a text" });
  text.value = new URLSearchParams(location.search).get("text") || "fn main() { println!(\"hi\"); }";
  const go = el("button", { id: "go", text: "Explain" });
  const out = el("div", { id: "tokens", class: "card" }), detail = el("div", { id: "detail" });
  main().append(text, el("div", { class: "controls" }, go), out, detail);
  async function run() {
    go.disabled = true; status("running the model…");
    try {
      const j = await api("/api/explain", { text: text.value, top_k: 8 });
      const max = Math.max(1e-9, ...j.tokens.map((t) => (t.features[0] ? t.features[0].act : 0)));
      out.replaceChildren(...j.tokens.map((t) => {
        const a = t.features[0] ? t.features[0].act : 0;
        const s = tokenSpan(t.token, a, max, t.excluded ? "excluded" : "");
        s.addEventListener("click", () => detail.replaceChildren(el("h2", { text: `“${visible(t.token)}”` }),
          t.excluded ? el("p", { class: "muted", text: "excluded (position 0, special token or attention sink)" }) : null,
          ...t.features.map((f) => el("div", {}, el("a", { href: `/feature/${f.id}`, text: `feature ${f.id}` }), ` ${fmt(f.act)}`))));
        return s;
      }));
      status("click a token for its features");
    } catch (e) { status(e.message, true); }
    go.disabled = false;
  }
  go.addEventListener("click", run);
  if (new URLSearchParams(location.search).get("run")) await run();
}

// ---------------------------------------------------------------- steer
async function steer() {
  const p = new URLSearchParams(location.search);
  const prompt = el("input", { id: "prompt", size: "50", value: p.get("prompt") || "I think that" });
  const feat = el("input", { id: "feature", type: "number", min: "0", value: p.get("feature") || "0" });
  const strength = el("input", { id: "strength", type: "number", step: "any", value: p.get("strength") || "8" });
  const mode = el("select", { id: "mode" }, el("option", { value: "add", text: "add" }), el("option", { value: "clamp", text: "clamp" }));
  mode.value = p.get("mode") || "add";
  const maxTok = el("input", { id: "max_tokens", type: "number", min: "1", max: "256", value: p.get("max_tokens") || "32" });
  const seed = el("input", { id: "seed", type: "number", min: "0", value: p.get("seed") || "0" });
  const go = el("button", { id: "go", text: "Generate" });
  const steered = el("div", { id: "steered", class: "out" }), unsteered = el("div", { id: "unsteered", class: "out" });
  main().append(
    el("div", { class: "controls" }, "prompt", prompt, "feature", feat, "strength", strength, mode, "tokens", maxTok, "seed", seed, go),
    el("div", { class: "grid2" }, el("div", { class: "card" }, el("h2", { text: "Steered" }), steered),
      el("div", { class: "card" }, el("h2", { text: "Unsteered" }), unsteered)));
  // Both sides stream in at once: each `{"side", "token"}` line is appended to its column as it arrives.
  async function run() {
    go.disabled = true; status("generating…");
    const cols = { steered, unsteered }, streamed = { steered: "", unsteered: "" }, pieces = { steered: 0, unsteered: 0 };
    for (const c of Object.values(cols)) { c.textContent = prompt.value; c.removeAttribute("data-match"); }
    let final = null, failure = null;
    try {
      await streamLines("/api/steer/stream", { prompt: prompt.value, feature: Number(feat.value), strength: Number(strength.value),
        mode: mode.value, max_tokens: Number(maxTok.value), seed: Number(seed.value) }, (ev) => {
        if (ev.side && cols[ev.side]) {
          cols[ev.side].append(ev.token); streamed[ev.side] += ev.token;
          cols[ev.side].dataset.pieces = String(++pieces[ev.side]);
        } else if (ev.done) final = ev;
        else if (ev.error) failure = ev.error;
      });
      if (failure) throw new Error(failure);
      if (!final) throw new Error("the stream ended before generation finished");
      for (const side of ["steered", "unsteered"]) {
        cols[side].dataset.match = streamed[side] === final[side] ? "1" : "0";
        cols[side].textContent = prompt.value + final[side];
      }
      status("done");
    } catch (e) { status(e.message, true); }
    go.disabled = false;
  }
  go.addEventListener("click", run);
  if (p.get("run")) await run();
}

// ---------------------------------------------------------------- run
const num = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : fmt(v, 4)) : String(v));
function kvTable(id, obj) {
  const rows = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined && typeof v !== "object");
  return el("table", { id, class: "kv" }, el("tbody", {}, ...rows.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: num(v) })))));
}

function curveChart(points, key, title, transform) {
  const w = 360, h = 150, pad = 4, ns = "http://www.w3.org/2000/svg";
  const pts = points.map((p) => [p.tokens, transform ? transform(p[key]) : p[key]]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "curve"); svg.setAttribute("width", w); svg.setAttribute("height", h + 20); svg.dataset.key = key;
  const label = document.createElementNS(ns, "text"); label.setAttribute("x", 4); label.setAttribute("y", 14); label.setAttribute("font-size", "12");
  label.textContent = title; svg.append(label);
  if (pts.length) {
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad), sy = (y) => 20 + pad + (1 - (y - y0) / (y1 - y0 || 1)) * (h - 2 * pad);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
    svg.append(line);
    const last = document.createElementNS(ns, "text"); last.setAttribute("x", w - 4); last.setAttribute("y", 14); last.setAttribute("font-size", "12");
    last.setAttribute("text-anchor", "end"); last.textContent = `last ${fmt(ys[ys.length - 1])}`; svg.append(last);
  }
  return svg;
}

async function run() {
  let r;
  try { r = await api("/api/run"); } catch (e) { status(e.message, true); return; }
  $("#title").textContent = `Run ${r.dir}`;
  const cmd = (id, text) => el("pre", { class: "cmd" }, el("code", { id, text }));
  if (r.problems.length) main().append(el("div", { id: "problems", class: "card error" }, ...r.problems.map((p) => el("p", { text: p }))));
  main().append(el("h2", { text: "Configuration" }), r.cfg ? kvTable("cfg", r.cfg) : el("p", { class: "muted", text: "No cfg.json." }));
  main().append(el("h2", { text: "Training" }));
  if (r.summary) main().append(kvTable("summary", r.summary));
  const hasTrainingPlot = r.plots.some((p) => p.name.startsWith("training."));
  if (r.training) {
    const last = r.training.last || {};
    main().append(el("p", { id: "training-last", text: `${r.training.n_records} metric records; last: ${num(last.tokens)} tokens, loss ${fmt(last.loss)}, L0 ${fmt(last.l0, 2)}, FVE ${fmt(last.fve, 4)}` }));
    if (!hasTrainingPlot) main().append(el("div", { id: "curves", class: "curves" },
      curveChart(r.training.curve, "loss", "log10(loss)", Math.log10), curveChart(r.training.curve, "l0", "L0"), curveChart(r.training.curve, "fve", "FVE")));
  } else if (!r.summary) main().append(el("p", { class: "muted", text: "No training record (metrics.jsonl, summary.json) in this directory." }));
  main().append(el("h2", { text: "Evaluation" }));
  if (r.eval) {
    main().append(el("table", { id: "eval-table", class: "kv" }, el("tbody", {}, ...r.eval.rows.map((row) => el("tr", {}, el("th", { text: row.name }), el("td", { text: row.value }))))));
  } else {
    main().append(el("div", { id: "no-eval", class: "card" }, el("p", { text: "This run has no evaluation yet (no eval.json). Make one with:" }), cmd("eval-command", r.eval_command),
      el("p", { class: "muted", text: "then reload this page." })));
  }
  main().append(el("h2", { text: "Plots" }));
  if (r.plots.length) {
    main().append(el("div", { id: "plots" }, ...r.plots.map((p) => {
      const img = el("img", { src: p.url, alt: p.name, class: "plot" });
      img.addEventListener("load", () => img.setAttribute("data-loaded", "1"));
      return el("figure", {}, img, el("figcaption", { class: "muted", text: p.name }));
    })));
  } else {
    main().append(el("div", { id: "no-plots", class: "card" }, el("p", { text: "No plot files yet. Draw them (training curves, density histogram) with:" }), cmd("plot-command", r.plot_command)));
  }
  // Let the images finish (or fail) before the page counts as rendered.
  await Promise.all([...document.querySelectorAll("img.plot")].map((img) => (img.complete ? null : new Promise((ok) => { img.onload = img.onerror = ok; }))));
  status("");
}

// ---------------------------------------------------------------- graphs
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function graphs() {
  let j;
  try { j = await api("/api/graphs"); } catch (e) { status(e.message, true); return; }
  const list = el("ul", { id: "graph-list" });
  if (!j.graphs.length) list.append(el("li", { class: "muted", text: "No graphs yet: make one below, or with zephyra attribute --out DIR/NAME.json." }));
  j.graphs.forEach((g) => list.append(el("li", {}, el("a", { href: `/graph/${g.name}`, text: g.name }), " ",
    el("span", { class: "muted", text: `${Math.ceil(g.bytes / 1024)} KiB` }))));
  main().append(list, el("h2", { text: "Make a graph" }));
  if (!j.can_make) {
    main().append(el("p", { class: "muted", text: "The server runs without a model: start it with --model and --transcoders to make graphs." }));
    status(""); return;
  }
  const name = el("input", { id: "graph-name", placeholder: "name: letters, digits, _ or -" });
  const prompt = el("input", { id: "graph-prompt", placeholder: "The capital of France is", size: "60" });
  const go = el("button", { id: "make", text: "Make graph" });
  const progress = el("p", { id: "job", class: "muted" });
  go.addEventListener("click", async () => {
    go.disabled = true; status("");
    try {
      const { job } = await api("/api/graphs", { name: name.value, prompt: prompt.value });
      for (;;) {
        const s = await api(`/api/graph-jobs/${job}`);
        progress.textContent = `${s.state}${s.total ? ` · ${s.done}/${s.total} feature rows` : ""}`;
        if (s.state === "done") { location.href = `/graph/${s.name}`; return; }
        if (s.state === "failed") throw new Error(s.error);
        await sleep(1000);
      }
    } catch (e) { status(e.message, true); } finally { go.disabled = false; }
  });
  main().append(el("div", { class: "controls" }, name, prompt, go), progress);
  status("");
}

// Rows: embeddings at the bottom, then layer 0 … L−1, logits on top; columns: prompt positions. The nodes
// of a cell sit in slots side by side, wrapping onto up to as many lines as the row's height holds; a column
// widens to fit its fullest cell, so no node covers another.
const nodeRadius = (n) => (n.feature_type === "logit" ? 8 : 6);
const PER_LINE = 8;
// Graphs of trained transcoders keep 10^5 edges and more after pruning: the page draws the strongest ones
// (an SVG of every edge would stall the browser) and says how many it left out.
const MAX_DRAWN_EDGES = 20000;
// The largest of many numbers (`Math.max(...xs)` overflows the call stack past ~10^5 arguments).
const maxOf = (xs, init) => xs.reduce((m, x) => (x > m ? x : m), init);
function graphLayout(g) {
  const nLayers = maxOf(g.nodes.filter((n) => n.feature_type === "logit").map((n) => +n.layer - 1), 0);
  const row = (n) => (n.layer === "E" ? 0 : n.feature_type === "logit" ? nLayers + 1 : +n.layer + 1);
  const nPos = g.metadata.prompt_tokens.length;
  const baseW = Math.max(70, Math.min(160, 1100 / Math.max(1, nPos))), rowH = 46, padL = 60, padT = 20;
  const cells = new Map();
  g.nodes.forEach((n) => { const k = `${row(n)}:${n.ctx_idx}`; (cells.get(k) || cells.set(k, []).get(k)).push(n); });
  // Per cell: the slot size, lines and nodes per line.
  const shape = (list) => {
    const slot = 3 + 2 * maxOf(list.map(nodeRadius), 0);
    const lines = Math.max(1, Math.min(Math.floor((rowH - 1) / slot), Math.ceil(list.length / PER_LINE)));
    return { slot, lines, perLine: Math.ceil(list.length / lines) };
  };
  const colW = new Array(nPos).fill(baseW);
  for (const [k, list] of cells) {
    const c = +k.split(":")[1], s = shape(list);
    if (c < nPos) colW[c] = Math.max(colW[c], 10 + s.perLine * s.slot);
  }
  const colX = [];
  let right = padL;
  for (let c = 0; c < nPos; c++) { colX.push(right); right += colW[c]; }
  const pos = new Map();
  for (const [k, list] of cells) {
    const [r, c] = k.split(":").map(Number);
    if (c >= nPos) continue;
    list.sort((a, b) => (b.influence == null ? 0 : 1) - (a.influence == null ? 0 : 1) || (a.influence || 0) - (b.influence || 0));
    const { slot, lines, perLine } = shape(list);
    const x0 = colX[c] + (colW[c] - perLine * slot) / 2, y0 = padT + (nLayers + 1 - r) * rowH + rowH / 2;
    list.forEach((n, i) => {
      const line = Math.floor(i / perLine), k = i % perLine;
      pos.set(n.node_id, { x: x0 + (k + 0.5) * slot, y: y0 + (line - (lines - 1) / 2) * slot });
    });
  }
  return { pos, width: right + 10, height: padT + (nLayers + 2) * rowH + 30, nLayers, colX, colW, rowH, padT };
}

function nodeLabel(n, tokens) {
  if (n.feature_type === "embedding") return `token ${JSON.stringify(tokens[n.ctx_idx] || "")} @${n.ctx_idx}`;
  if (n.feature_type === "logit") return n.clerp;
  if (n.feature_type === "mlp reconstruction error") return `error L${n.layer} @${n.ctx_idx}`;
  return `L${n.layer} feature ${n.feature} @${n.ctx_idx} (activation ${fmt(n.activation || 0)})`;
}

async function graphPage() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  let g;
  try { g = await api(`/api/graph/${encodeURIComponent(name)}`); } catch (e) { status(e.message, true); return; }
  $("#title").textContent = `Graph ${g.metadata.slug}`;
  const tokens = g.metadata.prompt_tokens;
  const L = graphLayout(g), ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("id", "graph-svg"); svg.setAttribute("width", L.width); svg.setAttribute("height", L.height);
  const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  for (let r = 0; r <= L.nLayers + 1; r++) {
    const y = L.padT + (L.nLayers + 1 - r) * L.rowH + L.rowH / 2;
    const t = mk("text", { x: 4, y: y + 4, class: "row-label" }); t.textContent = r === 0 ? "emb" : r === L.nLayers + 1 ? "logits" : `L${r - 1}`; svg.append(t);
  }
  tokens.forEach((tok, c) => {
    const t = mk("text", { x: L.colX[c] + L.colW[c] / 2, y: L.height - 8, "text-anchor": "middle", class: "tok-label" });
    t.textContent = visible(tok); svg.append(t);
  });
  const maxW = maxOf(g.links.map((l) => Math.abs(l.weight)), 1e-12);
  const edges = el("span");
  // Past the limit: the strongest, weakest first so the strong ones are drawn on top.
  const drawn = g.links.length <= MAX_DRAWN_EDGES ? g.links
    : [...g.links].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, MAX_DRAWN_EDGES).reverse();
  drawn.forEach((l) => {
    const a = L.pos.get(l.source), b = L.pos.get(l.target);
    if (!a || !b) return;
    const line = mk("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: l.weight >= 0 ? "edge pos" : "edge neg",
      "stroke-width": (0.3 + 4 * Math.abs(l.weight) / maxW).toFixed(2), "data-source": l.source, "data-target": l.target });
    const t = mk("title", {}); t.textContent = `${l.source} → ${l.target}: ${fmt(l.weight)}`; line.append(t);
    svg.append(line);
  });
  const card = el("div", { id: "hover-card", class: "card" }, el("p", { class: "muted", text: "Hover a node for its top contexts; click a feature to open its page; shift-click to add it to the intervention." }));
  const edits = [];
  const editList = el("ul", { id: "edits" });
  const renderEdits = () => {
    editList.replaceChildren(...edits.map((e, i) => {
      const scale = el("input", { type: "number", step: "0.5", value: String(e.scale), class: "scale" });
      scale.addEventListener("change", () => { e.scale = Number(scale.value); });
      return el("li", {}, `${e.label} × `, scale, " ", el("button", { text: "remove", onclick: () => { edits.splice(i, 1); renderEdits(); } }));
    }));
  };
  const addEdit = (n, scale) => { if (!edits.some((e) => e.node_id === n.node_id)) edits.push({ node_id: n.node_id, scale, label: nodeLabel(n, tokens) }); renderEdits(); };
  const cache = new Map();
  async function hover(n) {
    card.replaceChildren(el("h2", { text: nodeLabel(n, tokens) }));
    if (n.feature_type !== "cross layer transcoder") return;
    const key = `${n.layer}/${n.feature}`;
    try {
      if (!cache.has(key)) cache.set(key, api(`/api/layer/${n.layer}/feature/${n.feature}`));
      const f = await cache.get(key);
      card.append(el("p", { class: "muted", text: `density ${fmt(f.density, 5)} · max ${fmt(f.max_act)}` }),
        ...f.top.slice(0, 5).map((ex) => contextRow(ex, f.max_act)));
    } catch (e) { card.append(el("p", { class: "muted", text: e.message })); }
  }
  g.nodes.forEach((n) => {
    const p = L.pos.get(n.node_id);
    if (!p) return;
    const kind = { "cross layer transcoder": "feature", "mlp reconstruction error": "error", embedding: "embedding", logit: "logit" }[n.feature_type] || "feature";
    const shape = kind === "error" ? mk("rect", { x: p.x - 5, y: p.y - 5, width: 10, height: 10 }) : mk("circle", { cx: p.x, cy: p.y, r: nodeRadius(n) });
    shape.setAttribute("class", `node ${kind}`); shape.setAttribute("data-node", n.node_id);
    const t = mk("title", {}); t.textContent = nodeLabel(n, tokens); shape.append(t);
    shape.addEventListener("mouseenter", () => hover(n));
    if (kind === "feature") {
      shape.addEventListener("click", (ev) => {
        if (ev.shiftKey) addEdit(n, 0); else location.href = `/layer/${n.layer}/feature/${n.feature}`;
      });
    }
    svg.append(shape);
  });
  const features = g.nodes.filter((n) => n.feature_type === "cross layer transcoder");
  const pick = el("select", { id: "pick" }, ...features.map((n) => el("option", { value: n.node_id, text: nodeLabel(n, tokens) })));
  const pickScale = el("input", { type: "number", step: "0.5", value: "0", id: "pick-scale", class: "scale" });
  const add = el("button", { id: "add-edit", text: "add", onclick: () => { const n = features.find((f) => f.node_id === pick.value); if (n) addEdit(n, Number(pickScale.value)); } });
  const runBtn = el("button", { id: "intervene", text: "Run the model" });
  const result = el("div", { id: "intervention" });
  runBtn.addEventListener("click", async () => {
    runBtn.disabled = true; status("");
    try {
      const r = await api(`/api/graph/${encodeURIComponent(name)}/intervene`, { edits: edits.map((e) => ({ node_id: e.node_id, scale: e.scale })), top_k: 10 });
      const table = (title, rows) => el("div", {}, el("h2", { text: title }), el("table", {}, el("tbody", {},
        ...rows.map((t) => el("tr", {}, el("td", { class: "tok", text: visible(t.token) }), el("td", { class: "num", text: fmt(t.prob) }))))));
      const target = r.target ? el("p", { id: "target-change", text: `${JSON.stringify(r.target.token)}: logit − mean ${fmt(r.target.before)} → ${fmt(r.target.after)}` }) : null;
      // The target's change above, the two tables side by side below it.
      result.replaceChildren(...(target ? [target] : []),
        el("div", { class: "grid2" }, table("Top tokens before", r.before), table("Top tokens after", r.after)));
      result.dataset.runs = String(Number(result.dataset.runs || 0) + 1);
    } catch (e) { status(e.message, true); } finally { runBtn.disabled = false; }
  });
  main().append(el("p", { id: "prompt", class: "muted", text: `${g.metadata.prompt} · ${g.nodes.length} nodes, ${g.links.length} edges`
    + (drawn.length < g.links.length ? ` (the ${drawn.length} strongest drawn)` : "") }),
    el("div", { id: "graph-wrap" }, svg), card,
    el("h2", { text: "Ablate or steer (the real model, attention recomputed)" }),
    el("div", { class: "controls" }, pick, "×", pickScale, add), editList, runBtn, result);
  status("");
}

async function start() {
  api("/api/info").then((i) => { $("#info").textContent = `${i.hook} · ${i.d_sae} latents · ${i.n_tokens_kept} tokens`; }).catch(() => {});
  const pages = { browser, feature, explain, steer, run, graphs, graph: graphPage };
  const page = pages[document.body.dataset.page];
  if (page) await page(); else status("Nothing here. Go back to the feature list.", true);
  document.body.dataset.ready = "1";
}
start();
