// Souverix Federation: the page. Plain JavaScript, no build step; it reads the site's own /v1
// API and follows its event stream (/v1/events), re-fetching what an event says changed.
"use strict";

const ROW_HEIGHT = 32;
const OVERSCAN = 8;
const SVG_NS = "http://www.w3.org/2000/svg";
const AUTHORITY_LETTER = { Global: "G", Regional: "R", Local: "L", Autonomous: "A" };
const AUTHOR = { "x-souverix-author": "web-ui" };

const state = {
  site: null,
  view: null,
  viewFetched: 0,
  collapsed: new Set(),   // sites whose children are hidden
  expanded: new Set(),    // zones whose details are shown
  rows: [],               // the rows the filters and collapsing leave, in order
  active: 0,              // the row the keyboard is on
  sync: null,
  syncFetched: 0,
  summaries: new Map(),   // site id -> freshest SiteStatus spec this site holds
  conflicts: [],
  conflictsFetched: 0,
  details: new Map(),     // conflict id -> detail (both sides' content)
  lastEventId: null,
  policies: [],           // Kind/scope/name of every policy held here
  overlay: null,          // the selected policy's placement, or { object, error }
  overlayFetched: 0,
};

// ---------- helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// 42s, 12.5m, 3.75h: the CLI's way of writing an age.
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, seconds);
  const trim = (x) => String(Number(x.toFixed(2)));
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${trim(s / 60)}m`;
  return `${trim(s / 3600)}h`;
}

function since(fetchedMs) {
  return fetchedMs ? `updated ${duration((Date.now() - fetchedMs) / 1000)} ago` : "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const why = body && (body.detail || body.title) ? body.detail || body.title : response.statusText;
    throw new Error(`${response.status}: ${why}`);
  }
  return body;
}

// ---------- filters, kept in the URL ----------

function filters() {
  const q = new URLSearchParams(location.search);
  return {
    status: q.get("status") || "",
    level: q.get("level") || "",
    hasConflicts: q.get("has-conflicts") === "1",
    hasDrift: q.get("has-drift") === "1",
    policy: q.get("policy") || "",
  };
}

function setupFilters() {
  const form = document.getElementById("filters");
  const f = filters();
  form.status.value = f.status;
  form.level.value = f.level;
  form["has-conflicts"].checked = f.hasConflicts;
  form["has-drift"].checked = f.hasDrift;
  form.addEventListener("change", (event) => {
    const q = new URLSearchParams(location.search);
    const set = (k, v) => (v ? q.set(k, v) : q.delete(k));
    set("status", form.status.value);
    set("level", form.level.value);
    set("has-conflicts", form["has-conflicts"].checked ? "1" : "");
    set("has-drift", form["has-drift"].checked ? "1" : "");
    set("policy", form.policy.value);
    const search = q.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
    if (event.target && event.target.name === "policy") refreshOverlay();
    else renderTree();
  });
}

function matches(item, f) {
  if (f.status && !item.status.includes(f.status)) return false;
  if (f.level && item.level !== f.level) return false;
  if (f.hasConflicts && !(item.open_conflicts > 0)) return false;
  if (f.hasDrift && !(item.drift > 0)) return false;
  return true;
}

// ---------- the tree ----------

// The worst sync debt in an item's subtree: its level's figure.
function worstDebt(item) {
  let worst = item.sync_debt_seconds;
  for (const child of item.children || []) {
    const d = worstDebt(child);
    if (d !== null && d !== undefined && (worst === null || worst === undefined || d > worst)) worst = d;
  }
  return worst;
}

// Flattens the view into the rows to show: an item stays when it or a descendant matches the
// filters; the children of a collapsed item and the details of a closed zone are left out.
function flatten() {
  const f = filters();
  const rows = [];
  const walk = (items, depth, parent) => {
    for (const item of items) {
      const keep = (function visit(i) {
        let any = matches(i, f);
        for (const c of i.children || []) if (visit(c)) any = true;
        return any;
      })(item);
      if (!keep) continue;
      rows.push({ kind: "site", item, depth, parent });
      const hasChildren = (item.children || []).length > 0;
      if (hasChildren && !state.collapsed.has(item.site)) walk(item.children, depth + 1, item.site);
      if (!hasChildren && state.expanded.has(item.site)) rows.push({ kind: "detail", item, depth: depth + 1, parent: item.site });
    }
  };
  walk(state.view ? state.view.items : [], 1, null);
  return rows;
}

function statusClass(status) {
  if (status === "Live" || status === "Healthy") return "status-ok";
  if (status === "Unreachable" || status === "Degraded" || status.includes("Offline")) return "status-bad";
  return "status-warn";
}

function siteRow(row, index) {
  const { item } = row;
  const hasChildren = (item.children || []).length > 0;
  const open = hasChildren ? !state.collapsed.has(item.site) : state.expanded.has(item.site);
  const letter = AUTHORITY_LETTER[item.authority] || "?";
  const age = item.age_seconds + (Date.now() - state.viewFetched) / 1000;
  const debt = worstDebt(item);
  const n = item.nodes;
  return el("div", {
      class: `row${index === state.active ? " active" : ""}`,
      id: `row-${index}`,
      role: "treeitem",
      "aria-level": row.depth,
      "aria-expanded": String(open),
      "data-site": item.site,
      "data-index": index,
      style: `top:${index * ROW_HEIGHT}px`,
      onclick: () => { state.active = index; renderTree(); },
    },
    el("span", { style: `padding-left:${(row.depth - 1) * 20}px` },
      el("button", { class: "toggle", type: "button", tabindex: "-1", "aria-hidden": "true",
        title: hasChildren ? (open ? "collapse" : "expand") : (open ? "hide details" : "show details"),
        onclick: (e) => { e.stopPropagation(); state.active = index; toggle(row); } }, open ? "▾" : "▸"),
      el("span", { class: "name" }, item.name), ...overlayMarkers(item.site, "row")),
    el("span", { class: "authority", "data-authority": letter },
      el("span", { class: `auth auth-${letter}`, title: item.authority }, letter), item.authority),
    el("span", { class: "autonomy" },
      el("span", { class: "badge" }, item.autonomy),
      item.isolated ? el("span", { class: "badge isolated" }, "isolated now") : null),
    el("span", { class: "nodes", title: `${n.total} nodes` },
      el("span", { class: "n-live" }, n.live), " / ",
      el("span", { class: "n-delayed" }, n.delayed), " / ",
      el("span", { class: "n-offline" }, n.offline), ` of ${n.total}`),
    el("span", { class: `status ${statusClass(item.status)}`, title: item.status }, item.status),
    el("span", { class: "drift" }, item.drift),
    el("span", { class: "open-conflicts" }, item.open_conflicts),
    el("span", { class: "debt" }, debt === null || debt === undefined ? "—" : `${duration(debt)} behind`),
    el("span", { class: "age", title: "age of these figures" }, duration(age)));
}

// ---------- the policy overlay ----------

// What the overlay says of a site: master of record, holds the scope, wrote it from below.
function overlayRole(site) {
  const o = state.overlay;
  if (!o || o.error) return null;
  const writer = (o.writers || []).find((w) => w.site === site);
  return {
    master: o.masterOfRecord === site,
    held: (o.heldBy || []).includes(site),
    override: !!(writer && writer.override),
    writer,
  };
}

// The markers a tree row (or anything listing a site) carries under the overlay.
function overlayMarkers(site) {
  const role = overlayRole(site);
  if (!role) return [];
  const marks = [];
  if (role.master) marks.push(el("span", { class: "mor", title: `master of record of ${state.overlay.object}` }, "★ M"));
  else if (role.held) marks.push(el("span", { class: "held-tag", title: `holds ${state.overlay.object}` }, "● held"));
  if (role.override) marks.push(el("span", { class: "override-tag", title: `wrote ${state.overlay.object} from below (${role.writer.versions} recent versions)` }, "↑ override"));
  return marks;
}

async function refreshPolicies() {
  try {
    const page = await api("/v1/objects?kind=Policy&limit=1000");
    state.policies = (page.items || []).map((d) => `Policy/${d.metadata.scope}/${d.metadata.name}`);
  } catch (_) {
    return;
  }
  const select = document.getElementById("policy");
  const wanted = filters().policy;
  const names = [...new Set([...state.policies, ...(wanted ? [wanted] : [])])].sort();
  const current = [...select.options].slice(1).map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(names)) {
    select.replaceChildren(el("option", { value: "" }, "none"), ...names.map((n) => el("option", { value: n }, n)));
  }
  select.value = wanted;
}

async function refreshOverlay() {
  const object = filters().policy;
  if (!object) {
    state.overlay = null;
  } else {
    const path = object.split("/").map(encodeURIComponent).join("/");
    try {
      state.overlay = await api(`/v1/objects/${path}/placement`);
    } catch (e) {
      state.overlay = { object, error: e.message };
    }
  }
  state.overlayFetched = Date.now();
  renderOverlay();
  renderTree();
  renderTopology();
}

function renderOverlay() {
  const box = document.getElementById("overlay");
  const o = state.overlay;
  box.hidden = !o;
  if (!o) return box.replaceChildren();
  if (o.error) return box.replaceChildren(`${o.object}: ${o.error}`);
  const writers = (o.writers || []).map((w) =>
    el("span", { class: w.override ? "override-tag" : "", "data-writer": w.site },
      `${w.site} (${w.override ? "override from below" : w.relation}, ${w.versions} version${w.versions === 1 ? "" : "s"})`));
  box.replaceChildren(
    el("strong", {}, o.object), " · master of record ",
    el("span", { class: "mor", "data-master": o.masterOfRecord || "" }, `★ ${o.masterOfRecord || "unknown here"}`),
    ` · held at ${o.heldBy.length} site${o.heldBy.length === 1 ? "" : "s"}: ${o.heldBy.join(", ")}`,
    " · recent writes by ", ...writers.flatMap((w, i) => (i ? [", ", w] : [w])),
    el("small", { class: "fresh" }, ` (last ${o.recentVersions} versions here, ${since(state.overlayFetched)})`));
}

function detailRow(row, index) {
  const summary = state.summaries.get(row.item.site);
  const links = summary && summary.links ? summary.links : [];
  const text = links.length
    ? links.map((l) => `${l.direction} ↔ ${l.peer}: ${l.state}${l.debt_seconds ? `, ${duration(l.debt_seconds)} behind` : ""}`).join(" · ")
    : "no links reported";
  return el("div", { class: "row detail", id: `row-${index}`, role: "treeitem", "aria-level": row.depth,
      "data-detail": row.item.site, "data-index": index, style: `top:${index * ROW_HEIGHT}px` },
    el("span", { style: `padding-left:${(row.depth - 1) * 20}px` },
      `observed ${new Date(row.item.observed_ms).toLocaleTimeString()} · ${text}`));
}

function renderTree() {
  const tree = document.getElementById("tree");
  state.rows = flatten();
  state.active = Math.min(state.active, Math.max(0, state.rows.length - 1));
  document.getElementById("tree-spacer").style.height = `${state.rows.length * ROW_HEIGHT}px`;
  const empty = document.getElementById("tree-empty");
  empty.hidden = state.rows.length > 0 || !state.view;
  empty.textContent = state.view && state.view.items.length === 0
    ? "No site summaries have reached this site yet: each site publishes one every status interval."
    : "No site matches the filters.";
  // Only the rows in (or near) the viewport are in the DOM.
  const first = Math.max(0, Math.floor(tree.scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(state.rows.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW_HEIGHT) + OVERSCAN);
  for (const old of tree.querySelectorAll(".row")) old.remove();
  const fragment = document.createDocumentFragment();
  for (let i = first; i < last; i++) {
    const row = state.rows[i];
    fragment.append(row.kind === "site" ? siteRow(row, i) : detailRow(row, i));
  }
  tree.append(fragment);
  tree.setAttribute("aria-activedescendant", `row-${state.active}`);
  document.getElementById("tree-fresh").textContent = since(state.viewFetched);
}

function toggle(row) {
  if (!row || row.kind !== "site") return;
  const site = row.item.site;
  const set = (row.item.children || []).length > 0 ? state.collapsed : state.expanded;
  if (set.has(site)) set.delete(site); else set.add(site);
  renderTree();
}

function setOpen(row, open) {
  const hasChildren = (row.item.children || []).length > 0;
  const set = hasChildren ? state.collapsed : state.expanded;
  const isOpen = hasChildren ? !set.has(row.item.site) : set.has(row.item.site);
  if (isOpen === open) return false;
  toggle(row);
  return true;
}

function scrollToActive() {
  const tree = document.getElementById("tree");
  const top = state.active * ROW_HEIGHT;
  if (top < tree.scrollTop) tree.scrollTop = top;
  else if (top + ROW_HEIGHT > tree.scrollTop + tree.clientHeight) tree.scrollTop = top + ROW_HEIGHT - tree.clientHeight;
}

function onTreeKey(event) {
  const row = state.rows[state.active];
  let handled = true;
  switch (event.key) {
    case "ArrowDown": state.active = Math.min(state.rows.length - 1, state.active + 1); break;
    case "ArrowUp": state.active = Math.max(0, state.active - 1); break;
    case "Home": state.active = 0; break;
    case "End": state.active = state.rows.length - 1; break;
    case "ArrowRight":
      if (row && row.kind === "site" && !setOpen(row, true)) state.active = Math.min(state.rows.length - 1, state.active + 1);
      break;
    case "ArrowLeft":
      if (row && (row.kind !== "site" || !setOpen(row, false))) {
        const parent = state.rows.findIndex((r) => r.kind === "site" && r.item.site === row.parent);
        if (parent >= 0) state.active = parent;
      }
      break;
    case "Enter": case " ": toggle(row); break;
    default: handled = false;
  }
  if (handled) {
    event.preventDefault();
    scrollToActive();
    renderTree();
  }
}

async function refreshView() {
  try {
    state.view = await api("/v1/views/global");
    state.viewFetched = Date.now();
    document.getElementById("title").textContent = state.view.title;
  } catch (e) {
    document.getElementById("tree-fresh").textContent = `could not refresh: ${e.message}`;
    return;
  }
  renderTree();
}

// ---------- sync relationships ----------

// Every SiteStatus summary this site holds, nested ones included: the freshest per site.
async function refreshSummaries() {
  const page = await api("/v1/objects?kind=SiteStatus&limit=1000");
  const found = new Map();
  const visit = (spec) => {
    if (!spec || !spec.site) return;
    const known = found.get(spec.site);
    if (!known || known.observed_ms < spec.observed_ms) found.set(spec.site, spec);
    for (const child of Object.values(spec.children || {})) visit(child);
  };
  for (const item of page.items || []) visit(item.spec);
  state.summaries = found;
}

// One entry per link (an unordered pair of sites): this site's own report (live) first, else
// the freshest summary's.
function collectLinks() {
  const links = new Map();
  const key = (a, b) => [a, b].sort().join("|");
  for (const [site, summary] of state.summaries) {
    if (state.site && site === state.site.id) continue;
    for (const l of summary.links || []) {
      const k = key(site, l.peer);
      const known = links.get(k);
      if (!known || known.observed_ms < summary.observed_ms) {
        links.set(k, { from: site, to: l.peer, direction: l.direction, mode: null, state: l.state,
          pending: l.pending, debt: l.debt_seconds, observed_ms: summary.observed_ms, own: false,
          lastSyncAge: l.last_sync_ms ? (summary.observed_ms - l.last_sync_ms) / 1000 : null });
      }
    }
  }
  if (state.sync) {
    for (const l of state.sync.links) {
      links.set(key(state.sync.site, l.peer), { from: state.sync.site, to: l.peer, direction: l.direction,
        mode: l.mode, state: l.state, pending: l.pending, debt: l.debtSeconds, own: true,
        lastSyncAge: l.lastSyncAgeSeconds, observed_ms: state.syncFetched });
    }
  }
  const rank = { disconnected: 0, isolated: 0, lagging: 1, connected: 2 };
  return [...links.values()].sort((a, b) =>
    (rank[a.state] ?? 1) - (rank[b.state] ?? 1) || (b.debt || 0) - (a.debt || 0) || a.from.localeCompare(b.from));
}

// Where each site goes: a row per depth, the root at the top.
function layout() {
  const parent = new Map();
  for (const [site, s] of state.summaries) parent.set(site, s.parent || null);
  if (state.site && !parent.has(state.site.id)) parent.set(state.site.id, null);
  for (const l of collectLinks()) {
    for (const s of [l.from, l.to]) if (!parent.has(s)) parent.set(s, null);
    if (l.direction === "upstream" && !parent.get(l.from)) parent.set(l.from, l.to);
    if (l.direction === "downstream" && !parent.get(l.to)) parent.set(l.to, l.from);
  }
  // A tree layout: each site gets a horizontal slot as wide as its subtree's leaves, its
  // children share it, so a subtree (and a trust domain that follows it) stays together.
  const children = new Map();
  const roots = [];
  for (const s of [...parent.keys()].sort()) {
    const p = parent.get(s);
    if (p && parent.has(p) && p !== s) (children.get(p) || children.set(p, []).get(p)).push(s);
    else roots.push(s);
  }
  const leaves = new Map();
  const count = (s, depth) => {
    if (leaves.has(s)) return leaves.get(s);
    leaves.set(s, 1); // guards against a cycle in what summaries say
    const n = depth > 16 ? 1 : (children.get(s) || []).reduce((sum, c) => sum + count(c, depth + 1), 0) || 1;
    leaves.set(s, n);
    return n;
  };
  const total = roots.reduce((sum, r) => sum + count(r, 0), 0) || 1;
  const slots = new Map();
  let depthMax = 0;
  const place = (s, from, depth) => {
    if (slots.has(s) || depth > 16) return;
    const width = leaves.get(s) || 1;
    slots.set(s, { x: (from + width / 2) / total, depth });
    depthMax = Math.max(depthMax, depth);
    let at = from;
    for (const c of children.get(s) || []) { place(c, at, depth + 1); at += leaves.get(c) || 1; }
  };
  let at = 0;
  for (const r of roots) { place(r, at, 0); at += leaves.get(r) || 1; }
  return { slots, depth: depthMax + 1 };
}

// Sites by trust domain, for the sites placed in the topology.
function trustDomains(pos) {
  const domains = new Map();
  for (const site of pos.keys()) {
    const summary = state.summaries.get(site);
    const domain = summary && summary.trust_domain
      ? summary.trust_domain
      : state.site && state.site.id === site ? state.site.trust_domain : null;
    if (!domain) continue;
    if (!domains.has(domain)) domains.set(domain, []);
    domains.get(domain).push(site);
  }
  return domains;
}

function renderTopology() {
  const box = document.getElementById("topology");
  const width = Math.max(600, box.clientWidth || 600);
  const { slots, depth } = layout();
  const height = Math.max(200, depth * 100);
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.style.height = `${height}px`;
  const pos = new Map();
  for (const [s, slot] of slots) pos.set(s, { x: slot.x * width, y: 40 + slot.depth * 100 });
  const links = collectLinks();
  const boundaries = trustDomains(pos);
  box.replaceChildren(
    svg("defs", {}, ...["connected", "lagging", "disconnected", "isolated"].map((st) =>
      svg("marker", { id: `arrow-${st}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: `head-${st}`, fill: `var(--${{ connected: "ok", lagging: "warn", disconnected: "bad", isolated: "iso" }[st]})` })))));
  // Trust domains under everything else: a dashed box around each domain's sites.
  for (const [domain, sites] of boundaries) {
    const ps = sites.map((s) => pos.get(s));
    const widthOf = (s) => (s.length + 2) * 7 + 12;
    const x1 = Math.min(...ps.map((p, i) => p.x - widthOf(sites[i]) / 2)) - 10;
    const x2 = Math.max(...ps.map((p, i) => p.x + widthOf(sites[i]) / 2)) + 10;
    const y1 = Math.min(...ps.map((p) => p.y)) - 30, y2 = Math.max(...ps.map((p) => p.y)) + 28;
    box.append(svg("g", { class: "trust-domain", "data-trust-domain": domain, "data-sites": sites.join(" ") },
      svg("title", {}, `trust domain ${domain}: ${sites.join(", ")}`),
      svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, rx: 10 }),
      svg("text", { x: x1 + 6, y: y2 - 5 }, `trust domain: ${domain}`)));
  }
  for (const l of links) {
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    // The arrow points the way the reporting site sends: up to its parent or down to a child.
    const [p, q] = [a, b];
    const dx = q.x - p.x, dy = q.y - p.y, len = Math.hypot(dx, dy) || 1;
    const pad = 16;
    const x1 = p.x + (dx / len) * pad, y1 = p.y + (dy / len) * pad;
    const x2 = q.x - (dx / len) * pad, y2 = q.y - (dy / len) * pad;
    const label = `${l.direction}${l.mode ? ` · ${l.mode}` : ""} · ${l.state}${l.debt >= 1 ? ` · ${duration(l.debt)} behind` : ""}`;
    box.append(svg("g", { class: "link", "data-link": `${l.from}|${l.to}`, "data-state": l.state },
      svg("title", {}, `${l.from} → ${l.to}: ${label}`),
      svg("line", { x1, y1, x2, y2, "marker-end": `url(#arrow-${l.state})`, "marker-start": `url(#arrow-${l.state})` }),
      // Labels sit near the lower end, where sibling arrows have fanned apart.
      svg("text", { x: x1 + (x2 - x1) * 0.7 + 6, y: y1 + (y2 - y1) * 0.7, "text-anchor": "start" }, label)));
  }
  for (const [site, p] of pos) {
    const summary = state.summaries.get(site);
    const level = summary ? summary.level : state.site && state.site.id === site ? state.site.level : null;
    const letter = { global: "G", regional: "R", local: "L", autonomous: "A" }[level] || "?";
    const text = `${letter} ${site}`;
    const w = text.length * 7 + 12;
    const role = overlayRole(site);
    const classes = ["site"];
    const tags = [];
    if (role) {
      classes.push(role.held ? "held" : "not-held");
      if (role.master) { classes.push("master"); tags.push("★ M"); }
      if (role.override) { classes.push("override"); tags.push("↑ override"); }
    }
    box.append(svg("g", { class: classes.join(" "), "data-site": site },
      svg("title", {}, role ? `${site}: ${role.master ? "master of record" : role.held ? "holds the scope" : "does not hold the scope"}${role.override ? ", wrote it from below" : ""}` : site),
      svg("rect", { x: p.x - w / 2, y: p.y - 12, width: w, height: 24, rx: 4 }),
      svg("text", { x: p.x, y: p.y + 4, "text-anchor": "middle" }, text),
      ...(tags.length ? [svg("text", { class: "overlay-tag", x: p.x, y: p.y - 16, "text-anchor": "middle" }, tags.join(" "))] : [])));
  }
  const list = document.getElementById("links");
  list.replaceChildren(...links.map((l) => el("li", { "data-link": `${l.from}|${l.to}`, "data-state": l.state },
    `${l.from} → ${l.to} · ${l.direction}${l.mode ? ` · ${l.mode}` : ""} · `,
    el("strong", {}, l.state),
    l.debt >= 1 ? ` · ${duration(l.debt)} behind` : "",
    ` · ${l.pending} pending`,
    l.lastSyncAge !== null && l.lastSyncAge !== undefined ? ` · last sync ${duration(l.lastSyncAge)} ago` : " · never synced",
    l.own ? "" : ` · as reported ${duration((Date.now() - l.observed_ms) / 1000)} ago`)));
  document.getElementById("sync-fresh").textContent = since(state.syncFetched);
}

