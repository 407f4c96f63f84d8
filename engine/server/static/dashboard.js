// pipectl live page: polls /v2/stats/live once a second and draws the selected pipeline.
// The API key (pipectl serve --api-key) comes in the URL fragment, #key=KEY, and is kept in
// sessionStorage for this tab; it is sent as "Authorization: Bearer KEY".
"use strict";

// ?pipeline=NAME opens that pipeline's view; otherwise the last one chosen in this tab
const state = {
  pipeline: new URLSearchParams(location.search).get("pipeline") || sessionStorage.getItem("pipectl.pipeline") || "",
  polls: 0,
};
const $ = (id) => document.getElementById(id);

(function takeKey() {
  const m = location.hash.match(/key=([^&]+)/);
  if (m) {
    sessionStorage.setItem("pipectl.key", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const fmt = (x, digits = 1) =>
  x === null || x === undefined ? "–" : x >= 100 ? Math.round(x).toLocaleString() : x.toFixed(digits);
const pct = (p) => (p ? `${fmt(p.p50, 2)} / ${fmt(p.p99, 2)}` : "–");
const hue = (name) => [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 7);

async function poll() {
  const key = sessionStorage.getItem("pipectl.key");
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    const r = await fetch("/v2/stats/live", { headers, cache: "no-store" });
    if (r.status === 401) throw new Error("the server needs its API key: open /dashboard#key=YOUR_KEY");
    if (!r.ok) throw new Error(`/v2/stats/live answered ${r.status}`);
    render(await r.json());
    $("error").hidden = true;
  } catch (e) {
    $("error").textContent = String(e.message || e);
    $("error").hidden = false;
  }
}

function render(doc) {
  state.polls += 1;
  const names = doc.pipelines.map((p) => p.name);
  if (!names.includes(state.pipeline)) state.pipeline = names[0] || "";
  const tabs = $("tabs");
  tabs.replaceChildren(
    ...names.map((n) => {
      const b = el("button", { class: n === state.pipeline ? "active" : "", "data-pipeline": n }, n);
      b.onclick = () => { state.pipeline = n; sessionStorage.setItem("pipectl.pipeline", n); render(doc); };
      return b;
    })
  );
  const s = doc.server;
  $("status").textContent = `${s.name} ${s.version} · up ${fmt(s.uptime_s, 0)} s · ${s.in_flight} in flight · updated ${new Date().toLocaleTimeString()}`;
  $("status").dataset.polls = state.polls;
  $("window").textContent = fmt(s.window_s, 0);
  const p = doc.pipelines.find((x) => x.name === state.pipeline);
  if (!p) return;
  renderSummary(p);
  renderGraph(p);
  renderLLM(p);
  renderGantt(p);
}

function renderSummary(p) {
  const rps = p.nodes.reduce((m, n) => Math.max(m, n.rps || 0), 0);
  const items = [
    ["state", p.state + (p.reason ? `: ${p.reason}` : "")],
    ["requests answered", p.requests.success.toLocaleString()],
    ["failed", p.requests.failure.toLocaleString()],
    ["busiest node req/s", fmt(rps)],
    ["file", p.file],
  ];
  $("summary").replaceChildren(...items.map(([k, v]) => el("div", {}, el("span", { class: "muted" }, k + " "), el("b", { "data-summary": k }, v))));
}

function layers(p) {
  const depth = { $inputs: 0 };
  const byNode = {};
  for (const e of p.edges) (byNode[e.to] = byNode[e.to] || []).push(e.from);
  const visit = (n, seen = new Set()) => {
    if (n in depth) return depth[n];
    if (seen.has(n)) return 1;
    seen.add(n);
    depth[n] = 1 + Math.max(0, ...(byNode[n] || ["$inputs"]).map((f) => visit(f, seen)));
    return depth[n];
  };
  p.nodes.forEach((n) => visit(n.name));
  return depth;
}

const COL = 250, ROW = 215, PAD = 14;

function renderGraph(p) {
  const depth = layers(p);
  const maxDepth = Math.max(1, ...p.nodes.map((n) => depth[n.name]));
  const cols = {};
  const place = {};
  const put = (name, d) => {
    const row = (cols[d] = (cols[d] || 0) + 1) - 1;
    place[name] = { x: PAD + d * COL, y: PAD + row * ROW };
  };
  put("$inputs", 0);
  p.nodes.forEach((n) => put(n.name, depth[n.name]));
  put("$outputs", maxDepth + 1);
  const height = PAD * 2 + Math.max(...Object.values(cols)) * ROW;
  const width = PAD * 2 + (maxDepth + 2) * COL;
  const graph = $("graph");
  graph.style.height = `${height}px`;
  const cards = [ioCard("$inputs", "inputs", p.inputs), ioCard("$outputs", "outputs", Object.keys(p.outputs))];
  for (const n of p.nodes) cards.push(nodeCard(n));
  cards.forEach((c) => {
    const at = place[c.dataset.node];
    c.style.left = `${at.x}px`;
    c.style.top = `${at.y}px`;
  });
  graph.replaceChildren(edgeLayer(p, place, width, height), ...cards);
  const bottom = Math.max(...cards.map((c) => c.offsetTop + c.offsetHeight));
  graph.style.height = `${Math.max(height, bottom + PAD) + 18}px`;  // cards may be taller than a row; room for a scrollbar
}

function edgeLayer(p, place, width, height) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const ports = new Map();  // one curve per pair of cards, labelled with its ports
  const link = (from, to, port) => {
    const key = `${from}\u0000${to}`;
    if (!ports.has(key)) ports.set(key, [from, to, []]);
    ports.get(key)[2].push(port);
  };
  p.edges.forEach((e) => link(e.from, e.to, e.port));
  for (const [out, src] of Object.entries(p.outputs)) link(src.split(".")[0], "$outputs", out);
  const links = [...ports.values()].map(([from, to, names]) =>
    [from, to, names.length > 2 ? `${names.slice(0, 2).join(", ")} +${names.length - 2}` : names.join(", ")]);
  const incoming = {};  // the k-th edge into a card ends k rows lower, so labels stay apart
  for (const [from, to, label] of links) {
    const a = place[from], b = place[to];
    if (!a || !b) continue;
    const k = (incoming[to] = (incoming[to] || 0) + 1) - 1;
    const x1 = a.x + (from === "$inputs" ? 120 : 210), y1 = a.y + 24, x2 = b.x, y2 = b.y + 24 + 13 * k;
    const path = document.createElementNS(ns, "path");
    const mid = (x1 + x2) / 2;
    path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
    path.dataset.edge = `${from}->${to}`;
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", Math.max(x1 + 2, x2 - 4 - label.length * 5));
    text.setAttribute("y", y2 - 4);
    text.textContent = label;
    svg.append(path, text);
  }
  return svg;
}

function ioCard(id, title, names) {
  const shown = names.length > 8 ? names.slice(0, 7) : names;
  const more = names.length - shown.length;
  return el("div", { class: "node io", "data-node": id, title: names.join(", ") }, el("div", { class: "title" }, title),
    ...shown.map((n) => el("div", { class: "inst" }, n)), more ? el("div", { class: "inst" }, `… ${more} more`) : null);
}

function nodeCard(n) {
  const devices = {};
  for (const i of n.instances) {
    const where = i.backend === "ray" ? `${i.device} on Ray node ${String(i.node_id || "?").slice(0, 8)}` : i.device;
    const label = i.ready === false ? `${where} (down)` : where;
    devices[label] = (devices[label] || 0) + 1;
  }
  const inst = Object.entries(devices).map(([d, c]) => `${d} ×${c}`).join(", ");
  const cells = [
    ["queued", fmt(n.queued, 0), "queued"], ["req/s", fmt(n.rps), "rps"],
    ["queue p50/p99 ms", pct(n.queue_ms), "queue_ms"], ["compute p50/p99 ms", pct(n.compute_ms), "compute_ms"],
    ["done", (n.success || 0).toLocaleString(), "success"], ["failed", (n.failure || 0).toLocaleString(), "failure"],
  ];
  const grid = el("div", { class: "grid" });
  for (const [label, value, key] of cells) {
    grid.append(el("span", {}, label), el("span", { "data-metric": key, class: key === "failure" && n.failure ? "bad" : "" }, value));
  }
  const card = el("div", {
    class: "node" + (n.when ? " conditional" : ""), "data-node": n.name, "data-success": n.success || 0,
    style: `border-left: 5px solid hsl(${hue(n.name)} 60% 50%)`,
  },
  el("div", { class: "title" }, n.name, el("span", { class: "kind" }, n.kind + (n.streaming ? " · streams" : ""))),
  n.when ? el("div", { class: "when", title: "runs only when this holds" }, `when: ${n.when}`) : null,
  el("div", { class: "inst" }, `instances: ${inst}`), grid, histogram(n.batch_sizes || {}));
  return card;
}

function histogram(sizes) {
  const entries = Object.entries(sizes).map(([k, v]) => [Number(k), v]).sort((a, b) => a[0] - b[0]);
  const wrap = el("div", { class: "histwrap", title: "batches by batch size" });
  if (!entries.length) return wrap;
  const top = Math.max(...entries.map((e) => e[1]));
  const hist = el("div", { class: "hist", "data-metric": "batch_sizes" });
  for (const [size, count] of entries.slice(-12)) {
    hist.append(el("div", { style: `height:${Math.max(4, (100 * count) / top)}%`, title: `batch ${size}: ${count} batches` }, el("span", {}, String(size))));
  }
  wrap.append(hist);
  return wrap;
}

function renderLLM(p) {
  const llm = p.nodes.filter((n) => n.own);
  $("llm-section").hidden = !llm.length;
  const cards = [];
  for (const n of llm) {
    const o = n.own;
    const used = o.kv_blocks_used, total = o.kv_blocks_total || 1;
    const gauges = [
      ["running sequences", fmt(o.running, 0), null], ["waiting sequences", fmt(o.waiting, 0), null],
      ["KV blocks in use", `${fmt(used, 0)} / ${fmt(o.kv_blocks_total, 0)}`, used / total],
      ["prefix-cache hit rate", `${fmt(100 * (o.prefix_cache_hit_rate || 0))} %`, o.prefix_cache_hit_rate || 0],
      ["tokens/s", fmt(n.tokens_per_s), null], ["preemptions", fmt(o.preemptions, 0), null],
    ];
    for (const [label, value, frac] of gauges) {
      cards.push(el("div", { class: "gauge", "data-llm": label }, el("span", { class: "muted" }, `${n.name}: ${label}`), el("b", {}, value),
        frac === null ? null : el("div", { class: "bar" }, el("div", { style: `width:${Math.min(100, 100 * frac)}%` }))));
    }
  }
  $("llm").replaceChildren(...cards);
}

function renderGantt(p) {
  const recent = p.recent.slice(-6).reverse();
  const box = $("gantt");
  if (!recent.length) {
    box.replaceChildren(el("div", { class: "muted" }, "no request sampled yet"));
    return;
  }
  const scale = Math.max(...recent.map((r) => r.total_ms), 0.001);
  const rows = recent.map((r) => {
    const label = el("div", { class: "label" }, el("b", {}, `${fmt(r.total_ms, 2)} ms`), ` ${r.model} · ${r.age_s} s ago`,
      r.request_id ? el("div", { class: "muted" }, `id ${r.request_id}`) : null, r.ok ? null : el("div", { class: "bad" }, r.error));
    const lanes = el("div", { class: "lanes" });
    for (const t of r.nodes) {
      const color = `hsl(${hue(t.node)} 60% 50%)`;
      const left = (100 * t.start_ms) / scale;
      const track = el("div", { class: "track" });
      if (t.skipped) {
        track.append(el("div", { class: "seg skip", style: `left:${left}%`, title: `${t.node}: skipped` }));
      } else {
        const q = (100 * t.queue_ms) / scale, c = (100 * t.compute_ms) / scale;
        const tip = `${t.node}: queued ${t.queue_ms} ms, computed ${t.compute_ms} ms in a batch of ${t.batch_size} (instance ${t.instance})`;
        track.append(el("div", { class: "seg queue", style: `left:${left}%;width:${q}%;background:${color}`, title: tip }),
          el("div", { class: "seg", style: `left:${left + q}%;width:${c}%;background:${color}`, title: tip }));
      }
      lanes.append(el("div", { class: "lane", "data-gantt-node": t.node }, el("div", { class: "name" }, t.node + (t.skipped ? " (skipped)" : "")), track));
    }
    return el("div", { class: "grow" }, label, lanes);
  });
  box.replaceChildren(...rows, el("div", { class: "legend" }, `scale: 0 – ${fmt(scale, 2)} ms`));
}

poll();
setInterval(poll, 1000);
