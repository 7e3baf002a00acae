// Meridian console: plain JavaScript, no framework, no build step.
//
// Reads the node's HTTP API (the same one the CLI uses) with the ACL token
// kept in this browser's localStorage. Other members are read directly at
// their own API addresses (they allow it to members' consoles, see
// src/api/cors.rs), so a page shows both sides of a partition when the
// browser can reach both. Nothing here decides anything about data: every
// value shown is what a node answered.
"use strict";

// ------------------------------------------------------------ limits
const POLL_MS = 2000;              // status refresh while the cluster view is open
const FETCH_TIMEOUT_MS = 2500;     // a member that does not answer in time counts as unreachable
const EVENTS_KEPT_MAX = 200;       // events shown in the log
const DESCENT_BATCH = 256;         // parents or leaves per digest request (the API takes 512)
const DIFF_LEAVES_MAX = 2048;      // differing leaves followed before giving up
const DIFF_KEYS_SHOWN_MAX = 100;   // differing keys whose values are fetched
const DIFF_LINES_MAX = 2000;       // longer texts are not diffed line by line
const IMPORT_TXN_OPS = 64;         // operations per /v1/txn (Consul's limit)
const FANOUT = 16, LEAF_LEVEL = 5, FINGERPRINT_HEX = 12;
const MEMBERS_READ_MAX = 64;      // members whose own status the page reads directly (servers only: edges are not members)
const SILENT_MS = 2000;            // a connected peer not heard from for longer is shown as silent

// Every event type /v1/events sends (src/api/wire: Event, and `missed`).
const EVENT_TYPES = [
  "peer_up", "peer_down", "partition_detected", "partition_ended", "partition_healed",
  "failed_over", "divergence_found", "divergence_repaired", "clock_skew", "peer_refused",
  "peer_stale", "left", "member_forgotten", "member_back", "local_write_dropped", "resynced",
  "stamp_collision", "record_quarantined", "record_repaired", "store_lost", "lost_store_found",
  "id_confirmed", "recovery_started", "recovered", "clock_offset", "health_changed", "missed",
];

const state = {
  token: localStorage.getItem("meridian.token") || "",
  self: null,          // this node's last /v1/status
  health: null,        // this node's last /v1/health
  views: new Map(),    // node id -> {status, error} as read from that node itself
  events: [],          // newest first
  source: null,        // the EventSource
  timer: null,
  route: "",
};

// ------------------------------------------------------------ helpers

/** An element: el("td", {class: "x"}, "text", child, ...). Text is never parsed as HTML. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

/** A key or prefix as a path: each segment encoded, slashes kept. */
function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

/** The base URL of a member's API ("" for this node). */
function baseOf(api) {
  if (!api || (state.self && api === state.self.api)) return "";
  return `${location.protocol}//${api}`;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** A request to a node's API; answers {status, ok, body (text), json(), headers}. */
async function call(path, opts = {}) {
  const headers = {};
  if (state.token) headers["X-Consul-Token"] = state.token;
  if (opts.body !== undefined && typeof opts.body === "string") headers["Content-Type"] = "text/plain";
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), opts.timeout || FETCH_TIMEOUT_MS);
  try {
    const r = await fetch((opts.base || "") + path, {
      method: opts.method || "GET", headers, body: opts.body, signal: ctl.signal,
    });
    const body = await r.text();
    return {
      status: r.status, ok: r.ok, body, headers: r.headers,
      json() { return JSON.parse(body); },
    };
  } catch (e) {
    throw new ApiError(0, e.name === "AbortError" ? "no answer in time" : "unreachable");
  } finally {
    clearTimeout(t);
  }
}

/** The JSON of a successful answer, or an ApiError naming the node's message. */
async function getJson(path, opts) {
  const r = await call(path, opts);
  if (!r.ok) throw new ApiError(r.status, errorText(r));
  return r.json();
}

function errorText(r) {
  try { const j = JSON.parse(r.body); if (j && j.error) return `${r.status}: ${j.error}`; } catch (_) { /* not JSON */ }
  return `${r.status}: ${r.body.slice(0, 200)}`;
}

function notice(text, error) {
  const n = document.getElementById("notice");
  if (!text) { n.hidden = true; return; }
  n.textContent = text;
  n.className = error ? "error" : "";
  n.hidden = false;
}

function short(hash) { return hash ? hash.slice(0, 12) : "—"; }
function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}
function when(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 23); }

