// blockwatch status page: polls /status once a second and redraws only when the answer changed.
// Read-only: it only ever sends GET requests to the agent that served it.
"use strict";

const POLL_MS = 1000;
const STATUS_TEXT = { healthy: "healthy", degraded: "degraded", catching_up: "catching up", unhealthy: "unhealthy" };
let lastText = null;
let updates = 0;

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function field(root, name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

function num(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function replace(list, items) {
  list.replaceChildren(...items);
}

function chainSection(name) {
  const id = `chain-${name}`;
  let section = document.getElementById(id);
  if (!section) {
    section = document.getElementById("chain-template").content.firstElementChild.cloneNode(true);
    section.id = id;
    section.dataset.chain = name;
    section.setAttribute("aria-label", `chain ${name}`);
    field(section, "name").textContent = name;
    document.getElementById("chains").append(section);
  }
  return section;
}

function drawLag(svg, caption, points) {
  const ns = svg.namespaceURI;
  if (!points.length) {
    svg.replaceChildren();
    caption.textContent = "Lag, last 10 minutes: no block yet";
    return;
  }
  const now = Date.now() / 1000;
  const max = Math.max(1, ...points.map((p) => p.lag_seconds));
  const line = document.createElementNS(ns, "polyline");
  const xy = points.map((p) => {
    const x = Math.max(0, 600 - ((now - p.at) / 600) * 600);
    const y = 78 - (p.lag_seconds / max) * 74;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  line.setAttribute("points", xy.join(" "));
  const title = document.createElementNS(ns, "title");
  title.textContent = `lag over the last 10 minutes, highest ${max.toFixed(1)} s`;
  svg.replaceChildren(title, line);
  const latest = points[points.length - 1].lag_seconds;
  caption.textContent = `Lag, last 10 minutes: now ${latest.toFixed(1)} s, highest ${max.toFixed(1)} s`;
}

function headDelay(p) {
  const ms = p.head_delay_ms === null || p.head_delay_ms === undefined ? "–" : `${Math.round(p.head_delay_ms)} ms`;
  return p.lag_blocks ? `${ms}, ${p.lag_blocks} behind` : ms;
}

function renderProviders(tbody, chain) {
  replace(tbody, chain.providers.map((p) => {
    const row = el("tr", null, { "data-provider": p.name });
    const leader = p.name === chain.current_provider;
    row.dataset.leader = String(leader);
    const name = el("td", p.name);
    if (leader) name.append(el("span", "leader", { class: "leader" }));
    const state = el("td", p.state, { "data-field": "state", "data-state": p.state, class: "state" });
    const lat = p.latency_ms || {};
    row.append(
      name,
      state,
      el("td", num(p.score, 2), { "data-field": "score" }),
      el("td", num(lat.p50, 0)),
      el("td", num(lat.p95, 0)),
      el("td", num(lat.p99, 0)),
      el("td", p.error_rate === null || p.error_rate === undefined ? "–" : `${(p.error_rate * 100).toFixed(1)} %`),
      el("td", headDelay(p)),
      el("td", p.requests ?? "–"),
      el("td", p.rate_limited ?? "–"),
    );
    return row;
  }));
}

function renderChain(chain) {
  const s = chainSection(chain.chain);
  const status = field(s, "status");
  status.textContent = STATUS_TEXT[chain.status] || chain.status;
  status.dataset.state = chain.status;
  replace(field(s, "reasons"), chain.reasons.map((r) => el("li", r)));

  const progress = field(s, "progress");
  const c = chain.catch_up;
  progress.hidden = !c;
  if (c) {
    const total = Math.max(1, c.to + 1 - c.from);
    const bar = progress.querySelector("progress");
    bar.max = total;
    bar.value = Math.min(c.done, total);
    bar.textContent = `${Math.round((100 * c.done) / total)} %`;
    const left = c.eta_seconds === null ? "time left unknown" : `${duration(c.eta_seconds)} left`;
    field(s, "eta").textContent =
      `${c.done} of ${total} blocks (${c.from}…${c.to}), ${c.blocks_per_second.toFixed(1)} blocks/s, ${left}`;
  }

  field(s, "head").textContent = chain.head ?? "–";
  field(s, "last-block").textContent = chain.last_processed_block === null
    ? "none yet"
    : `${chain.last_processed_block} (${ago(chain.seconds_since_last_block)})`;
  field(s, "lag").textContent = chain.block_lag_seconds === null ? "–" : `${chain.block_lag_seconds.toFixed(1)} s`;
  field(s, "behind").textContent = chain.behind_blocks === null ? "–" : `${chain.behind_blocks} blocks`;
  field(s, "current-provider").textContent = chain.current_provider ?? "none";
  // Cluster mode: who leads the chain, and whether it is this agent.
  field(s, "cluster-row").hidden = chain.role === undefined;
  if (chain.role !== undefined) {
    const epoch = chain.epoch === null ? "" : ` (epoch ${chain.epoch})`;
    field(s, "cluster").textContent = chain.role === "leader"
      ? `this agent${epoch}`
      : `${chain.leader ?? "nobody yet"}${epoch}; this agent stands by`;
    field(s, "cluster").dataset.role = chain.role;
  }
  drawLag(field(s, "lag-chart"), field(s, "lag-caption"), chain.lag_history || []);
  renderProviders(field(s, "providers"), chain);

  replace(field(s, "switches"), (chain.recent_switches || []).map((w) =>
    el("li", `${clock(w.at)} ${w.from} → ${w.to} (${w.reason})`,
      { "data-from": w.from, "data-to": w.to, "data-reason": w.reason })));
  replace(field(s, "reorgs"), (chain.recent_reorgs || []).map((r) =>
    el("li", `${clock(r.at)} depth ${r.depth}: ${r.old_head} → ${r.new_head} (common ancestor ${r.common_ancestor})`)));
  replace(field(s, "missed"), (chain.recent_missed || []).map((m) => {
    const row = el("tr", null, { "data-block": m.block_number });
    row.append(
      el("td", m.block_number),
      el("td", m.reason),
      el("td", m.severity, { "data-state": m.severity.toLowerCase() === "critical" ? "critical" : "warning" }),
      el("td", m.recovered ? (m.recovered_from ?? "yes") : "not recovered"),
      el("td", m.recovery_seconds === null || m.recovery_seconds === undefined ? "–" : duration(m.recovery_seconds)),
      el("td", clock(m.at)),
    );
    return row;
  }));
}

function render(status) {
  const overall = document.getElementById("overall");
  overall.textContent = STATUS_TEXT[status.status] || status.status;
  overall.dataset.state = status.status;
  const dashboards = document.getElementById("dashboards");
  dashboards.hidden = !status.dashboard_url;
  if (status.dashboard_url) dashboards.href = status.dashboard_url;
  const alerts = status.alerts_firing || [];
  document.getElementById("alerts").hidden = alerts.length === 0;
  replace(document.querySelector('[data-field="alerts"]'), alerts.map((a) =>
    el("li", `${a.tier}: ${a.rule} — ${a.target}`, { "data-state": a.tier })));
  for (const chain of status.chains) renderChain(chain);
  updates += 1;
  document.body.dataset.updates = String(updates);
  document.body.dataset.ready = "true";
}

async function poll() {
  const started = Date.now();
  try {
    const res = await fetch("/status", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const text = await res.text();
    document.getElementById("offline").hidden = true;
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (text !== lastText) {
      lastText = text;
      render(JSON.parse(text));
    }
  } catch (e) {
    document.getElementById("offline").hidden = false;
  }
  setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
}

document.addEventListener("DOMContentLoaded", poll);
