// Command forms built from each module's HELP (names, types, defaults, required); a free-form
// field for modules without HELP. Values are sent as typed; a value the module cannot take is
// refused by the module itself, and its own words are shown next to the field.
import { on, el, post, get, json, state } from "./core.js";
import { modules } from "./modules.js";

const HIDDEN = new Set(["UP", "GET_PCOMMS", "HELP", "AUTH", "SUBSCRIBE", "EXPINFO", "EXPINIT",
  "EXPSTART", "EXPSTATUS", "EXPEND", "EXPINTERRUPT", "EXPCLEANUP"]);
const helpCache = new Map();  // module -> {pid, help}
let current = "";

function isStringType(t) { return t === "str" || t === "str or null"; }

// The value to send for one field: strings as typed; everything else as JSON when it parses,
// else as the text itself, so the module answers with its own type error.
export function fieldValue(text, type) {
  if (isStringType(type)) return text;
  try { return JSON.parse(text); } catch { return text; }
}

function shown(v) { return v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v); }

function field(module, cmd, p) {
  const id = `f-${module}-${cmd}-${p.name}`;
  const attrs = { id, name: p.name, "data-type": p.type, autocomplete: "off" };
  let input;
  if (p.type === "bool" || p.type === "bool or null") {
    input = el("select", attrs, el("option", { value: "" }, `(default ${shown(p.default)})`),
      el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
  } else if (["dict", "list", "dict or null", "list or null"].includes(p.type)) {
    input = el("textarea", { ...attrs, rows: 2, placeholder: p.required ? "required (JSON)" : shown(p.default) });
  } else {
    input = el("input", { ...attrs, type: "text", placeholder: p.required ? "required" : shown(p.default),
      inputmode: ["int", "float"].includes(p.type) ? "decimal" : null });
  }
  return el("label", { for: id }, el("span", {}, p.name + (p.required ? " *" : ""), " ", el("i", {}, p.type)), input);
}

async function send(form, module, cmd, out) {
  const kwargs = {};
  for (const inp of form.querySelectorAll("[name]")) {
    inp.classList.remove("bad");
    if (inp.value === "") continue;
    if (inp.name === "__extra") {  // more arguments, for commands that take any
      try { Object.assign(kwargs, JSON.parse(inp.value)); } catch (err) {
        out.className = "reply bad"; out.textContent = "more arguments: not a JSON object: " + err.message;
        return;
      }
      continue;
    }
    kwargs[inp.name] = fieldValue(inp.value, inp.dataset.type);
  }
  form.querySelectorAll(".fielderr").forEach((e) => e.remove());
  const btn = form.querySelector("button");
  btn.disabled = true;
  out.className = "reply"; out.textContent = "sent ...";
  const r = await post("/api/send", { module, cmd, kwargs });
  btn.disabled = false;
  out.className = "reply " + (r.ok ? "ok" : "bad");
  out.textContent = r.ok ? (r.result === null ? "ok (no reply data)" : json(r.result)) : r.error;
  if (!r.ok) {  // put the module's words next to the field it names
    const m = /argument '([^']+)'/.exec(r.error) || /required argument (\w+)/.exec(r.error);
    const inp = m && form.querySelector(`[name="${CSS.escape(m[1])}"]`);
    if (inp) {
      inp.classList.add("bad");
      inp.closest("label").after(el("div", { class: "fielderr", role: "alert" }, r.error));
    }
  }
}

function commandForm(module, c) {
  const out = el("pre", { class: "reply", "aria-live": "polite" });
  const form = el("form", { class: "cmdform", "data-cmd": c.name },
    ...c.kwargs.map((p) => field(module, c.name, p)),
    c.accepts_extra ? el("label", {}, el("span", {}, "more arguments ", el("i", {}, "JSON object")),
      el("textarea", { name: "__extra", rows: 2, placeholder: '{"key": "value"}' })) : null,
    el("div", {}, el("button", { type: "submit" }, `Send ${c.name}`)), out);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); send(form, module, c.name, out); });
  return el("details", { class: "cmd", "data-cmd": c.name },
    el("summary", {}, c.name, el("span", { class: "muted" }, c.doc || "")), form);
}