/** Base64 to bytes, and bytes to text when they are UTF-8. */
function b64bytes(b64) {
  const s = atob(b64 || "");
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function utf8(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (_) { return null; }
}
function shown(bytes) {
  const t = utf8(bytes);
  if (t !== null) return t;
  return `(${bytes.length} bytes, not UTF-8) ` + Array.from(bytes.slice(0, 64), (b) => b.toString(16).padStart(2, "0")).join(" ");
}
function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

// ------------------------------------------------------------ members

/** This node and every peer it knows, with where to reach each. */
function members() {
  const s = state.self;
  if (!s) return [];
  const list = [{ node: s.node, name: s.name, region: s.region, api: s.api, self: true }];
  for (const p of s.peers || []) list.push({ node: p.node, name: p.name, region: p.region, api: p.api, self: false });
  return list;
}

/** Reads every member's own status (this node's, then each peer at its address). */
async function refreshViews() {
  const list = members();
  for (const m of list.slice(MEMBERS_READ_MAX)) {
    state.views.set(m.node, { status: null, error: `not read: more than ${MEMBERS_READ_MAX} members` });
  }
  await Promise.all(list.slice(0, MEMBERS_READ_MAX).map(async (m) => {
    if (m.self) { state.views.set(m.node, { status: state.self, error: null }); return; }
    try {
      state.views.set(m.node, { status: await getJson("/v1/status", { base: baseOf(m.api) }), error: null });
    } catch (e) {
      state.views.set(m.node, { status: null, error: e.message });
    }
  }));
}

async function refreshSelf() {
  state.self = await getJson("/v1/status");
  const h = await call("/v1/health");
  try { state.health = h.json(); } catch (_) { state.health = null; }
  document.getElementById("this-node").textContent =
    `${state.self.name} · ${state.self.region} · ${state.self.state}`;
}

// ------------------------------------------------------------ events

function startEvents() {
  if (state.source) state.source.close();
  const q = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const src = new EventSource(`/v1/events${q}`);
  for (const type of EVENT_TYPES) {
    src.addEventListener(type, (ev) => {
      let doc = {};
      try { doc = JSON.parse(ev.data); } catch (_) { /* kept as text */ }
      state.events.unshift({ type, doc, seen: Date.now() });
      state.events.length = Math.min(state.events.length, EVENTS_KEPT_MAX);
      if (state.route === "cluster") refreshCluster();
    });
  }
  state.source = src;
}

function describe(ev) {
  const d = ev.doc || {};
  switch (ev.type) {
    case "partition_detected": return `${d.cut_region} cut off`;
    case "partition_ended": return `${d.cut_region} reachable again after ${ago(d.partition_ms)}`;
    case "partition_healed": return `${d.cut_region} healed: partition ${ago(d.partition_ms)}, ${d.keys_exchanged} keys exchanged, converged in ${ago(d.converge_ms)}`;
    case "peer_up": return `${d.peer_name} (${d.peer_region}) up`;
    case "peer_down": return `${d.peer_name} (${d.peer_region}) down`;
    case "health_changed": return d.healthy ? "healthy" : `unhealthy: ${(d.reasons || []).map((r) => r.reason || JSON.stringify(r)).join(", ")}`;
    case "divergence_repaired": return `anti-entropy repaired ${d.keys} keys with ${d.peer}`;
    case "missed": return `${d.missed} events missed (the stream fell behind)`;
    default: {
      // The event's own fields, peers named where this node knows them.
      const names = new Map(members().map((m) => [m.node, m.name]));
      return Object.entries(d)
        .filter(([k]) => !["type", "at_ms", "node", "name", "region"].includes(k))
        .map(([k, v]) => `${k} ${k === "peer" && names.has(v) ? names.get(v) : typeof v === "object" ? JSON.stringify(v) : v}`)
        .join(", ");
    }
  }
}

// ------------------------------------------------------------ cluster view

async function showCluster(root) {
  root.replaceChildren(
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Regions and links"), el("div", { id: "map" }),
        el("div", { id: "partitions" })),
      el("section", { class: "card" }, el("h2", {}, "Convergence"), el("div", { id: "roots" }),
        el("h2", {}, "Health"), el("div", { id: "health" }))),
    el("section", { class: "card" }, el("h2", {}, "Nodes"), el("div", { id: "nodes" })),
    el("section", { class: "card" }, el("h2", {}, "Events"), el("ul", { id: "events", class: "plain events" })),
  );
  await refreshCluster();
  state.timer = setInterval(refreshCluster, POLL_MS);
}

let refreshing = false;
async function refreshCluster() {
  if (refreshing || state.route !== "cluster") return;
  refreshing = true;
  try {
    await refreshSelf();
    await refreshViews();
    notice("");
    renderMap();
    renderRoots();
    renderHealth();
    renderNodes();
    renderEvents();
  } catch (e) {
    notice(`Cannot read this node's status: ${e.message}${e.status === 403 || e.status === 401 ? " (an ACL token with operator read is needed)" : ""}`, true);
  } finally {
    refreshing = false;
  }
}

