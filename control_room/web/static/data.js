// LSL streams with nominal and measured rates, the recording, and Bpod trials as they finish.
import { on, el, fill, clock, bytes, num, notice, clearNotice } from "./core.js";

let rec = null, recAt = 0;          // last recorder STATUS and when it arrived
let running = null, runningAt = 0;  // the Bpod trial in progress

function renderStreams(rows) {
  const t = document.getElementById("streams");
  const head = el("tr", {}, el("th", {}, "stream"), el("th", { class: "num" }, "ch"),
    el("th", { class: "num", title: "nominal rate" }, "Hz"), el("th", { class: "num" }, "measured"),
    el("th", {}, ""));
  const body = rows.map((r) => {
    const measured = r.measured_srate;
    const off = r.srate > 0 && measured !== null && Math.abs(measured - r.srate) > 0.05 * r.srate;
    const quiet = r.since_data_s !== null && r.srate > 0 && r.since_data_s > 1;
    const data = r.probe ? el("span", { class: "muted" }, r.probe)
      : r.since_data_s === null ? "-" : quiet ? el("span", { class: "stall" }, `none for ${num(r.since_data_s)} s`)
        : "ok";
    return el("tr", { class: quiet ? "bad" : off ? "warn" : "", "data-stream": r.name, title: `${r.type} · ${r.format} · ${r.source_id}` },
      el("td", { class: "sname" }, r.name, el("span", { class: "muted" }, ` ${r.type}`)),
      el("td", { class: "num" }, String(r.channels)),
      el("td", { class: "num" }, r.srate > 0 ? num(r.srate, 1) : "irreg."),
      el("td", { class: "num" }, measured === null ? "-" : num(measured, 1)), el("td", {}, data));
  });
  t.replaceChildren(head, ...body);
}

function renderRecording() {
  const box = document.getElementById("recording");
  const big = document.getElementById("rec-big");
  if (!rec) {
    box.replaceChildren(el("p", { class: "muted" }, "no recorder in this mesh"));
    big.classList.remove("on"); big.querySelector("span").textContent = "-";
    return;
  }
  document.getElementById("rec-module").textContent = rec.module || "";
  if (!rec.recording) {
    big.classList.remove("on"); big.querySelector("span").textContent = "-";
    fill(box, el("p", {}, el("span", { class: "badge" }, "not recording"),
      rec.last_file ? ` last file: ${rec.last_file}` : "", rec.unavailable ? ` (${rec.unavailable})` : ""));
    clearNotice("stall");
    return;
  }
  const secs = rec.seconds + (performance.now() - recAt) / 1000;
  big.classList.add("on"); big.querySelector("span").textContent = clock(secs);
  const stalled = new Set(rec.stalled || []);
  const rows = (rec.streams || []).map((s) => el("tr", { class: stalled.has(s.name) ? "bad" : "", "data-stream": s.name },
    el("td", {}, s.name), el("td", { class: "num" }, String(s.samples)),
    el("td", {}, stalled.has(s.name) ? el("span", { class: "stall" }, s.lost ? "LOST" : "STALLED") : s.gaps ? `${s.gaps} gaps` : "ok")));
  fill(box,
    el("div", { class: "recbig" }, el("span", { class: "badge bad" }, "REC"), " ", clock(secs), "  ", bytes(rec.bytes)),
    el("div", { class: "muted", title: rec.file }, rec.file),
    (rec.waiting_for || []).length ? el("div", { class: "stall" }, `waiting for ${rec.waiting_for.join(", ")}`) : null,
    el("table", { class: "grid", id: "rec-streams" },
      el("tr", {}, el("th", {}, "stream"), el("th", { class: "num" }, "samples"), el("th", {}, "")), ...rows),
    rec.error ? el("pre", { class: "reply bad" }, rec.error) : null);
  if (stalled.size) notice(`recording: ${[...stalled].join(", ")} stalled`, "bad", 0, "stall");
  else clearNotice("stall");
}

const OUTCOME_COLOURS = ["#2563eb", "#7c3aed", "#0891b2", "#b45309", "#4d7c0f", "#be185d"];
function outcomeColour(name) {  // the same outcome always the same colour, told apart at a glance
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return OUTCOME_COLOURS[h % OUTCOME_COLOURS.length];
}

function trialItem(t) {
  return el("li", { value: t.number, "data-trial": t.number },
    el("span", { class: "badge", style: `background:${t.error ? "var(--bad)" : outcomeColour(t.outcome)}` }, t.outcome), " ",
    ...t.states.map(([n, a, b]) => el("span", { class: "chip", title: `${a.toFixed(3)}-${b.toFixed(3)} s` },
      `${n} ${(b - a).toFixed(2)}s`)),
    el("span", { class: "muted" }, ` ${num(t.duration_s, 2)} s`));
}

function renderRunning() {
  const big = document.querySelector("#trial-big span");
  const st = document.getElementById("trial-state");
  if (!running) { big.textContent = "-"; st.textContent = ""; return; }
  const age = running.age_s + (performance.now() - runningAt) / 1000;
  big.textContent = String(running.number);
  st.textContent = `${running.state} ${age.toFixed(1)} s`;
}

export function init() {
  on("snapshot", (s) => {
    renderStreams(s.streams || []);
    rec = s.recording; recAt = performance.now();
    if (!rec && !s.recorder) rec = null;
    renderRecording();
    const b = s.bpod || { trials: [] };
    document.getElementById("trials").replaceChildren(...b.trials.slice().reverse().map(trialItem));
    document.getElementById("bpod-info").textContent = b.stream ? `from ${b.stream}` : "";
    running = b.running; runningAt = performance.now(); renderRunning();
  });
  on("streams", renderStreams);
  on("recording", (r) => { rec = r; recAt = performance.now(); renderRecording(); });
  on("bpod", (b) => {
    const ol = document.getElementById("trials");
    for (const t of b.finished) ol.prepend(trialItem(t));
    while (ol.children.length > 100) ol.lastChild.remove();
    running = b.running; runningAt = performance.now(); renderRunning();
  });
  setInterval(() => {  // the big numbers count on between pushes
    renderRunning();
    if (rec && rec.recording) {
      const secs = rec.seconds + (performance.now() - recAt) / 1000;
      document.querySelector("#rec-big span").textContent = clock(secs);
    }
  }, 250);
}