async function refreshSync() {
  try {
    const [sync] = await Promise.all([api("/v1/sync"), refreshSummaries()]);
    state.sync = sync;
    state.syncFetched = Date.now();
  } catch (e) {
    document.getElementById("sync-fresh").textContent = `could not refresh: ${e.message}`;
    return;
  }
  renderTopology();
}

// ---------- conflicts ----------

function pretty(spec) {
  const sort = (v) => (Array.isArray(v) ? v.map(sort) : v && typeof v === "object"
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])])) : v);
  return JSON.stringify(sort(spec), null, 2).split("\n");
}

// The lines of `a` not in a longest common subsequence with `b` (a plain LCS diff).
function changedLines(a, b) {
  const m = a.length, n = b.length;
  const dp = Array.from({ length: m + 1 }, () => new Array(n + 1).fill(0));
  for (let i = m - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--)
    dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const changed = new Set();
  let i = 0, j = 0;
  while (i < m) {
    if (j < n && a[i] === b[j]) { i++; j++; }
    else if (j < n && dp[i][j + 1] >= dp[i + 1][j]) j++;
    else changed.add(i++);
  }
  return changed;
}

function sideView(conflict, version, index, other) {
  const side = conflict.sides[index];
  const lines = version ? (side.deleted ? ["(deleted)"] : pretty(version.spec)) : ["(content not held here)"];
  const otherLines = other ? (conflict.sides[1 - index].deleted ? ["(deleted)"] : pretty(other.spec)) : [];
  const changed = changedLines(lines, otherLines);
  const isWinner = side.version === conflict.winner;
  return el("div", { class: "side", "data-version": side.version },
    el("div", {}, el("span", { class: isWinner ? "winner" : "" }, isWinner ? "★ " : "", side.version),
      ` from ${side.origin} by ${side.author}`),
    el("pre", {}, ...lines.map((line, k) => el("span", { class: changed.has(k) ? "chg" : "" }, line, "\n"))),
    conflict.status !== "resolved"
      ? el("button", { class: "action pick", type: "button", "data-pick": side.version,
          onclick: () => act(conflict.id, `/v1/conflicts/${conflict.id}/resolve`, { pick: side.version }) },
          `Pick this version`)
      : null);
}

