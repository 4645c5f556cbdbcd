// Module cards: state colour, pid, uptime, restarts, health-check reply time; restart button.
import { on, el, post, notice, stateClass, clock, num } from "./core.js";

const mods = new Map();  // name -> info (+ received: performance.now() when uptime was read)
let snapTime = 0;

function card(m) {
  const up = m.uptime_s === null || m.uptime_s === undefined
    ? null : m.uptime_s + (performance.now() - m.received) / 1000;
  const err = m.error || (m.exit_code !== null && m.exit_code !== undefined && m.state !== "ready"
    ? `exit code ${m.exit_code}` : "");
  const restart = el("button", {
    type: "button", title: `restart ${m.name}`,
    onclick: async (ev) => {
      if (m.state === "ready" && !confirm(`Restart ${m.name}? It is running.`)) return;
      ev.target.disabled = true;
      const r = await post("/api/restart", { module: m.name });
      ev.target.disabled = false;
      notice(r.ok ? `${m.name} restarted` : `restart ${m.name}: ${r.error}`, r.ok ? "ok" : "bad", 6000);
    },
  }, "restart");
  return el("div", { class: "card " + stateClass(m.state), "data-module": m.name, "data-state": m.state },
    el("div", { class: "name" }, m.name),
    el("div", { class: "state" }, m.state + (m.attempt ? ` #${m.attempt}` : "")),
    el("dl", {},
      el("dt", {}, "pid"), el("dd", {}, m.pid ?? "-"),
      el("dt", {}, "uptime"), el("dd", { class: "uptime" }, up === null ? "-" : clock(up)),
      el("dt", {}, "restarts"), el("dd", {}, String(m.restarts ?? 0)),
      el("dt", {}, "health"), el("dd", {}, m.health_ms === null || m.health_ms === undefined
        ? "-" : `${num(m.health_ms, 1)} ms`),
      el("dt", {}, "port"), el("dd", {}, `${m.host}:${m.port}`)),
    err ? el("div", { class: "err", title: err }, err) : null,
    restart);
}

function render() {
  const box = document.getElementById("modules");
  box.replaceChildren(...[...mods.values()].map(card));
}

function setAll(list) {
  const now = performance.now();
  mods.clear();
  for (const m of list) mods.set(m.name, { ...m, received: now });
  render();
}

export function init() {
  on("snapshot", (s) => { snapTime = s.time; setAll(s.modules); });
  on("modules", setAll);
  on("status", (e) => {  // pushed the moment the supervisor sees it: a crash turns red at once
    if (e.time < snapTime) return;
    const m = mods.get(e.module);
    if (!m) return;
    Object.assign(m, { state: e.state, received: performance.now() });
    for (const k of ["pid", "port", "exit_code", "error", "attempt", "ready_s"])
      if (k in e) m[k] = e[k];
    if (["crashed", "restarting", "failed", "stopped"].includes(e.state)) {
      m.pid = null; m.uptime_s = null; m.health_ms = null;
    }
    if (e.state === "ready") m.attempt = null;
    const old = document.querySelector(`.card[data-module="${CSS.escape(e.module)}"]`);
    if (old) old.replaceWith(card(m)); else render();
  });
  setInterval(() => {  // uptimes count on between pushes
    for (const c of document.querySelectorAll(".card")) {
      const m = mods.get(c.dataset.module);
      if (m && m.uptime_s !== null && m.uptime_s !== undefined)
        c.querySelector(".uptime").textContent = clock(m.uptime_s + (performance.now() - m.received) / 1000);
    }
  }, 1000);
}

export function modules() { return mods; }