/** Each region's view of the others: region -> region -> reachable (from statuses read). */
function regionViews() {
  const seen = new Map();
  for (const m of members()) {
    const v = state.views.get(m.node);
    if (!v || !v.status) continue;
    const row = seen.get(m.region) || new Map();
    for (const r of v.status.regions || []) {
      // Any member of the region that sees the other region counts it reachable.
      row.set(r.region, (row.get(r.region) || false) || r.reachable);
    }
    seen.set(m.region, row);
  }
  return seen;
}

function renderMap() {
  const regions = (state.self.regions || []).map((r) => r.region).sort();
  const views = regionViews();
  const w = 460, h = 300, cx = w / 2, cy = h / 2, rad = Math.min(w, h) / 2 - 50;
  const at = new Map(regions.map((r, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(regions.length, 1);
    return [r, [cx + rad * Math.cos(a), cy + rad * Math.sin(a)]];
  }));
  const links = [];
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const [a, b] = [regions[i], regions[j]];
      const ab = views.get(a) && views.get(a).get(b);
      const ba = views.get(b) && views.get(b).get(a);
      let s = "unknown";
      if (ab === false || ba === false) s = "cut";
      else if (ab === true || ba === true) s = "up";
      const [p, q] = [at.get(a), at.get(b)];
      links.push(svg("line", { class: "link", "data-state": s, "data-link": `${a}|${b}`, x1: p[0], y1: p[1], x2: q[0], y2: q[1] },
        svg("title", {}, `${a} – ${b}: ${s === "up" ? "connected" : s === "cut" ? "cut" : "not known (neither side answered)"}`)));
    }
  }
  const nodes = regions.map((r) => {
    const [x, y] = at.get(r);
    const count = members().filter((m) => m.region === r).length;
    return svg("g", { class: `region${r === state.self.region ? " self" : ""}`, "data-region": r },
      svg("circle", { cx: x, cy: y, r: 26 }),
      svg("text", { x, y: y + 4 }, `${count} node${count === 1 ? "" : "s"}`),
      svg("text", { x, y: y + 44, class: "name" }, r));
  });
  document.getElementById("map").replaceChildren(
    svg("svg", { viewBox: `0 0 ${w} ${h}`, width: "100%", role: "img", "aria-label": "regions and the links between them" }, links, nodes),
    el("div", { class: "muted" }, "green: connected · red dashed: cut · grey dotted: neither side answered"));
  const cut = (state.self.regions || []).filter((r) => !r.reachable);
  document.getElementById("partitions").replaceChildren(cut.length === 0
    ? el("p", { id: "partition-state", "data-state": "none" }, `Every region is reachable from ${state.self.name}.`)
    : el("p", { id: "partition-state", "data-state": "cut", class: "verdict bad" },
      cut.map((r) => `${r.region} cut off from ${state.self.region} for ${ago(r.for_ms)}`).join("; ")));
}

function renderRoots() {
  const rows = [];
  const roots = new Set();
  let unreachable = 0;
  for (const m of members()) {
    const v = state.views.get(m.node) || {};
    const root = v.status ? v.status.root : null;
    if (root) roots.add(root); else unreachable++;
    rows.push(el("tr", { "data-node": m.name },
      el("td", {}, m.name, m.self ? " (this node)" : ""), el("td", {}, m.region),
      el("td", { class: "mono" }, root ? short(root) : `unreachable: ${v.error || "not read"}`),
      el("td", {}, v.status ? String(v.status.keys) : "—"), el("td", {}, v.status ? String(v.status.index) : "—")));
  }
  const agree = roots.size === 1;
  const verdict = agree
    ? `All ${members().length - unreachable} reachable nodes agree on root ${short([...roots][0])}`
    : `Roots differ: ${roots.size} different roots among ${members().length - unreachable} nodes (see Divergence)`;
  document.getElementById("roots").replaceChildren(
    el("div", { id: "roots-verdict", class: `verdict ${agree ? "ok" : "bad"}`, "data-agree": agree ? "yes" : "no" },
      verdict, unreachable ? ` · ${unreachable} unreachable` : ""),
    el("table", {}, el("tr", {}, el("th", {}, "node"), el("th", {}, "region"), el("th", {}, "Merkle root"), el("th", {}, "keys"), el("th", {}, "index")), rows));
}

function renderHealth() {
  const h = state.health;
  const out = document.getElementById("health");
  if (!h) { out.replaceChildren(el("span", { class: "badge" }, "unknown")); return; }
  out.replaceChildren(
    el("span", { id: "health-badge", class: `badge ${h.healthy ? "ok" : "bad"}` }, h.healthy ? "healthy" : "unhealthy"),
    el("ul", {}, (h.reasons || []).map((r) => el("li", {}, typeof r === "string" ? r : `${r.reason}${r.detail ? ": " + r.detail : ""}`))));
}