function conflictCard(conflict) {
  const detail = state.details.get(conflict.id);
  const versions = detail ? detail.versions : [];
  const outcome = conflict.status === "resolved"
    ? `resolved${conflict.resolvedBy ? ` by ${conflict.resolvedBy}` : ` by ${conflict.strategy}`}`
    : `${conflict.status}, provisional winner ${conflict.winner}`;
  return el("article", { class: "conflict", "data-conflict": conflict.id, "data-status": conflict.status },
    el("header", {},
      el("strong", {}, conflict.object),
      el("span", { class: "badge" }, conflict.status),
      el("span", {}, `strategy: ${conflict.strategy}`),
      el("span", { class: "outcome" }, `outcome: ${outcome}`),
      el("span", { class: "fresh" }, `detected ${conflict.detectedAt}`),
      conflict.status === "open"
        ? el("button", { class: "action ack", type: "button",
            onclick: () => act(conflict.id, `/v1/conflicts/${conflict.id}/ack`, null) }, "Acknowledge")
        : null),
    el("div", { class: "sides" },
      conflict.sides.map((_, i) => sideView(conflict, versions[i], i, versions[1 - i]))),
    el("div", { class: "error", role: "alert" }));
}

async function act(id, path, body) {
  const card = document.querySelector(`[data-conflict="${id}"] .error`);
  try {
    await api(path, { method: "POST", headers: { "content-type": "application/json", ...AUTHOR },
      body: JSON.stringify(body || {}) });
    state.details.delete(id);
    await Promise.all([refreshConflicts(), refreshView()]);
  } catch (e) {
    if (card) card.textContent = `could not do it: ${e.message}`;
  }
}

