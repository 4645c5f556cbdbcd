// The session: start and stop it (the control room's SESSION_START / SESSION_STOP), and what it is
// doing as the control room pushes each step: reference, status, folder, main sync, start, each
// participant, problems. After it ends, the last session stays shown.
import { on, el, fill, post, notice, clock } from "./core.js";

let cur = null;      // SESSION_STATUS's shape: the running session, or {running: false, last}
let snapTime = 0;

// The state colours of the module cards: a glance says whether the session is fine.
export function sessionClass(status) {
  if (status === "running") return "s-ok";
  if (["interrupted", "failed"].includes(status)) return "s-bad";
  if (status === "ended") return "s-off";
  return "s-warn";  // initializing, initialized
}

function partClass(m) {
  if (m.status === "lost" || m.error) return "bad";
  if (m.status === "running") return "ok";
  if (["connected", "initialized"].includes(m.status)) return "warn";
  return "";  // stopped, always ready (foreign)
}

function when(c) {
  if (!c || !c.wall) return null;
  const d = new Date(c.wall);
  return isNaN(d) ? String(c.wall) : d.toLocaleString();
}

function elapsed(s) {
  const a = s.start && Date.parse(s.start.wall);
  if (!a) return "";
  const b = s.end && s.end.wall ? Date.parse(s.end.wall) : Date.now();
  return clock((b - a) / 1000);
}

function row(k, v, attrs = {}) {
  return v === null || v === undefined || v === "" ? null : [el("dt", {}, k), el("dd", attrs, v)];
}

function render() {
  const box = document.getElementById("session");
  const last = cur && !cur.exp_ref;
  const s = last ? cur.last : cur;
  if (!s) { fill(box, el("p", { class: "muted" }, "no session yet")); return; }
  const parts = Object.entries(s.modules || {}).map(([name, m]) => el("tr", { "data-part": name },
    el("td", {}, name), el("td", { class: "muted" }, m.kind || "-"),
    el("td", {}, el("span", { class: "badge " + partClass(m), "data-status": m.status || "" }, m.status || "-")),
    el("td", { class: "err-t" }, m.error || "")));
  const i = s.interrupted;
  fill(box,
    el("div", { id: "session-state", class: "sess " + sessionClass(s.status), "data-status": s.status },
      el("div", { class: "ref", id: "session-ref" }, s.exp_ref),
      el("div", { class: "state" }, (last ? "last session: " : "") + s.status)),
    el("dl", { class: "kv" },
      row("folder", s.folder, { id: "session-folder", title: s.folder }),
      row("main sync", s.main_sync),
      row("start", when(s.start)),
      row("end", when(s.end)),
      row("duration", elapsed(s), { id: "session-elapsed" }),
      row("project", s.project),
      i ? row("interrupted", `${i.error}${i.message ? ": " + i.message : ""}`, { class: "err-t" }) : null),
    parts.length ? el("table", { class: "grid", id: "session-parts" },
      el("tr", {}, el("th", {}, "participant"), el("th", {}, "kind"), el("th", {}, "status"), el("th", {}, "")),
      ...parts) : null,
    (s.problems || []).length
      ? el("ul", { class: "problems", id: "session-problems" }, ...s.problems.map((p) => el("li", {}, p))) : null);
}

async function start(form, btn) {
  const subject = form.elements.subject;
  const project = form.elements.project.value.trim();
  const procedures = form.elements.procedures.value.split(",").map((p) => p.trim()).filter(Boolean);
  subject.classList.remove("bad");
  btn.disabled = true; btn.textContent = "Starting ...";
  const r = await post("/api/session_start", { subject: subject.value.trim(), project: project || null, procedures });
  btn.disabled = false; btn.textContent = "Start";
  if (!r.ok) {
    if (/subject/.test(r.error)) subject.classList.add("bad");
    notice(`session start: ${r.error}`, "bad", 15000);
  } else {
    const again = r.result.repeat ? " (it was already running)" : "";
    notice(`session ${r.result.exp_ref} ${r.result.status}${again}`, "ok", 5000);
  }
}

async function stop(btn) {
  const box = document.getElementById("session-interrupt");
  btn.disabled = true; btn.textContent = "Stopping ...";
  const r = await post("/api/session_stop", { interrupt: box.checked });
  btn.disabled = false; btn.textContent = "Stop";
  box.checked = false;
  if (!r.ok) { notice(`session stop: ${r.error}`, "bad", 15000); return; }
  const s = r.result, problems = (s.problems || []).join("; ");
  const clean = s.status === "ended" && !problems;
  notice(`session ${s.exp_ref} ${s.status}${s.repeat ? " (already)" : ""}${problems ? ": " + problems : ""}`,
    clean ? "ok" : "bad", clean ? 5000 : 15000);
}

export function init() {
  const form = document.getElementById("session-form");
  const startBtn = document.getElementById("session-start");
  const stopBtn = document.getElementById("session-stop");
  form.addEventListener("submit", (ev) => { ev.preventDefault(); start(form, startBtn); });
  stopBtn.addEventListener("click", () => stop(stopBtn));
  on("snapshot", (s) => { snapTime = s.time; cur = s.session; render(); });
  on("session", (e) => {  // one per step, with the control room's summary at that moment
    if (e.time < snapTime) return;
    cur = e.session;
    render();
    if (e.state === "participant_lost")
      notice(`session ${e.exp_ref}: ${e.module}${e.address ? ` (${e.address})` : ""} lost (${e.detail})`, "bad", 15000);
  });
  setInterval(() => {  // the duration counts on between pushes
    const d = document.getElementById("session-elapsed");
    if (d && cur && cur.exp_ref && cur.start && !cur.end) d.textContent = elapsed(cur);
  }, 1000);
}