function renderNodes() {
  const s = state.self;
  const head = el("tr", {}, ["peer", "region", "connection", "lag (changes)", "lag", "round trip", "clock offset", "last heard"].map((t) => el("th", {}, t)));
  const rows = (s.peers || []).map((p) => el("tr", { "data-peer": p.name },
    el("td", {}, p.name), el("td", {}, p.region),
    el("td", {}, connection(p)),
    el("td", {}, String(p.lag_index)), el("td", {}, ago(p.lag_ms)), el("td", {}, p.rtt_ms === null ? "—" : `${p.rtt_ms} ms`),
    el("td", {}, p.clock_offset_ms === null ? "—" : `${p.clock_offset_ms} ms`), el("td", {}, `${ago(p.last_heard_ms_ago)} ago`)));
  document.getElementById("nodes").replaceChildren(
    el("p", {}, `${s.name} (${s.region}): ${s.keys} keys, index ${s.index}, ${s.conflicts} conflicts, up ${ago(s.uptime_ms)}; members: `,
      (s.members || []).map((m) => `${m.name} ${m.state}`).join(", ") || "none"),
    el("table", {}, head, rows));
}

/** A peer's connection as a badge: down, stale (told to resync), silent (nothing heard for a while), or connected. */
function connection(p) {
  if (!p.connected) return el("span", { class: "badge bad" }, "down");
  if (p.stale) return el("span", { class: "badge warn" }, "stale");
  if (p.last_heard_ms_ago > SILENT_MS) return el("span", { class: "badge warn" }, `silent ${ago(p.last_heard_ms_ago)}`);
  return el("span", { class: "badge ok" }, "connected");
}

function renderEvents() {
  const list = state.events.slice(0, 50).map((e) =>
    el("li", { "data-type": e.type }, el("span", { class: "muted mono" }, when(e.doc.at_ms || e.seen)), " ",
      el("b", {}, e.type), " ", e.doc.name ? `at ${e.doc.name}: ` : "", describe(e)));
  document.getElementById("events").replaceChildren(...(list.length ? list : [el("li", { class: "muted" }, "No events since this page opened.")]));
}

// ------------------------------------------------------------ keys view

async function showKeys(root, prefix, key) {
  const tree = el("div", { class: "card tree", id: "tree" });
  const panel = el("div", { id: "panel" });
  root.replaceChildren(el("div", { class: "keys" }, tree, panel));
  await renderTree(tree, prefix, key);
  if (key !== null) await renderKey(panel, key);
  else renderPrefixTools(panel, prefix);
}

function crumbs(prefix) {
  const parts = prefix.split("/").filter((p) => p);
  const out = [el("a", { href: "#/keys/" }, "(root)")];
  let at = "";
  for (const p of parts) { at += p + "/"; out.push(" / ", el("a", { href: `#/keys/${keyPath(at)}` }, p)); }
  return el("div", { class: "crumbs" }, out);
}

async function renderTree(tree, prefix, selected) {
  const r = await call(`/v1/kv/${keyPath(prefix)}?keys&separator=/`);
  let names = [];
  if (r.ok) names = r.json();
  else if (r.status !== 404) notice(`Cannot list ${prefix || "the root"}: ${errorText(r)}`, true);
  tree.replaceChildren(crumbs(prefix),
    el("div", { id: "tree-list" }, names.length === 0 ? el("p", { class: "muted" }, "No keys here.") : names.map((n) => n.endsWith("/")
      ? el("a", { class: "folder", href: `#/keys/${keyPath(n)}`, "data-prefix": n }, n.slice(prefix.length))
      : el("a", { class: `key${n === selected ? " selected" : ""}`, href: `#/key/${keyPath(n)}`, "data-key": n }, n.slice(prefix.length)))));
}

function renderPrefixTools(panel, prefix) {
  const name = el("input", { id: "new-key", placeholder: "name", size: 30 });
  const value = el("textarea", { id: "new-value", placeholder: "value" });
  const status = el("span", { class: "muted" });
  const file = el("input", { type: "file", id: "import-file", accept: ".json,application/json" });
  panel.replaceChildren(
    el("section", { class: "card" }, el("h2", {}, `New key under ${prefix || "the root"}`),
      el("div", { class: "row" }, el("span", { class: "mono" }, prefix), name), value,
      el("div", { class: "row" }, el("button", { class: "primary", id: "create", onclick: async () => {
        const k = prefix + name.value.trim();
        if (!name.value.trim()) { status.textContent = "a name is needed"; return; }
        const r = await call(`/v1/kv/${keyPath(k)}?cas=0`, { method: "PUT", body: value.value });
        if (!r.ok) { status.textContent = errorText(r); return; }
        if (r.body.trim() !== "true") { status.textContent = `${k} exists already: open it to change it`; return; }
        location.hash = `#/key/${keyPath(k)}`;
      } }, "Create"), status)),
    el("section", { class: "card" }, el("h2", {}, "Export and import"),
      el("div", { class: "row" }, el("button", { id: "export", onclick: () => exportPrefix(prefix, status) }, `Export ${prefix || "everything"} (Consul JSON)`)),
      el("div", { class: "row" }, file, el("button", { id: "import", onclick: () => importFile(file, status) }, "Import"))),
    el("section", { class: "card" }, el("h2", {}, "Delete"),
      el("div", { class: "row" }, el("button", { class: "danger", id: "delete-prefix", disabled: !prefix, onclick: () => deletePrefix(prefix, status) },
        prefix ? `Delete every key under ${prefix}` : "Open a prefix to delete what is under it"))));
}