async function refreshConflicts() {
  const status = document.getElementById("conf-status").value;
  try {
    const page = await api(`/v1/conflicts?limit=100${status ? `&status=${status}` : ""}`);
    state.conflicts = page.items;
    state.conflictsFetched = Date.now();
    // Both sides' content, for the ones shown (at most 20 new ones per refresh).
    const missing = state.conflicts.filter((c) => !state.details.has(c.id)).slice(0, 20);
    await Promise.all(missing.map(async (c) => state.details.set(c.id, await api(`/v1/conflicts/${c.id}`))));
  } catch (e) {
    document.getElementById("conf-fresh").textContent = `could not refresh: ${e.message}`;
    return;
  }
  renderConflicts();
}

let renderedConflicts = "";

function renderConflicts() {
  const box = document.getElementById("conflicts");
  document.getElementById("conf-fresh").textContent = since(state.conflictsFetched);
  // Re-render only when something changed, so a button under the pointer stays put.
  const shown = JSON.stringify([state.conflicts, state.conflicts.map((c) => state.details.has(c.id))]);
  if (shown === renderedConflicts) return;
  renderedConflicts = shown;
  box.replaceChildren(...(state.conflicts.length
    ? state.conflicts.map(conflictCard)
    : [el("p", { class: "empty" }, "No conflicts.")]));
}

