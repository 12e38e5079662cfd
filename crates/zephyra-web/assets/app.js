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
  try {
    const [f, info] = await Promise.all([api(`/api/feature/${id}`), api("/api/info")]);
    $("#title").textContent = `Feature ${f.id}`;
    const stats = el("p", { id: "stats", text: `density ${fmt(f.density, 5)} · fires on ${f.n_fires} tokens · mean ${fmt(f.mean_act)} · max ${fmt(f.max_act)}` });
    const steerLink = el("a", { href: `/steer?feature=${f.id}`, id: "steer-link", text: "steer with this feature →" });
    const top = el("div", { id: "top-contexts" }, ...f.top.map((ex) => contextRow(ex, f.max_act)));
    const quant = el("div", { id: "quantiles" }, ...f.quantiles.map((g) => el("div", {},
      el("h2", { text: `activations ${fmt(g.min_act, 2)} – ${fmt(g.max_act, 2)}` }), ...g.examples.map((ex) => contextRow(ex, f.max_act)))));
    const cof = el("div", { id: "cofire" }, ...f.cofire.map((c) =>
      el("span", { class: "pill" }, el("a", { href: `/feature/${c.id}`, text: String(c.id) }), ` ${(100 * c.fraction).toFixed(1)}%`)));
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
  async function run() {
    go.disabled = true; status("generating…");
    try {
      const j = await api("/api/steer", { prompt: prompt.value, feature: Number(feat.value), strength: Number(strength.value),
        mode: mode.value, max_tokens: Number(maxTok.value), seed: Number(seed.value) });
      steered.textContent = prompt.value + j.steered; unsteered.textContent = prompt.value + j.unsteered;
      status("done");
    } catch (e) { status(e.message, true); }
    go.disabled = false;
  }
  go.addEventListener("click", run);
  if (p.get("run")) await run();
}

async function start() {
  api("/api/info").then((i) => { $("#info").textContent = `${i.hook} · ${i.d_sae} latents · ${i.n_tokens_kept} tokens`; }).catch(() => {});
  const pages = { browser, feature, explain, steer };
  const page = pages[document.body.dataset.page];
  if (page) await page(); else status("Nothing here. Go back to the feature list.", true);
  document.body.dataset.ready = "1";
}
start();
