// Baton's web view. Reads the node's own JSON views (/v1/status,
// /v1/members, /v1/sessions) every few seconds and its event stream
// (/v1/events) as it comes; renders with the DOM only (textContent, never
// HTML from data: member names come from other nodes). Each rendered row
// carries data- attributes (data-member, data-state, data-session,
// data-primary, data-backups, data-epoch) for scripts and tests.
"use strict";

const REFRESH_MS = 2000;
const MAX_EVENTS = 100;
const SVG = "http://www.w3.org/2000/svg";

const model = {
  status: null,
  members: [],
  sessions: [],
  epochs: new Map(),  // session id -> epoch seen, to notice moves
  logged: new Set(),  // "id@epoch" of moves already in the log
  events: [],
};

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Peer ids differ in their last characters, session ids (hex) anywhere.
function shortId(id) { return id && id.length > 12 ? "\u2026" + id.slice(-6) : (id || ""); }
function shortSession(id) { return id.length > 14 ? id.slice(0, 12) + "\u2026" : id; }

function ms(v) {
  if (v === null || v === undefined || !isFinite(v)) return "\u2013";
  return v < 10 ? v.toFixed(2) + " ms" : v < 100 ? v.toFixed(1) + " ms" : Math.round(v) + " ms";
}

function clock(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function duration(s) {
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function reasonClass(reason) {
  if (!reason) return "";
  if (reason.startsWith("takeover")) return "takeover";
  if (reason.startsWith("transfer")) return "transfer";
  return "";
}

// Everyone this node knows, itself first: {id, name, state, self, ...}.
function everyone() {
  const out = [];
  const st = model.status;
  if (st) {
    out.push({ id: st.id, name: st.name, state: "alive", self: true, coordinate: st.coordinate,
               capacity: st.capacity, load: null, rtt_ms: null, distance_ms: 0, since: null });
  }
  // /v1/members lists this node too (marked `local`): shown once, first.
  for (const m of model.members) {
    if (m.local || (st && m.id === st.id)) continue;
    out.push(Object.assign({ self: false }, m));
  }
  return out;
}

function nameOf(id) {
  if (model.status && model.status.id === id) return model.status.name;
  const m = model.members.find((m) => m.id === id);
  return m && m.name ? m.name : shortId(id);
}

function stateOf(id) {
  if (model.status && model.status.id === id) return "alive";
  const m = model.members.find((m) => m.id === id);
  return m ? m.state : "unknown";
}

// ---- the event log ----

function logEvent(entry) {
  model.events.unshift(Object.assign({ at: new Date() }, entry));
  if (model.events.length > MAX_EVENTS) model.events.length = MAX_EVENTS;
  renderEvents();
}

function renderEvents() {
  const list = $("events");
  const items = model.events.map((e) => {
    const li = el("li", { class: [e.cls, Date.now() - e.at < 10000 ? "fresh" : ""].join(" ").trim(),
                          "data-kind": e.kind, "data-source": e.source, "data-id": e.id,
                          "data-state": e.state, "data-reason": e.reason },
                  el("time", {}, clock(e.at)), e.text);
    return li;
  });
  list.replaceChildren(...items);
}

function onStreamEvent(kind, data) {
  let e;
  try { e = JSON.parse(data); } catch (_) { return; }
  const at = e.at_ms ? new Date(e.at_ms) : new Date();
  if (kind === "member") {
    const who = e.name || shortId(e.id);
    const m = model.members.find((m) => m.id === e.id);
    if (m) m.state = e.state;
    logEvent({ at, kind, source: "stream", id: e.id, state: e.state, cls: e.state === "dead" ? "takeover" : "",
               text: who + ": " + (e.previous ? e.previous + " \u2192 " : "") + e.state });
    renderMembers();
    renderMap();
  } else if (kind === "session") {
    const cls = reasonClass(e.reason);
    if (e.state === "started" && e.incarnation) model.logged.add(e.id + "@" + e.incarnation);
    logEvent({ at, kind, source: "stream", id: e.id, state: e.state, reason: e.reason, cls,
               text: "session " + shortSession(e.id) + " " + e.state + " on " + (e.name || "this node") +
                     (e.reason ? " (" + e.reason + ")" : "") });
  } else if (kind === "refuted") {
    logEvent({ at, kind, source: "stream", id: e.id, state: e.state, cls: "",
               text: "this node refuted a suspicion about itself (incarnation " + e.incarnation + ")" });
  } else if (kind === "reload") {
    const list = (fields) => (fields && fields.length ? fields.join(", ") : "nothing");
    const text = e.state === "refused"
      ? "configuration reload refused on " + (e.name || "this node") + ": " + (e.reason || "")
      : "configuration reloaded on " + (e.name || "this node") + ": changed " + list(e.applied) +
        (e.restart && e.restart.length ? "; needs a restart: " + list(e.restart) : "");
    logEvent({ at, kind, source: "stream", id: e.id, state: e.state, reason: e.reason,
               cls: e.state === "refused" ? "refused" : "", text });
  } else if (kind === "lagged") {
    logEvent({ kind, source: "stream", cls: "", text: "missed " + e.missed + " events; refreshing" });
  } else {
    logEvent({ kind, source: "stream", cls: "", text: kind + " " + (e.id || "") + " " + (e.state || "") });
  }
  soon();
}

function connectEvents() {
  const live = $("live");
  const source = new EventSource("/v1/events");
  const set = (state, text) => { live.dataset.live = state; live.textContent = text; };
  source.onopen = () => { set("open", "live"); soon(); };
  source.onerror = () => {
    set(source.readyState === EventSource.CLOSED ? "closed" : "connecting",
        source.readyState === EventSource.CLOSED ? "events: closed (reload the page)" : "events: reconnecting");
  };
  for (const kind of ["member", "session", "refuted", "reload", "lagged"]) {
    source.addEventListener(kind, (ev) => onStreamEvent(kind, ev.data));
  }
}

// ---- the views ----

let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 250);
}

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store",
                                headers: { Accept: "application/json" } });
  if (r.status === 401 || r.status === 403) {
    const err = new Error("auth");
    err.status = r.status;
    throw err;
  }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function refresh() {
  try {
    const [status, members, sessions] = await Promise.all(
      [getJson("/v1/status"), getJson("/v1/members"), getJson("/v1/sessions")]);
    model.status = status;
    model.members = members;
    noticeMoves(sessions);
    model.sessions = sessions;
    showProblem(null);
    render();
    document.body.dataset.ready = "1";
    document.body.dataset.refreshedAt = String(Date.now());
  } catch (err) {
    if (err.status) {
      showProblem("This browser is not logged in to the node (or its token changed). ", true);
    } else {
      showProblem("Cannot reach the node: " + err.message + ". Retrying.");
    }
  }
}