function freeForm(module, names) {
  const out = el("pre", { class: "reply", "aria-live": "polite" });
  const list = el("datalist", { id: `cmds-${module}` }, ...names.map((n) => el("option", { value: n })));
  const cmd = el("input", { name: "__cmd", list: list.id, placeholder: "COMMAND", "aria-label": "command" });
  const kw = el("textarea", { name: "__kwargs", rows: 2, placeholder: '{"key": "value"}', "aria-label": "arguments (JSON)" });
  const form = el("form", { class: "cmdform free" },
    el("label", {}, "command", cmd), el("label", {}, "arguments (JSON)", kw), list,
    el("div", {}, el("button", { type: "submit" }, "Send")), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let kwargs = {};
    if (kw.value.trim()) {
      try { kwargs = JSON.parse(kw.value); } catch (err) {
        out.className = "reply bad"; out.textContent = "arguments are not JSON: " + err.message; return;
      }
    }
    out.className = "reply"; out.textContent = "sent ...";
    const r = await post("/api/send", { module, cmd: cmd.value.trim(), kwargs });
    out.className = "reply " + (r.ok ? "ok" : "bad");
    out.textContent = r.ok ? (r.result === null ? "sent (no reply)" : json(r.result)) : r.error;
  });
  return form;
}

let rendered = "";  // module@pid shown now: a form being filled in is not redrawn under the user

async function show(module) {
  current = module;
  const box = document.getElementById("commands");
  const m = modules().get(module);
  if (!m) { box.replaceChildren(); rendered = ""; return; }
  if (rendered === `${module}@${m.last_pid}`) return;
  let cached = helpCache.get(module);
  if (!cached || cached.pid !== m.last_pid) {
    const r = await get(`/api/help/${encodeURIComponent(module)}`);
    cached = { pid: m.last_pid, help: r && r.help, error: r && r.error };
    if (!cached.error) helpCache.set(module, cached);
  }
  if (current !== module) return;
  const names = (m.commands || []).filter((n) => !HIDDEN.has(n.toUpperCase()));
  const kids = [];
  if (cached.help && Array.isArray(cached.help.commands)) {
    for (const c of cached.help.commands) if (!HIDDEN.has(c.name.toUpperCase())) kids.push(commandForm(module, c));
    kids.push(el("details", { class: "cmd" }, el("summary", {}, "other command",
      el("span", { class: "muted" }, "free form")), freeForm(module, m.commands || [])));
  } else {
    kids.push(el("p", { class: "muted" }, cached.error ? `HELP unavailable: ${cached.error}`
      : `${module} has no HELP: type the command and its arguments.`), freeForm(module, names));
  }
  box.replaceChildren(...kids);
  box.dataset.module = module;
  if (!cached.error) rendered = `${module}@${m.last_pid}`;
}

function options(list) {
  const sel = document.getElementById("cmd-module");
  const keep = sel.value;
  sel.replaceChildren(...list.map((m) => el("option", { value: m.name }, m.name)));
  if (list.some((m) => m.name === keep)) sel.value = keep;
  return sel.value;
}

function activity(text, cls) {
  const ol = document.getElementById("activity");
  ol.prepend(el("li", {}, ...text, cls));
  while (ol.children.length > 40) ol.lastChild.remove();
}

export function init() {
  const sel = document.getElementById("cmd-module");
  sel.addEventListener("change", () => show(sel.value));
  on("snapshot", (s) => { rendered = ""; const v = options(s.modules); if (v) show(v); });
  on("status", (e) => {  // a restarted module may have other commands: ask its HELP again
    if (e.module === current && e.state === "ready") setTimeout(() => show(current), 50);
  });
  on("reply", (e) => {
    const ok = e.ok ? el("span", { class: "ok-t" }, " ok") : el("span", { class: "bad-t" }, " failed");
    activity([`${new Date(e.time * 1000).toLocaleTimeString([], { hour12: false })} ${e.source} -> ${e.module} ${e.cmd} (${e.ms} ms)`], ok);
  });
}

export { state };
