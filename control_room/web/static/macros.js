// Macros: default arguments editable, a run button, each step's progress as it finishes.
import { on, el, fill, post, notice, json } from "./core.js";
import { fieldValue } from "./commands.js";

let run = null;  // {macro, state, steps: [], total, error}

function macroBox(m) {
  const fields = Object.entries(m.defaults || {}).map(([k, v]) => {
    const type = typeof v === "string" ? "str" : "any";
    const id = `m-${m.name}-${k}`;
    const text = typeof v === "string" ? v : JSON.stringify(v);
    const input = text.length > 40
      ? el("textarea", { id, name: k, "data-type": type, rows: 2 }, text)
      : el("input", { id, name: k, "data-type": type, value: text });
    return el("label", { for: id }, el("span", {}, k), input);
  });
  const form = el("form", { class: "cmdform", "data-macro": m.name }, ...fields);
  const btn = el("button", { type: "button", class: "run", "data-macro": m.name }, "Run");
  btn.addEventListener("click", async () => {
    const kwargs = {};
    for (const inp of form.querySelectorAll("[name]")) kwargs[inp.name] = fieldValue(inp.value, inp.dataset.type);
    btn.disabled = true;
    const r = await post("/api/macro", { name: m.name, kwargs });
    btn.disabled = false;
    if (!r.ok) notice(`macro ${m.name}: ${r.error}`, "bad", 8000);
  });
  return el("div", { class: "macro" },
    el("div", { class: "title" }, el("b", {}, m.name), el("span", { class: "muted" }, `${m.steps} steps`), btn),
    m.description ? el("div", { class: "muted" }, m.description) : null,
    fields.length ? el("details", {}, el("summary", {}, "arguments"), form) : null);
}

function renderRun() {
  const box = document.getElementById("macro-run");
  const big = document.querySelector("#macro-big span");
  if (!run) { box.replaceChildren(); big.textContent = "-"; return; }
  const main = run.steps.filter((s) => s.section !== "finally");
  const pct = run.total ? Math.min(100, (100 * main.length) / run.total) : 0;
  const cancel = el("button", { type: "button", class: "danger", onclick: () => post("/api/cancel", {}) }, "Cancel");
  const steps = run.steps.map((s) => el("li", { class: s.ok ? "" : "bad", value: s.index },
    `${s.section === "finally" ? "finally: " : ""}${s.label || [s.module, s.cmd].filter(Boolean).join(" ") || s.kind}`,
    " ", el("span", { class: s.ok ? "ok-t" : "bad-t" }, s.ok ? "ok" : "FAILED"),
    el("span", { class: "muted" }, ` ${Number(s.duration_s || 0).toFixed(2)} s`),
    s.error ? el("div", {}, s.error) : null));
  const head = `${run.macro}: ${run.state}` + (run.total ? ` (${main.length}/${run.total})` : "");
  fill(box,
    el("h3", { id: "macro-state", "data-state": run.state }, head),
    el("div", { class: "progress" }, el("div", { style: `width:${pct}%` })),
    run.error ? el("pre", { class: "reply bad" }, json(run.error)) : null,
    el("ol", { class: "steps", id: "macro-steps" }, ...steps),
    run.state === "running" ? cancel : null);
  big.textContent = run.state === "running" ? `${run.macro} ${main.length}/${run.total || "?"}` : "-";
  const ol = box.querySelector("ol.steps");
  ol.scrollTop = ol.scrollHeight;
}

export function init() {
  let defs = [];
  on("snapshot", (s) => {
    defs = s.macros;
    document.getElementById("macros").replaceChildren(...s.macros.map(macroBox));
    run = s.macro;
    renderRun();
  });
  on("macro", (e) => {
    if (e.state === "started") {
      const d = defs.find((m) => m.name === e.macro);
      run = { macro: e.macro, state: "running", steps: [], total: d ? d.steps : 0 };
    } else if (run && e.macro === run.macro) {
      if (e.state === "step") run.steps.push(e.step);
      else { run.state = e.state; run.error = e.error || null; }
    }
    renderRun();
  });
}