async function exportPrefix(prefix, status) {
  const r = await call(`/v1/kv/${keyPath(prefix)}?recurse`, { timeout: 30000 });
  if (r.status === 404) { status.textContent = "nothing to export"; return; }
  if (!r.ok) { status.textContent = errorText(r); return; }
  const out = r.json().map((e) => ({ key: e.Key, flags: e.Flags, value: e.Value || "" }));
  const a = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(out, null, 2)], { type: "application/json" })), download: `meridian-${(prefix || "all").replace(/\//g, "_")}.json` });
  document.body.append(a); a.click(); a.remove();
  status.textContent = `exported ${out.length} keys`;
}

/** Imports Consul's `kv export` JSON ([{key, flags, value (base64)}]) in transactions of 64. */
async function importFile(input, status) {
  const f = input.files && input.files[0];
  if (!f) { status.textContent = "choose a file first"; return; }
  let list;
  try { list = JSON.parse(await f.text()); } catch (e) { status.textContent = `not JSON: ${e.message}`; return; }
  if (!Array.isArray(list) || list.some((e) => typeof e.key !== "string")) { status.textContent = "expected Consul's export: [{key, flags, value}]"; return; }
  let done = 0;
  for (let i = 0; i < list.length; i += IMPORT_TXN_OPS) {
    const ops = list.slice(i, i + IMPORT_TXN_OPS).map((e) => ({ KV: { Verb: "set", Key: e.key, Flags: e.flags || 0, Value: e.value || "" } }));
    const r = await call("/v1/txn", { method: "PUT", body: JSON.stringify(ops), timeout: 30000 });
    if (!r.ok) { status.textContent = `imported ${done} of ${list.length}; then ${errorText(r)}`; return; }
    done += ops.length;
  }
  status.textContent = `imported ${done} keys`;
  route();
}

async function deletePrefix(prefix, status) {
  if (!confirm(`Delete every key under ${prefix}? The deletes replicate to every region.`)) return;
  let r = await call(`/v1/kv/${keyPath(prefix)}?recurse`, { method: "DELETE", timeout: 30000 });
  if (!r.ok && /force/.test(r.body)) {
    if (!confirm(`${errorText(r)}\n\nDelete them anyway?`)) { status.textContent = "nothing deleted"; return; }
    r = await call(`/v1/kv/${keyPath(prefix)}?recurse&force`, { method: "DELETE", timeout: 30000 });
  }
  status.textContent = r.ok ? `deleted everything under ${prefix}` : errorText(r);
  if (r.ok) location.hash = "#/keys/";
}

/** What a node holds of `key`: {entry, text, doc} or null when absent. */
async function readKey(key) {
  const r = await call(`/v1/kv/${keyPath(key)}`);
  if (r.status === 404) return null;
  if (!r.ok) throw new ApiError(r.status, errorText(r));
  const entry = r.json()[0];
  const bytes = b64bytes(entry.Value);
  let doc = null;
  const d = await call(`/v1/doc/${keyPath(key)}?heads`);
  if (d.ok) doc = d.json();
  return { entry, bytes, text: utf8(bytes), doc };
}