// A session whose epoch rose since the last refresh changed primary:
// a takeover or a transfer, said by its reason.
function noticeMoves(sessions) {
  const first = model.epochs.size === 0 && model.sessions.length === 0;
  for (const s of sessions) {
    const before = model.epochs.get(s.id);
    model.epochs.set(s.id, s.epoch);
    if (first || before === undefined || s.epoch <= before) continue;
    const key = s.id + "@" + s.epoch;
    if (model.logged.has(key)) continue;
    model.logged.add(key);
    const last = (s.history || []).filter((h) => h.epoch === s.epoch).pop();
    const reason = (last && last.reason) || s.reason || "";
    logEvent({ at: last && last.at_ms ? new Date(last.at_ms) : new Date(), kind: "move", source: "refresh",
               id: s.id, state: s.state, reason, cls: reasonClass(reason),
               text: "session " + shortSession(s.id) + " moved to " + (s.primary_name || nameOf(s.primary)) +
                     " (epoch " + s.epoch + (reason ? ", " + reason : "") + ")" });
  }
}

function showProblem(text, login) {
  const p = $("problem");
  if (!text) { p.hidden = true; return; }
  p.replaceChildren(text, login ? el("a", { href: "/ui/" }, "Log in again.") : "");
  p.hidden = false;
}

function render() {
  renderHeader();
  renderMembers();
  renderSessions();
  renderMap();
  renderEvents();
}

function renderHeader() {
  const st = model.status;
  document.title = "Baton: " + st.name;
  $("node-name").textContent = st.name + " \u00b7 overlay " + st.overlay;
  const c = st.members || {};
  const active = model.sessions.filter((s) => s.state !== "closed").length;
  $("summary").textContent = [
    (c.alive || 0) + 1 + " alive", (c.suspect || 0) + " suspect", (c.dead || 0) + " dead", (c.left || 0) + " left",
    active + " sessions", st.profile, "v" + st.version, "up " + duration(st.uptime_s || 0),
    "updated " + clock(new Date()),
  ].join(" \u00b7 ");
}

