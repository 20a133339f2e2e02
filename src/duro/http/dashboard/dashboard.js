// The admin dashboard: plain JavaScript, no build step, nothing loaded from elsewhere. Every
// request carries the admin token as a bearer header; the token lives in this tab's sessionStorage.
"use strict";
const API = "/__duro/admin/";
const $ = (sel) => document.querySelector(sel);
let token = null;
let current = null; // {namespace, id, name} of the object on screen
let tailAbort = null;
window.dashboard = { tailEvents: 0 };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) {
    const td = c instanceof Node ? c : el("td", c === null || c === undefined ? "-" : c);
    if (!(c instanceof Node) && typeof c === "number") td.className = "num";
    tr.appendChild(td instanceof HTMLTableCellElement ? td : wrap(td));
  }
  return tr;
}
function wrap(node) { const td = el("td"); td.appendChild(node); return td; }

function size(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function shown(v) {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "object" && v.$base64 !== undefined) return "x'" + [...atob(v.$base64)].map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("") + "'";
  return String(v);
}

async function call(op, args) {
  const resp = await fetch(API + op, {
    method: "POST", headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: JSON.stringify(args || {}),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = { error: resp.status + " " + resp.statusText }; }
  if (!resp.ok) {
    if (resp.status === 403) showLogin("the token was refused (the server makes a new one at each start)");
    throw new Error(data.error || resp.statusText);
  }
  return data;
}

// ---- login -------------------------------------------------------------------------------------

function showLogin(message) {
  sessionStorage.removeItem("duro-token");
  token = null;
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

async function start() {
  try {
    const info = await call("ping");
    $("#server").textContent = "pid " + info.pid + " · " + info.data_dir;
  } catch (e) {
    if (token) showLogin(e.message);
    return;
  }
  $("#login").hidden = true;
  $("#app").hidden = false;
  await loadNamespaces();
  await search();
  document.body.dataset.ready = "yes";
}

// ---- objects -----------------------------------------------------------------------------------

async function loadNamespaces() {
  const data = await call("namespaces");
  const sel = $("#namespace");
  while (sel.options.length > 1) sel.remove(1);
  for (const ns of data.namespaces) {
    const o = el("option", ns.class + " (" + ns.stored + ")");
    o.value = ns.namespace;
    sel.appendChild(o);
  }
}

async function search() {
  const args = { q: $("#search").value, limit: 200 };
  if ($("#namespace").value) args.namespace = $("#namespace").value;
  const data = await call("objects", args);
  const body = $("#objects tbody");
  body.replaceChildren();
  // A cluster node lists every node's objects, each with the node that owns it now.
  $("#owner-head").hidden = !data.cluster;
  for (const o of data.objects) {
    const cells = [o.name, o.id.slice(0, 16) + "…", size(o.size), o.last_write, o.alarm];
    if (data.cluster) cells.push(o.owner ? o.owner + (o.source === "owner" ? "" : " (" + (o.source || "no data here") + ")") : "none");
    const tr = row(cells, "pick");
    tr.children[1].className = "mono";
    tr.children[1].title = o.id;
    tr.dataset.id = o.id;
    tr.addEventListener("click", () => openObject(o.namespace, o.id, o.name));
    body.appendChild(tr);
  }
  $("#objects-note").textContent = data.total + " object" + (data.total === 1 ? "" : "s")
    + (data.truncated ? " (showing the " + data.objects.length + " written last)" : "");
}

async function openObject(namespace, id, name) {
  current = { namespace, id, name };
  for (const tr of document.querySelectorAll("#objects tbody tr")) tr.classList.toggle("selected", tr.dataset.id === id);
  const o = await call("object", { namespace, id });
  $("#object").hidden = false;
  $("#object-title").textContent = o.name || o.id;
  const facts = $("#object-facts");
  facts.replaceChildren();
  const add = (k, v) => { facts.appendChild(el("dt", k)); facts.appendChild(el("dd", v === null || v === undefined ? "-" : v)); };
  add("namespace", o.namespace); add("id", o.id); add("name", o.name); add("size on disk", size(o.size));
  add("database size", size(o.database_size)); add("last write", o.last_write); add("alarm", o.alarm);
  if (o.owner) add("node", o.owner);
  const tables = $("#tables tbody");
  tables.replaceChildren();
  for (const t of o.tables) {
    const tr = row([t.name, t.rows], "pick");
    tr.addEventListener("click", () => { $("#sql").value = "SELECT * FROM \"" + t.name.replaceAll("\"", "\"\"") + "\" LIMIT 100"; runSql(); });
    tables.appendChild(tr);
  }
  if (!o.tables.length) tables.appendChild(row(["(no tables)", ""]));
  $("#kv-count").textContent = "(" + (o.kv_count || 0) + ")";
  const keys = $("#kv-keys");
  keys.replaceChildren();
  for (const k of o.kv_keys) keys.appendChild(el("li", shown(k)));
  const b = o.bookmarks;
  $("#bookmarks").textContent = b.available
    ? "from " + b.first + " (" + b.first_time + ") to " + b.last + " (" + b.last_time + ")"
    : b.reason;
  $("#bookmark").value = "";
  $("#point-result").textContent = "";
  $("#point-error").textContent = "";
  $("#sql-error").textContent = "";
}

async function runSql() {
  $("#sql-error").textContent = "";
  $("#sql-note").textContent = "";
  const head = $("#sql-result thead"), body = $("#sql-result tbody");
  head.replaceChildren(); body.replaceChildren();
  try {
    const r = await call("query", { namespace: current.namespace, id: current.id, sql: $("#sql").value });
    head.appendChild(row(r.columns.map((c) => el("th", c))));
    for (const values of r.rows) body.appendChild(row(values.map(shown)));
    $("#sql-note").textContent = r.total + " row" + (r.total === 1 ? "" : "s") + (r.truncated ? " (first " + r.rows.length + " shown)" : "");
  } catch (e) {
    $("#sql-error").textContent = e.message;
  }
}

function point() {
  const bookmark = $("#bookmark").value.trim();
  if (bookmark) return { bookmark };
  const at = $("#at").value;
  if (at) return { at_ms: new Date(at).getTime() };
  throw new Error("give a bookmark or a time");
}

async function restore() {
  $("#point-error").textContent = ""; $("#point-result").textContent = "";
  try {
    const p = point();
    if (!confirm("Restore " + (current.name || current.id) + " to " + (p.bookmark || new Date(p.at_ms).toISOString()) + "? Its instance is reset.")) return;
    const r = await call("restore", { namespace: current.namespace, id: current.id, name: current.name, ...p });
    $("#point-result").textContent = "restored to " + r.bookmark + "; to undo, restore to " + r.undo;
    await openObject(current.namespace, current.id, current.name);
    $("#point-result").textContent = "restored to " + r.bookmark + "; to undo, restore to " + r.undo;
  } catch (e) { $("#point-error").textContent = e.message; }
}

async function branch() {
  $("#point-error").textContent = ""; $("#point-result").textContent = "";
  try {
    const name = $("#branch-name").value.trim();
    if (!name) throw new Error("give the new object a name");
    const p = point();
    const id = await idFromName(current.namespace, name);
    const r = await call("branch", { namespace: current.namespace, id: current.id, to_id: id, to_name: name, ...p });
    $("#point-result").textContent = "created " + name + " from bookmark " + r.bookmark;
    await search();
  } catch (e) { $("#point-error").textContent = e.message; }
}

async function idFromName(namespace, name) {
  const r = await call("id", { namespace, name });
  return r.id;
}

// ---- live tail ---------------------------------------------------------------------------------

async function startTail(ev) {
  ev.preventDefault();
  stopTail();
  const q = new URLSearchParams();
  if ($("#tail-object").value.trim()) q.append("object", $("#tail-object").value.trim());
  if ($("#tail-class").value.trim()) q.append("class", $("#tail-class").value.trim());
  if ($("#tail-status").value) q.append("status", $("#tail-status").value);
  tailAbort = new AbortController();
  $("#tail-start").disabled = true; $("#tail-stop").disabled = false;
  $("#tail-state").textContent = "connecting";
  try {
    const resp = await fetch(API + "tail?" + q, { headers: { authorization: "Bearer " + token }, signal: tailAbort.signal });
    if (!resp.ok) throw new Error((await resp.json()).error || resp.statusText);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
        if (line.trim()) tailRecord(JSON.parse(line));
      }
    }
    $("#tail-state").textContent = "the server ended the stream";
  } catch (e) {
    if (e.name !== "AbortError") $("#tail-state").textContent = e.message;
  } finally {
    $("#tail-start").disabled = false; $("#tail-stop").disabled = true;
  }
}