async function renderKey(panel, key) {
  let held;
  try { held = await readKey(key); } catch (e) { panel.replaceChildren(el("p", { class: "verdict bad" }, e.message)); return; }
  const parent = key.includes("/") ? key.slice(0, key.lastIndexOf("/") + 1) : "";
  if (!held) {
    panel.replaceChildren(el("section", { class: "card" }, el("h2", {}, key), el("p", { id: "absent" }, "Absent on this node."), el("a", { href: `#/keys/${keyPath(parent)}` }, "back")));
    await renderHistory(panel, key, null);
    return;
  }
  const { entry, bytes, text, doc } = held;
  const status = el("span", { class: "muted", id: "save-status" });
  const shownText = doc ? JSON.stringify(doc.doc, null, 2) : text === null ? shown(bytes) : text;
  const editor = el("textarea", { id: "editor", disabled: text === null && !doc }, shownText);
  const flags = el("input", { id: "flags", size: 8, value: String(entry.Flags) });
  const isJson = !doc && text !== null && pretty(text) !== text;
  panel.replaceChildren(
    el("section", { class: "card" },
      el("h2", {}, key, doc ? " (document)" : ""),
      el("div", { class: "row muted" }, `ModifyIndex ${entry.ModifyIndex} · CreateIndex ${entry.CreateIndex} · ${bytes.length} bytes`, doc ? ` · stamp ${doc.stamp}` : ""),
      el("pre", { id: "value", "data-key": key }, doc ? JSON.stringify(doc.doc, null, 2) : isJson ? pretty(text) : shown(bytes)),
      el("h2", {}, "Edit"), editor,
      el("div", { class: "row" }, "flags", flags,
        el("button", { class: "primary", id: "save", disabled: text === null && !doc, onclick: async () => {
          const f = Number.parseInt(flags.value, 10);
          if (!Number.isInteger(f) || f < 0) { status.textContent = "flags must be a whole number"; return; }
          let r;
          if (doc) {
            let json;
            try { json = JSON.parse(editor.value); } catch (e) { status.textContent = `a document takes a JSON object: ${e.message}`; return; }
            r = await call(`/v1/doc/${keyPath(key)}?cas=${entry.ModifyIndex}&flags=${f}`, { method: "PUT", body: JSON.stringify(json) });
            if (r.ok) { route(); return; }
          } else {
            r = await call(`/v1/kv/${keyPath(key)}?cas=${entry.ModifyIndex}&flags=${f}`, { method: "PUT", body: editor.value });
            if (r.ok && r.body.trim() === "true") { route(); return; }
            if (r.ok) { status.textContent = "changed since this page read it: reload and edit again"; return; }
          }
          status.textContent = r.status === 409 ? "changed since this page read it: reload and edit again" : errorText(r);
        } }, "Save"),
        el("button", { class: "danger", id: "delete", onclick: async () => {
          if (!confirm(`Delete ${key}? The delete replicates to every region.`)) return;
          const r = await call(`/v1/kv/${keyPath(key)}?cas=${entry.ModifyIndex}`, { method: "DELETE" });
          if (r.ok && r.body.trim() === "true") { location.hash = `#/keys/${keyPath(parent)}`; return; }
          status.textContent = r.ok ? "changed since this page read it: reload first" : errorText(r);
        } }, "Delete"),
        status)));
  await renderHistory(panel, key, held);
}

async function renderHistory(panel, key, held) {
  const card = el("section", { class: "card", id: "history" }, el("h2", {}, "History on this node"));
  panel.append(card);
  const r = await call(`/v1/history/${keyPath(key)}`);
  if (!r.ok) { card.append(el("p", { class: "muted" }, errorText(r))); return; }
  const versions = r.json();
  if (versions.length === 0) { card.append(el("p", { class: "muted" }, "No versions kept (the history starts empty when the node starts; edges keep none).")); return; }
  const texts = versions.map((v) => (v.Deleted ? "(deleted)" : shown(b64bytes(v.Value))));
  const diffOut = el("div", { class: "diff", id: "diff" });
  let picked = Math.max(0, versions.length - 2); // the version before the latest
  const showDiff = () => {
    const current = held ? (held.doc ? JSON.stringify(held.doc.doc, null, 2) : shown(held.bytes)) : "(absent)";
    const old = held && held.doc ? pretty(texts[picked]) : texts[picked];
    diffOut.replaceChildren(el("p", { class: "muted" }, `index ${versions[picked].Index} → what the node holds now`), renderDiff(old, current));
  };
  const rows = versions.map((v, i) => el("tr", { "data-index": v.Index },
    el("td", {}, el("input", { type: "radio", name: "pick", checked: i === picked, onchange: () => { picked = i; showDiff(); } })),
    el("td", {}, String(v.Index)), el("td", { class: "mono" }, when(v.Time)),
    el("td", {}, `${v.NodeName || v.Node} (${v.Region})`),
    el("td", { class: "mono" }, texts[i].length > 80 ? texts[i].slice(0, 80) + "…" : texts[i]),
    el("td", {}, el("button", { class: "rollback", "data-index": v.Index, onclick: () => rollback(key, v, held) }, v.Deleted ? "Roll back to deleted" : "Roll back"))));
  card.append(
    el("table", {}, el("tr", {}, ["diff", "index", "time (UTC)", "written by", "value", ""].map((t) => el("th", {}, t))), rows),
    el("h2", {}, "Difference"), diffOut);
  showDiff();
}