function renderMembers() {
  const rows = everyone().map((m) => {
    const load = m.self ? model.sessions.filter((s) => s.hosted_here && s.state !== "closed").length : m.load;
    return el("tr", { class: m.state, "data-member": m.id, "data-name": m.name, "data-state": m.state,
                      "data-self": m.self ? "1" : null },
      el("td", {}, m.name || shortId(m.id), m.self ? el("span", { class: "self" }, "this node") : null),
      el("td", {}, el("span", { class: "state " + m.state }, m.state)),
      el("td", { class: "num" }, m.self ? "" : ms(m.rtt_ms)),
      el("td", { class: "num" }, m.self ? "" : ms(m.distance_ms)),
      el("td", { class: "num" }, (load === null ? "\u2013" : load) + " / " + m.capacity),
      el("td", {}, m.since ? ago(new Date(m.since)) : ""),
      el("td", { class: "id", title: m.id }, shortId(m.id)));
  });
  $("members").tBodies[0].replaceChildren(...rows);
}

function renderSessions() {
  const sorted = model.sessions.slice().sort((a, b) =>
    (a.state === "closed") - (b.state === "closed") || a.id.localeCompare(b.id));
  const rows = sorted.map((s) => {
    const person = (id, cls) => el("span", { class: [cls, stateOf(id) === "dead" || stateOf(id) === "left" ? "gone" : "",
                                                     model.status && id === model.status.id ? "here" : ""].join(" ").trim(),
                                             title: id + " (" + stateOf(id) + ")" }, nameOf(id));
    const backups = [];
    s.backups.forEach((b, i) => { if (i) backups.push(", "); backups.push(person(b, "backup")); });
    const changed = s.updated_ms ? new Date(s.updated_ms) : null;
    return el("tr", { class: s.state === "closed" ? "closed" : "", "data-session": s.id, "data-primary": s.primary,
                      "data-primary-name": s.primary_name || nameOf(s.primary), "data-backups": s.backups.join(","),
                      "data-epoch": s.epoch, "data-state": s.state },
      el("td", { class: "id", title: s.id }, shortSession(s.id)),
      el("td", {}, s.service),
      el("td", {}, s.client),
      el("td", {}, person(s.primary, "primary"), s.paused ? " (paused)" : ""),
      el("td", {}, ...backups),
      el("td", { class: "num" }, s.epoch),
      el("td", { class: "reason-" + reasonClass(s.reason) }, (s.reason || "") + (changed ? ", " + ago(changed) : "")));
  });
  $("sessions").tBodies[0].replaceChildren(...rows);
  const active = model.sessions.filter((s) => s.state !== "closed").length;
  $("sessions-note").textContent = model.sessions.length === 0 ? "No sessions." :
    active + " active, " + (model.sessions.length - active) + " closed (kept while their tombstone lives).";
}

// ---- the map: classical MDS of the estimated RTTs ----

// The estimated RTT between two coordinates, as the node computes it.
function rtt(a, b) {
  let sq = 0;
  const n = Math.max(a.vec_ms.length, b.vec_ms.length);
  for (let i = 0; i < n; i++) {
    const d = (a.vec_ms[i] || 0) - (b.vec_ms[i] || 0);
    sq += d * d;
  }
  const raw = Math.sqrt(sq) + a.height_ms + b.height_ms;
  const adjusted = raw + a.adjustment_ms + b.adjustment_ms;
  return adjusted > 0 ? adjusted : raw;
}

// The top eigenvector of the symmetric matrix m (largest eigenvalue, not
// largest magnitude: m is shifted by its norm bound first).
function topEigen(m) {
  const n = m.length;
  let bound = 0;
  for (const row of m) bound = Math.max(bound, row.reduce((s, x) => s + Math.abs(x), 0));
  let v = Array.from({ length: n }, (_, i) => Math.sin(i + 1) + 0.1);
  for (let it = 0; it < 300; it++) {
    const w = m.map((row, i) => row.reduce((s, x, j) => s + x * v[j], 0) + bound * v[i]);
    const norm = Math.hypot(...w);
    if (!(norm > 0)) break;
    v = w.map((x) => x / norm);
  }
  const mv = m.map((row) => row.reduce((s, x, j) => s + x * v[j], 0));
  const value = mv.reduce((s, x, i) => s + x * v[i], 0);
  return { value, vector: v };
}

