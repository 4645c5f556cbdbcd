// The central log, newest first, filtered by module, level and text; records are pushed.
import { on, el } from "./core.js";

const MAX = 3000;
let records = [];
let skipped = 0;

function fmtTime(created) {
  const d = new Date(created * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function render() {
  const mod = document.getElementById("log-module").value;
  const lvl = Number(document.getElementById("log-level").value);
  const text = document.getElementById("log-text").value.toLowerCase();
  const out = [];
  for (let i = records.length - 1; i >= 0 && out.length < 400; i--) {
    const r = records[i];
    if (mod && r.module !== mod) continue;
    if ((r.levelno || 0) < lvl) continue;
    if (text && !(r.msg || "").toLowerCase().includes(text)) continue;
    out.push(el("li", { class: "l" + (r.levelno || 0), "data-module": r.module, "data-level": r.level },
      `${fmtTime(r.created)} ${String(r.level || "").toUpperCase().padEnd(7)} `, el("b", {}, r.module),
      r.logger && r.logger !== r.module ? el("span", { class: "muted" }, ` ${r.logger}`) : null, " ", r.msg,
      r.exc_text ? "\n" + r.exc_text : ""));
  }
  document.getElementById("log").replaceChildren(...out);
  document.getElementById("log-count").textContent =
    `${out.length} shown of ${records.length}` + (skipped ? `, ${skipped} skipped in bursts` : "");
}

let pending = false;
function soon() {
  if (pending) return;
  pending = true;
  setTimeout(() => { pending = false; render(); }, 200);
}

export function init() {
  const sel = document.getElementById("log-module");
  for (const id of ["log-module", "log-level"]) document.getElementById(id).addEventListener("change", render);
  document.getElementById("log-text").addEventListener("input", soon);
  on("snapshot", (s) => {
    const keep = sel.value;
    sel.replaceChildren(el("option", { value: "" }, "all modules"),
      ...s.log_sources.map((m) => el("option", { value: m }, m)));
    sel.value = s.log_sources.includes(keep) ? keep : "";
    records = s.logs.slice(-MAX);
    skipped = 0;
    render();
  });
  on("logs", (b) => {
    const last = records.length ? records[records.length - 1].seq : 0;
    records.push(...b.records.filter((r) => r.seq > last));  // the snapshot may hold some
    skipped += b.skipped;
    if (records.length > MAX) records = records.slice(-MAX);
    soon();
  });
}