/** Writes version `v` again as a new write, check-and-set against what is held (as `meridian kv rollback`). */
async function rollback(key, v, held) {
  const current = held ? held.entry.ModifyIndex : 0;
  if (!confirm(`Write the version of index ${v.Index} of ${key} again? It replicates and wins everywhere.`)) return;
  let r;
  if (v.Deleted) {
    if (!held) { notice(`${key} is already deleted`); return; }
    r = await call(`/v1/kv/${keyPath(key)}?cas=${current}`, { method: "DELETE" });
  } else {
    r = await call(`/v1/kv/${keyPath(key)}?cas=${current}&flags=${v.Flags}`, { method: "PUT", body: b64bytes(v.Value) });
  }
  if (r.ok && r.body.trim() === "true") { notice(`rolled ${key} back to the version of index ${v.Index} (a new write)`); route(); return; }
  notice(r.ok ? `${key} changed while rolling back: look at its history and try again` : errorText(r), true);
}

/** A line diff (longest common subsequence); texts over DIFF_LINES_MAX lines are shown whole. */
function renderDiff(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  if (x.length > DIFF_LINES_MAX || y.length > DIFF_LINES_MAX) {
    return el("div", {}, el("p", { class: "muted" }, "too long to compare line by line"), el("pre", {}, b));
  }
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(el("div", {}, "  " + x[i])); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] > lcs[i + 1][j])) { out.push(el("div", { class: "add" }, "+ " + y[j])); j++; }
    else { out.push(el("div", { class: "del" }, "- " + x[i])); i++; }
  }
  return el("div", {}, out);
}

// ------------------------------------------------------------ divergence view

async function showDivergence(root) {
  root.replaceChildren(
    el("section", { class: "card" }, el("h2", {}, "Merkle roots"), el("div", { id: "div-roots" }, "reading…"),
      el("div", { class: "row" }, el("button", { id: "recheck", onclick: () => route() }, "Check again"))),
    el("section", { class: "card" }, el("h2", {}, "Differing keys"), el("div", { id: "div-keys" }, "…")),
    el("section", { class: "card" }, el("h2", {}, "Conflict log (this node)"), el("div", { id: "conflicts" }, "…")));
  try { await refreshSelf(); await refreshViews(); } catch (e) { notice(e.message, true); return; }
  const nodes = members().filter((m) => { const v = state.views.get(m.node); return v && v.status; });
  const missing = members().filter((m) => !nodes.some((n) => n.node === m.node));
  const roots = new Set(nodes.map((m) => state.views.get(m.node).status.root));
  document.getElementById("div-roots").replaceChildren(
    el("div", { id: "div-verdict", class: `verdict ${roots.size <= 1 ? "ok" : "bad"}`, "data-agree": roots.size <= 1 ? "yes" : "no" },
      roots.size <= 1 ? `All ${nodes.length} reachable nodes agree` : `${roots.size} different roots among ${nodes.length} nodes`,
      missing.length ? ` · unreachable: ${missing.map((m) => m.name).join(", ")}` : ""),
    el("table", {}, nodes.map((m) => el("tr", {}, el("td", {}, m.name), el("td", {}, m.region), el("td", { class: "mono" }, short(state.views.get(m.node).status.root))))));
  renderConflicts();
  const out = document.getElementById("div-keys");
  if (roots.size <= 1) { out.replaceChildren(el("p", { id: "no-diff" }, "No differing keys among the reachable nodes.")); return; }
  out.textContent = "descending the Merkle trees…";
  try {
    const found = await differingKeys(nodes);
    out.replaceChildren(
      el("p", {}, `${found.keys.length} differing key${found.keys.length === 1 ? "" : "s"}${found.truncated ? " at least (too many leaves differ to follow all)" : ""}`,
        found.errors.length ? ` · not read: ${found.errors.join("; ")}` : ""),
      el("table", { id: "diff-table" }, el("tr", {}, el("th", {}, "key"), found.nodes.map((m) => el("th", {}, `${m.name} (${m.region})`))),
        found.keys.map((d) => el("tr", { "data-key": d.key }, el("td", { class: "mono" }, d.key), d.states.map((s) => el("td", { class: "mono" }, s))))));
  } catch (e) {
    out.textContent = `the descent failed: ${e.message}`;
  }
}