// 2-D positions whose distances approximate the RTT matrix d.
function mds(d) {
  const n = d.length;
  const sq = d.map((row) => row.map((x) => x * x));
  const rowMean = sq.map((row) => row.reduce((s, x) => s + x, 0) / n);
  const all = rowMean.reduce((s, x) => s + x, 0) / n;
  let b = sq.map((row, i) => row.map((x, j) => -0.5 * (x - rowMean[i] - rowMean[j] + all)));
  const axes = [];
  for (let k = 0; k < 2; k++) {
    const { value, vector } = topEigen(b);
    axes.push(vector.map((x) => x * Math.sqrt(Math.max(value, 0))));
    b = b.map((row, i) => row.map((x, j) => x - value * vector[i] * vector[j]));
  }
  return d.map((_, i) => [axes[0][i], axes[1][i]]);
}

function niceScale(target) {
  const p = Math.pow(10, Math.floor(Math.log10(target)));
  for (const f of [1, 2, 5, 10]) if (f * p >= target) return f * p;
  return 10 * p;
}

// ---- label placement (pure; tests/tests/webview_labels.rs runs it in node) ----

// Where the labels of the map's points go, so that labels of nearby points
// do not overlap: each label, in order, takes the first of a few spots
// around its point (right, left, above, below, then lines further up and
// down) that overlaps no label placed before it, no point and stays inside
// the map; when no spot is free, the one that overlaps least.
// `points`: [x, y] centres of circles of radius `r`; `sizes`: [width,
// height] of each label; `box`: [width, height] of the map. Answers
// {x, y, anchor} per label: the text's anchor point (baseline) and its
// text-anchor.
function placeLabels(points, sizes, box, r) {
  const gap = r + 5;
  // Nearest first: right, left, above, below; then a line further up
  // and down on each side, three times, each a little further out.
  const spots = [[gap, 4, "start"], [-gap, 4, "end"], [0, -r - 5, "middle"], [0, r + 14, "middle"]];
  for (let ring = 1; ring <= 3; ring++) {
    const dx = gap + 6 * (ring - 1);
    for (const dy of [4 - 14 * ring, 4 + 14 * ring]) spots.push([dx, dy, "start"], [-dx, dy, "end"]);
    spots.push([0, -r - 5 - 14 * ring, "middle"], [0, r + 14 + 14 * ring, "middle"]);
  }
  // A label's rectangle [left, top, right, bottom] from its anchor point.
  const rect = (x, y, anchor, [w, h]) => {
    const left = anchor === "start" ? x : anchor === "end" ? x - w : x - w / 2;
    return [left, y - h * 0.8, left + w, y + h * 0.2];
  };
  const overlap = (a, b) =>
    Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])) *
    Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const dots = points.map(([x, y]) => [x - r, y - r, x + r, y + r]);
  const inside = [0, 0, box[0], box[1]];
  const placed = [];
  return points.map(([x, y], i) => {
    let best = null;
    for (const [dx, dy, anchor] of spots) {
      const at = rect(x + dx, y + dy, anchor, sizes[i]);
      const area = (at[2] - at[0]) * (at[3] - at[1]);
      let cost = area - overlap(at, inside);  // outside the map
      for (const other of placed) cost += overlap(at, other);
      for (const dot of dots) cost += overlap(at, dot);
      if (!best || cost < best.cost) best = { cost, at, label: { x: x + dx, y: y + dy, anchor } };
      if (cost === 0) break;
    }
    placed.push(best.at);
    return best.label;
  });
}

// ---- end of label placement ----

// The size of a map label: 12px text (app.css), about 7px a character.
const LABEL_CHAR = 7, LABEL_HEIGHT = 12;

