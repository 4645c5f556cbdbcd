// The page's plumbing: one EventSource for everything pushed, POST for commands, tiny DOM helpers.
// Panels subscribe with on(event, fn); "snapshot" arrives first after every (re)connection.

const handlers = new Map();
export const state = { page: null, snapshot: null, connected: false, everConnected: false };

export function on(event, fn) {
  if (!handlers.has(event)) handlers.set(event, []);
  handlers.get(event).push(fn);
}

function emit(event, data) {
  for (const fn of handlers.get(event) || []) {
    try { fn(data); } catch (err) { console.error(event, err); }
  }
}

const EVENTS = ["snapshot", "status", "command", "reply", "callback", "macro", "control_room",
  "modules", "logs", "streams", "recording", "bpod", "decoder", "plot", "plotinfo", "session"];

export function connect() {
  const es = new EventSource("/events");
  for (const ev of EVENTS) {
    es.addEventListener(ev, (m) => {
      const data = JSON.parse(m.data);
      if (ev === "snapshot") {
        const again = state.everConnected;
        state.page = data.page; state.snapshot = data;
        state.connected = true; state.everConnected = true;
        setConn(true);
        if (again) notice("event connection restored", "ok", 4000);
        else clearNotice("conn");
      }
      emit(ev, data);
    });
  }
  es.onerror = () => {
    if (!state.connected && state.everConnected) return;
    state.connected = false;
    setConn(false);
    if (es.readyState === EventSource.CLOSED) {  // refused (401 after a token change): reload
      notice("event connection refused; reloading to log in again", "bad");
      setTimeout(() => location.reload(), 3000);
    } else {
      notice("event connection lost: reconnecting ...", "bad", 0, "conn");
    }
    emit("disconnected", {});
  };
  return es;
}

function setConn(live) {
  const d = document.getElementById("conn");
  d.className = "dot " + (live ? "live" : "down");
  d.title = live ? "live: updates are pushed" : "disconnected: reconnecting";
}

const notices = new Map();
export function notice(text, kind = "", ms = 0, id = null) {
  const box = document.getElementById("notice");
  if (id && notices.has(id)) notices.get(id).remove();
  if (!id) for (const [k, v] of notices) if (k.startsWith("auto")) { v.remove(); notices.delete(k); }
  const m = el("span", { class: "msg " + kind, "data-notice": id || "auto" }, text);
  box.append(m);
  const key = id || "auto" + Math.random();
  notices.set(key, m);
  if (ms) setTimeout(() => { m.remove(); notices.delete(key); }, ms);
}

export function clearNotice(id) {
  if (notices.has(id)) { notices.get(id).remove(); notices.delete(id); }
}

export async function post(path, body) {
  let r;
  try {
    r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Mesh-Dashboard": "1" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (err) {
    return { ok: false, error: "the control room did not answer: " + err };
  }
  if (r.status === 401) { location.reload(); return { ok: false, error: "authentication required" }; }
  try { return await r.json(); } catch { return { ok: false, error: `HTTP ${r.status}` }; }
}

export async function get(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.reload(); return null; }
  return r.json();
}

// el("div", {class: "x", onclick: fn}, child, "text", ...)
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// replaceChildren without the null/undefined placeholders of optional parts
export function fill(node, ...kids) {
  node.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

export function json(v) {
  return typeof v === "string" ? v : JSON.stringify(v, null, 1);
}

export function clock(s) {
  if (s === null || s === undefined || !isFinite(s)) return "-";
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "-";
  if (n < 1e3) return n + " B";
  if (n < 1e6) return (n / 1e3).toFixed(1) + " kB";
  if (n < 1e9) return (n / 1e6).toFixed(1) + " MB";
  return (n / 1e9).toFixed(2) + " GB";
}

export function num(v, digits = 1) {
  return v === null || v === undefined || !isFinite(v) ? "-" : Number(v).toFixed(digits);
}

// The state colour class of a module state (what a glance across the room must get right).
export function stateClass(s) {
  if (s === "ready") return "s-ok";
  if (["crashed", "restarting", "failed", "unresponsive", "restart_failed"].includes(s)) return "s-bad";
  if (["stopped"].includes(s)) return "s-off";
  return "s-warn";  // pending, starting, stopping, restart_requested
}