/** The Merkle descent over `nodes` (as `meridian verify --diff`), then each node's state of each differing key. */
async function differingKeys(nodes) {
  const errors = [];
  let frontier = [0], truncated = false;
  let live = nodes.slice();
  for (let level = 1; level <= LEAF_LEVEL && frontier.length; level++) {
    const prints = [], answered = [];
    for (const m of live) {
      try {
        let all = "";
        for (let i = 0; i < frontier.length; i += DESCENT_BATCH) {
          const batch = frontier.slice(i, i + DESCENT_BATCH);
          const d = await getJson(`/v1/digest/tree?level=${level}&parents=${batch.join(",")}`, { base: baseOf(m.api) });
          if (d.fingerprints.length !== batch.length * FANOUT * FINGERPRINT_HEX) throw new Error(`${d.fingerprints.length} fingerprint digits for ${batch.length} parents`);
          all += d.fingerprints;
        }
        prints.push(all); answered.push(m);
      } catch (e) { errors.push(`${m.name}: ${e.message}`); }
    }
    live = answered;
    if (live.length < 2) return { nodes: live, keys: [], errors, truncated };
    const next = [];
    outer: for (let p = 0; p < frontier.length; p++) {
      for (let c = 0; c < FANOUT; c++) {
        const at = (p * FANOUT + c) * FINGERPRINT_HEX;
        const first = prints[0].slice(at, at + FINGERPRINT_HEX);
        if (prints.some((x) => x.slice(at, at + FINGERPRINT_HEX) !== first)) {
          if (next.length === DIFF_LEAVES_MAX) { truncated = true; break outer; }
          next.push(frontier[p] * FANOUT + c);
        }
      }
    }
    frontier = next;
  }
  const perNode = [];
  for (const m of live) {
    const held = new Map();
    try {
      for (let i = 0; i < frontier.length; i += DESCENT_BATCH) {
        const d = await getJson(`/v1/digest/leaves?leaves=${frontier.slice(i, i + DESCENT_BATCH).join(",")}`, { base: baseOf(m.api) });
        for (const k of d.keys) held.set(k.key, k);
      }
      perNode.push([m, held]);
    } catch (e) { errors.push(`${m.name}: ${e.message}`); }
  }
  const all = [...new Set(perNode.flatMap(([, h]) => [...h.keys()]))].sort();
  const liveHash = (k) => (k && !k.deleted ? k.hash : null);
  const keys = [];
  for (const key of all) {
    const states = perNode.map(([, h]) => h.get(key));
    // A tombstone and no entry are the same live state (roots cover live entries).
    if (states.every((s) => liveHash(s) === liveHash(states[0]))) continue;
    const fetch = keys.length < DIFF_KEYS_SHOWN_MAX;
    const shownStates = [];
    for (let i = 0; i < perNode.length; i++) {
      const s = states[i];
      if (!s) shownStates.push("absent");
      else if (s.deleted) shownStates.push("deleted");
      else if (!fetch) shownStates.push(`value with hash ${s.hash}`);
      else {
        const r = await call(`/v1/kv/${keyPath(key)}?raw`, { base: baseOf(perNode[i][0].api) });
        shownStates.push(r.ok ? JSON.stringify(r.body.length > 80 ? r.body.slice(0, 80) + "…" : r.body) : `(read failed: ${r.status})`);
      }
    }
    keys.push({ key, states: shownStates });
  }
  return { nodes: perNode.map(([m]) => m), keys, errors, truncated };
}

async function renderConflicts() {
  const out = document.getElementById("conflicts");
  const r = await call("/v1/conflicts");
  if (!r.ok) { out.textContent = errorText(r); return; }
  const c = r.json();
  out.replaceChildren(
    el("p", {}, `${c.total} concurrent writes resolved by this node (the newest ${c.kept.length} kept)`),
    el("table", { id: "conflict-table" }, el("tr", {}, ["key", "kept", "replaced", "replaced value"].map((t) => el("th", {}, t))),
      c.kept.slice().reverse().map((k) => el("tr", {}, el("td", { class: "mono" }, k.key + (k.path ? ` ${k.path}` : "")),
        el("td", { class: "mono" }, k.winner), el("td", { class: "mono" }, k.loser),
        el("td", { class: "mono" }, k.loser_deleted ? "(delete)" : k.loser_value === null ? "(not kept)" : shown(b64bytes(k.loser_value)).slice(0, 80))))));
}

// ------------------------------------------------------------ routing

async function route() {
  clearInterval(state.timer);
  const hash = location.hash || "#/cluster";
  const root = document.getElementById("view");
  let view = "cluster";
  if (hash.startsWith("#/keys/")) view = "keys";
  else if (hash.startsWith("#/key/")) view = "keys";
  else if (hash.startsWith("#/divergence")) view = "divergence";
  state.route = view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  notice("");
  try {
    if (view === "cluster") await showCluster(root);
    else if (view === "divergence") await showDivergence(root);
    else if (hash.startsWith("#/key/")) {
      const key = decodeURIComponent(hash.slice("#/key/".length));
      await showKeys(root, key.includes("/") ? key.slice(0, key.lastIndexOf("/") + 1) : "", key);
    } else await showKeys(root, decodeURIComponent(hash.slice("#/keys/".length)), null);
  } catch (e) {
    notice(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const input = document.getElementById("token");
  input.value = state.token;
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    if (state.token) localStorage.setItem("meridian.token", state.token); else localStorage.removeItem("meridian.token");
    startEvents();
    route();
  });
  window.addEventListener("hashchange", route);
  try { await refreshSelf(); } catch (e) { notice(`Cannot read this node's status: ${e.message}`, true); }
  startEvents();
  route();
});