// ---------- live ----------

const pending = new Set();
let flushTimer = null;

function schedule(what) {
  pending.add(what);
  if (flushTimer) return;
  flushTimer = setTimeout(() => {
    flushTimer = null;
    const todo = [...pending];
    pending.clear();
    if (todo.includes("view")) refreshView();
    if (todo.includes("sync")) refreshSync();
    if (todo.includes("conflicts")) refreshConflicts();
    if (todo.includes("policies")) refreshPolicies();
    if (todo.includes("overlay")) refreshOverlay();
  }, 250);
}

function onEvent(event) {
  state.lastEventId = event.lastEventId || state.lastEventId;
  let object = "";
  try { object = JSON.parse(event.data).object || ""; } catch (_) { /* a keep-alive */ }
  switch (event.type) {
    case "conflict": schedule("conflicts"); schedule("view"); break;
    case "link": schedule("sync"); schedule("view"); break;
    case "write": case "delete":
      if (object.startsWith("SiteStatus/")) { schedule("view"); schedule("sync"); }
      if (object.startsWith("Policy/")) schedule("policies");
      if (state.overlay && object === state.overlay.object) schedule("overlay");
      if (object) {
        for (const c of state.conflicts) if (c.object === object) { state.details.delete(c.id); schedule("conflicts"); }
      }
      break;
    default: break;
  }
}

