// Live plots drawn with uPlot from min/max columns the control room computes (plot.py):
// "main" is any numeric stream, stacked channels; "decoder" is the decoder's output with its
// on/off thresholds. Each frame brings only the newly completed columns; the page keeps a ring.
import { on, el, post, state, num } from "./core.js";

const COLORS = ["#1f2937", "#2563eb", "#059669", "#b45309", "#7c3aed", "#be123c"];
// The main plot's frames received, its repaints (frames that arrive within one animation frame
// share one), repaints per second and the smoothed ms a repaint takes (uPlot's drawing included).
export const stats = { frames: 0, draws: 0, fps: 0, drawMs: 0 };
window.dashStats = stats;

function decode(b64) {
  const s = atob(b64);
  const u = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
  return new Float32Array(u.buffer);
}

class Ring {  // the last `cols` columns of min/max per channel
  constructor(info) {
    this.info = info; this.C = info.cols; this.ch = info.channels;
    this.col = new Float64Array(this.C).fill(-1);
    this.min = new Float32Array(this.C * this.ch); this.max = new Float32Array(this.C * this.ch);
    this.newest = -1; this.dirty = false;
  }
  add(f) {
    const mins = decode(f.min), maxs = decode(f.max), ch = this.ch;
    f.cols.forEach((c, i) => {
      const s = c % this.C;
      this.col[s] = c;
      this.min.set(mins.subarray(i * ch, (i + 1) * ch), s * ch);
      this.max.set(maxs.subarray(i * ch, (i + 1) * ch), s * ch);
      if (c > this.newest) this.newest = c;
    });
    this.dirty = true;
  }
  // [x, per channel [y...]] as min/max pairs (a zig-zag that covers each column's envelope).
  // A dense stream shows a hole where columns are empty; a sparse one (less than a sample per
  // column, or irregular) is drawn point to point.
  series(chans, map) {
    const { C, ch, info } = this;
    const sparse = !(info.srate * info.dt >= 1);
    const xs = [], at = [];  // x of each point pair, and its column's ring slot (-1: empty)
    for (let i = 0; i < C; i++) {
      const c = this.newest - C + 1 + i, s = ((c % C) + C) % C, ok = this.col[s] === c;
      if (!ok && sparse) continue;
      const x = (c - this.newest) * info.dt;
      xs.push(x, x);
      at.push(ok ? s * ch : -1);
    }
    const out = [xs];
    for (let j = 0; j < chans.length; j++) {  // channel by channel: one array filled at a time
      const k = chans[j], y = [];
      for (const o of at) {
        if (o < 0) y.push(null, null);
        else y.push(map(this.min[o + k], j), map(this.max[o + k], j));
      }
      out.push(y);
    }
    return out;
  }
}

const PAD_RIGHT = 16;  // uPlot's right padding (room for the last time label), in CSS pixels
const slots = {  // axis: the y axis' width; the plotting area is the box less it and PAD_RIGHT
  main: { box: "plot", axis: 60, seconds: () => Number(document.getElementById("plot-seconds").value), ring: null, u: null, key: "" },
  decoder: { box: "decoder", axis: 40, seconds: () => 30, ring: null, u: null, key: "" },
};
let decoder = { stream: "decoder_output", params: { on_threshold: 0.6, off_threshold: 0.4 } };
let visible = [];  // numeric streams seen in the stream table

function cols(slot) {  // one column per pixel of the plotting area
  const w = (document.getElementById(slot.box).clientWidth || 600) - slot.axis - PAD_RIGHT;
  return Math.max(50, Math.min(1000, Math.round(w)));
}

// One request at a time per slot, in order, so the control room ends with what was asked last.
// The key is known before the reply (the same as plot.py's feed_key): a feed that already runs
// may send its first frames before the reply arrives.
function subscribe(name, stream) {
  const slot = slots[name];
  if (!state.page) return;
  const body = { page: state.page, slot: name, stream: stream || null, seconds: slot.seconds(), cols: cols(slot) };
  const key = stream ? `${stream}|${body.seconds}|${body.cols}` : "";
  const sig = `${state.page}/${key}`;
  if (sig === slot.sent) return;
  slot.sent = sig;
  if (key !== slot.key) { slot.key = key; slot.ring = null; }
  if (!stream) empty(slot, name === "main" ? "choose a stream" : "no decoder output yet");
  slot.chain = (slot.chain || Promise.resolve()).then(async () => {
    const r = await post("/api/plot", body);
    if (!r.ok) { slot.sent = ""; empty(slot, r.error); }
  });
}