function tailRecord(r) {
  if (r.type === "hello") { $("#tail-state").textContent = "streaming (server pid " + r.pid + ")"; return; }
  if (r.type === "dropped") { $("#tail-state").textContent = r.total + " events dropped (this page read slower than they happened)"; return; }
  if (r.type !== "event") return;
  const label = r.kind + (r.label ? " " + r.label : "");
  const tr = row([new Date(r.time_ms).toISOString().slice(11, 23), r.class, r.name || (r.id || "").slice(0, 16), label,
    r.status, Number(r.duration_ms || 0).toFixed(1), Number(r.cpu_ms || 0).toFixed(1),
    (r.rows_read || 0) + "/" + (r.rows_written || 0), (r.logs || []).join("\n") + (r.error ? "\n" + r.error : "")]);
  tr.children[4].className = "status-" + r.status;
  tr.children[8].className = "logs";
  const body = $("#tail tbody");
  body.insertBefore(tr, body.firstChild);
  while (body.children.length > 500) body.removeChild(body.lastChild);
  window.dashboard.tailEvents++;
}

function stopTail() {
  if (tailAbort) { tailAbort.abort(); tailAbort = null; $("#tail-state").textContent = "stopped"; }
}

// ---- sockets -----------------------------------------------------------------------------------

async function loadSockets() {
  const r = await call("sockets");
  $("#connections").textContent = "open connections on the serving port: " + r.connections.http + " HTTP, "
    + r.connections.websocket + " WebSocket";
  const body = $("#sockets tbody");
  body.replaceChildren();
  const states = ["connecting", "open", "closing", "closed"];
  let n = 0;
  for (const o of r.objects) {
    for (const s of o.sockets) {
      const where = o.worker === undefined ? "" : " (worker " + o.worker + ")";
      body.appendChild(row([o.namespace, (o.name || o.id.slice(0, 16)) + where, s.id, s.tags.join(", "), states[s.state] || s.state, s.age_s + " s"]));
      n++;
    }
  }
  const missing = (r.missing_workers || []).length ? "; worker " + r.missing_workers.join(", ") + " did not answer" : "";
  $("#sockets-note").textContent = n + " hibernatable WebSocket" + (n === 1 ? "" : "s") + " in " + r.objects.length + " object" + (r.objects.length === 1 ? "" : "s") + missing;
}

// ---- wiring ------------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll("nav .tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab-page")) s.hidden = s.id !== "tab-" + name;
  if (name === "sockets") loadSockets().catch((e) => { $("#sockets-note").textContent = e.message; });
}

document.addEventListener("DOMContentLoaded", () => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("duro-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  token = sessionStorage.getItem("duro-token");
  for (const b of document.querySelectorAll("nav .tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("duro-token", token);
    start();
  });
  $("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  $("#namespace").addEventListener("change", search);
  $("#sql-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSql(); });
  $("#restore").addEventListener("click", restore);
  $("#branch").addEventListener("click", branch);
  $("#tail-form").addEventListener("submit", startTail);
  $("#tail-stop").addEventListener("click", stopTail);
  $("#sockets-refresh").addEventListener("click", () => loadSockets());
  if (token) start(); else showLogin("");
});