let source = null;
let retry = 500;

// EventSource resumes by itself (sending Last-Event-ID) after a dropped connection; when the
// site was down long enough that it gives up (an error answer), start again from the last id.
function connect() {
  const live = document.getElementById("live");
  // The first connection starts from now (the page has just fetched everything); a new one
  // after a failure resumes after the last event received.
  const after = `&after=${state.lastEventId ? encodeURIComponent(state.lastEventId) : "latest"}`;
  source = new EventSource(`/v1/events?kinds=write,delete,conflict,link${after}`);
  source.addEventListener("open", () => {
    retry = 500;
    live.dataset.state = "live";
    live.textContent = "live";
    // Whatever happened while away: fetch it all once.
    schedule("view"); schedule("sync"); schedule("conflicts"); schedule("policies");
    if (state.overlay) schedule("overlay");
  });
  for (const kind of ["write", "delete", "conflict", "link"]) source.addEventListener(kind, onEvent);
  source.addEventListener("error", () => {
    live.dataset.state = "reconnecting";
    live.textContent = "reconnecting…";
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    }
  });
}

async function start() {
  setupFilters();
  const tree = document.getElementById("tree");
  tree.addEventListener("keydown", onTreeKey);
  tree.addEventListener("scroll", () => renderTree());
  document.getElementById("conf-status").addEventListener("change", refreshConflicts);
  try {
    state.site = await api("/v1/site");
    document.getElementById("site-line").textContent = `as seen by ${state.site.id} (${state.site.level})`;
  } catch (e) {
    document.getElementById("site-line").textContent = `site unknown: ${e.message}`;
  }
  await Promise.all([refreshView(), refreshSync(), refreshConflicts(), refreshPolicies()]);
  await refreshOverlay();
  // When the page first showed everything, in ms since navigation (the benchmark reads it).
  document.body.dataset.renderMs = String(Math.round(performance.now()));
  document.body.dataset.ready = "true";
  connect();
  // Ages tick between fetches; a slow periodic refresh covers what no event announces
  // (debt growing on a cut link).
  setInterval(() => {
    renderTree();
    document.getElementById("sync-fresh").textContent = since(state.syncFetched);
    document.getElementById("conf-fresh").textContent = since(state.conflictsFetched);
    if (state.overlay) renderOverlay();
  }, 1000);
  setInterval(() => schedule("sync"), 3000);
}

start();