function empty(slot, text) {
  if (slot.u) { slot.u.destroy(); slot.u = null; }
  document.getElementById(slot.box).replaceChildren(el("div", { class: "empty" }, text));
}

function makeMain(slot, info) {
  const box = document.getElementById(slot.box);
  box.replaceChildren();
  const n = info.channels, every = Math.max(1, Math.ceil(n / Math.max(1, box.clientHeight / 14)));
  const offsets = [...Array(n).keys()].map((c) => n - 1 - c);
  slot.scale = null;
  slot.u = new uPlot({
    width: box.clientWidth, height: box.clientHeight, legend: { show: false }, cursor: { show: false },
    padding: [null, PAD_RIGHT, null, null],
    scales: { x: { time: false, range: [-info.seconds, 0] }, y: { range: [-1, n] } },
    axes: [{ values: (u, v) => v.map((x) => x + " s") },
      { size: slot.axis, splits: () => offsets.filter((o, c) => c % every === 0),
        values: (u, v) => v.map((o) => info.labels[n - 1 - o] || "") }],
    series: [{}, ...info.labels.map((l, c) => ({ label: l, stroke: COLORS[c % COLORS.length], width: 1, points: { show: false } }))],
  }, null, box);
}

function drawMain(slot) {
  const r = slot.ring, n = r.ch, chans = [...Array(n).keys()];
  if (!slot.scale || stats.draws % 10 === 0) {  // per-channel centre, one common scale
    const centre = [], ranges = [];
    for (let k = 0; k < n; k++) {
      let lo = Infinity, hi = -Infinity, sum = 0, cnt = 0;
      for (let s = 0; s < r.C; s++) {
        if (r.col[s] < 0) continue;
        const a = r.min[s * n + k], b = r.max[s * n + k];
        if (!isFinite(a) || !isFinite(b)) continue;
        lo = Math.min(lo, a); hi = Math.max(hi, b); sum += a + b; cnt += 2;
      }
      centre.push(cnt ? sum / cnt : 0); ranges.push(hi > lo ? hi - lo : 0);
    }
    const sorted = ranges.filter((x) => x > 0).sort((a, b) => a - b);
    slot.scale = { centre, span: sorted.length ? sorted[Math.floor(sorted.length / 2)] : 1 };
  }
  const { centre, span } = slot.scale;
  slot.u.setData(r.series(chans, (v, j) => (v - centre[j]) / span + (n - 1 - j)));
}

function makeDecoder(slot, info) {
  const box = document.getElementById(slot.box);
  box.replaceChildren();
  slot.pIndex = Math.max(0, info.labels.findIndex((l) => l.startsWith("p_")));
  slot.cIndex = info.labels.indexOf("control");
  const p = info.labels[slot.pIndex] || "output";
  slot.u = new uPlot({
    width: box.clientWidth, height: box.clientHeight - 36, legend: { show: true, live: false },
    padding: [null, PAD_RIGHT, null, null],
    cursor: { show: false }, scales: { x: { time: false, range: [-info.seconds, 0] }, y: { range: [-0.05, 1.05] } },
    axes: [{ values: (u, v) => v.map((x) => x + " s") }, { size: slot.axis }],
    series: [{}, { label: p, stroke: "#2563eb", width: 2, points: { show: false } },
      { label: "on", stroke: "#16a34a", dash: [6, 4], width: 1.5, points: { show: false } },
      { label: "off", stroke: "#dc2626", dash: [6, 4], width: 1.5, points: { show: false } },
      { label: "control", stroke: "#9ca3af", fill: "rgba(22,163,74,.12)", width: 1, points: { show: false } }],
  }, null, box);
}