function renderMap() {
  const map = $("map");
  // Room around the points: labels go to the right of their point.
  const W = 460, H = 360, LEFT = 30, RIGHT = 100, TOP = 30, BOTTOM = 50;
  const nodes = everyone().filter((m) => m.coordinate && m.coordinate.vec_ms && m.coordinate.vec_ms.length);
  const children = [];
  if (nodes.length < 2) {
    children.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
      nodes.length ? "no other member has a coordinate yet" : "no coordinates yet"));
    map.replaceChildren(...children);
    $("map-note").textContent = "";
    return;
  }
  // Fixed order, so that the picture does not flip between refreshes.
  nodes.sort((a, b) => (b.self - a.self) || a.id.localeCompare(b.id));
  const d = nodes.map((a) => nodes.map((b) => (a === b ? 0 : rtt(a.coordinate, b.coordinate))));
  let pos = mds(d);
  // Put this node in the middle and make the orientation stable: the first
  // other member to the right, the next one above.
  const [ox, oy] = pos[0];
  pos = pos.map(([x, y]) => [x - ox, y - oy]);
  const angle = Math.atan2(pos[1][1], pos[1][0]);
  const cos = Math.cos(-angle), sin = Math.sin(-angle);
  pos = pos.map(([x, y]) => [x * cos - y * sin, x * sin + y * cos]);
  if (pos.length > 2 && pos[2][1] < 0) pos = pos.map(([x, y]) => [x, -y]);
  const xs = pos.map((p) => p[0]), ys = pos.map((p) => p[1]);
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const w = W - LEFT - RIGHT, h = H - TOP - BOTTOM;
  const k = Math.min(w / Math.max(maxX - minX, 1e-9), h / Math.max(maxY - minY, 1e-9));  // px per ms, both axes
  const cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  const at = ([x, y]) => [LEFT + w / 2 + (x - cx) * k, TOP + h / 2 - (y - cy) * k];
  const px = pos.map(at);
  // Spokes from this node, labelled with its own estimate.
  if (nodes[0].self) {
    nodes.forEach((m, i) => {
      if (i === 0) return;
      children.push(svg("line", { class: "spoke", x1: px[0][0], y1: px[0][1], x2: px[i][0], y2: px[i][1] }));
      if (nodes.length <= 12) {
        children.push(svg("text", { class: "dist", x: (px[0][0] + px[i][0]) / 2, y: (px[0][1] + px[i][1]) / 2 - 3,
                                    "text-anchor": "middle" }, ms(d[0][i])));
      }
    });
  }
  // Labels: beside their point, moved where another is in the way.
  const texts = nodes.map((m) => (m.name || shortId(m.id)) + (m.state === "alive" ? "" : " (" + m.state + ")"));
  const spots = placeLabels(px, texts.map((t) => [t.length * LABEL_CHAR + 2, LABEL_HEIGHT]), [W, H], 8);
  nodes.forEach((m, i) => {
    const [x, y] = px[i];
    const g = svg("g", { "data-map-member": m.id, "data-state": m.state });
    const c = m.coordinate;
    g.append(svg("title", {}, (m.name || m.id) + " (" + m.state + ")\nheight " + ms(c.height_ms) +
      ", adjustment " + ms(c.adjustment_ms) + ", error " + c.error.toFixed(2) +
      (m.self ? "" : "\nestimated RTT from this node " + ms(d[0][i]))));
    if (m.self) g.append(svg("circle", { class: "ring", cx: x, cy: y, r: 12 }));
    g.append(svg("circle", { class: m.state, cx: x, cy: y, r: 8 }));
    const spot = spots[i];
    g.append(svg("text", { x: spot.x, y: spot.y, "text-anchor": spot.anchor }, texts[i]));
    children.push(g);
  });
  // Scale bar.
  const bar = niceScale(w / 4 / k);
  children.push(svg("line", { class: "scale", x1: 12, y1: H - 14, x2: 12 + bar * k, y2: H - 14 }));
  children.push(svg("text", { x: 12, y: H - 20 }, ms(bar)));
  map.replaceChildren(...children);
  // How well the flat picture keeps the distances.
  let err = 0, pairs = 0;
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      if (d[i][j] <= 0) continue;
      err += Math.abs(Math.hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]) - d[i][j]) / d[i][j];
      pairs++;
    }
  }
  $("map-note").textContent = "Distance on the map is the RTT estimated from Vivaldi coordinates " +
    "(heights included), flattened to two dimensions" +
    (pairs ? "; it is off by " + Math.round((100 * err) / pairs) + "% on average." : ".");
}

refresh();
setInterval(refresh, REFRESH_MS);
connectEvents();