function drawDecoder(slot) {
  const r = slot.ring;
  const chans = [slot.pIndex, slot.cIndex >= 0 ? slot.cIndex : slot.pIndex];
  const [xs, p, ctl] = r.series(chans, (v) => v);
  const { on_threshold: onT, off_threshold: offT } = decoder.params;
  slot.u.setData([xs, p, xs.map(() => onT), xs.map(() => offT),
    slot.cIndex >= 0 ? ctl : xs.map(() => null)]);
  const last = [...ctl].reverse().find((v) => v !== null);
  document.getElementById("decoder-info").textContent = `${decoder.stream} · on ${num(onT, 2)} / off ${num(offT, 2)}`
    + (slot.cIndex >= 0 && last !== undefined ? ` · ${last > 0.5 ? "ON" : "off"}` : "");
}

function fillStreams(rows) {
  visible = rows.filter((r) => r.format !== "string");
  const sel = document.getElementById("plot-stream");
  const keep = sel.value || localStorage.getItem("plot-stream") || "";
  const names = [...new Set(visible.map((r) => r.name))];
  sel.replaceChildren(el("option", { value: "" }, "(choose a stream)"), ...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(keep)) sel.value = keep;
  else if (!keep && names.length) sel.value = (visible.find((r) => r.srate > 0) || visible[0]).name;
  return sel.value;
}

let rate = { t: performance.now(), draws: 0 };
function loop() {
  for (const [name, slot] of Object.entries(slots)) {
    if (!slot.ring || !slot.u || !slot.ring.dirty) continue;
    slot.ring.dirty = false;
    if (name === "main") {
      const t = performance.now();
      slot.u.batch(() => drawMain(slot));  // uPlot draws now, not in a microtask: timed too
      stats.drawMs = 0.9 * stats.drawMs + 0.1 * (performance.now() - t);  // smoothed
      stats.draws++;
    } else drawDecoder(slot);
  }
  const now = performance.now();
  if (now - rate.t >= 1000) {
    stats.fps = (1000 * (stats.draws - rate.draws)) / (now - rate.t);
    rate = { t: now, draws: stats.draws };
    const r = slots.main.ring;
    if (r) document.getElementById("plot-info").textContent =
      `${r.ch} ch · ${r.info.srate > 0 ? num(r.info.srate, 0) + " Hz" : "irregular"} · ${num(stats.fps, 0)} frames/s`;
  }
  requestAnimationFrame(loop);
}

function resubscribe() {
  const want = document.getElementById("plot-stream").value;
  subscribe("main", want);
  const dec = visible.some((r) => r.name === decoder.stream) ? decoder.stream : null;
  subscribe("decoder", dec);
}

export function init() {
  empty(slots.main, "choose a stream"); empty(slots.decoder, "no decoder output yet");
  const sel = document.getElementById("plot-stream");
  sel.addEventListener("change", () => { localStorage.setItem("plot-stream", sel.value); subscribe("main", sel.value); });
  document.getElementById("plot-seconds").addEventListener("change", () => subscribe("main", sel.value));
  on("snapshot", (s) => {
    if (s.decoder) decoder = s.decoder;
    fillStreams(s.streams || []);
    resubscribe();
  });
  on("streams", (rows) => {
    const before = sel.value, hadDecoder = visible.some((r) => r.name === decoder.stream);
    const now = fillStreams(rows);
    if (now !== before) subscribe("main", now);
    if (visible.some((r) => r.name === decoder.stream) !== hadDecoder) resubscribe();
  });
  on("decoder", (d) => { decoder = d; if (slots.decoder.ring) slots.decoder.ring.dirty = true; });
  on("plotinfo", (info) => {
    const name = Object.keys(slots).find((k) => slots[k].key === info.key);
    const slot = slots[name];
    if (!slot) return;
    if (info.error) { slot.ring = null; empty(slot, `${info.stream}: ${info.error}`); return; }
    slot.ring = new Ring(info);
    (name === "main" ? makeMain : makeDecoder)(slot, info);
  });
  on("plot", (f) => {
    for (const [name, slot] of Object.entries(slots)) {
      if (slot.key !== f.key || !slot.ring) continue;
      slot.ring.add(f);
      if (name === "main") stats.frames++;
    }
  });
  let t = null;
  window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(resubscribe, 300); });
  requestAnimationFrame(loop);
}
