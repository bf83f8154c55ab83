// StreamFX pages, what both share: the notices, the server's info, the style gallery, the
// control channel and its controls, the stats. The call page (call.js) sends this browser's
// camera; the camera's control page (camera.js) shows `streamfx camera`'s. Loaded after
// rtc.js ($, iceGatheringDone, postOffer, inboundStats, playAudio).
"use strict";

const state = {
  pc: null, channel: null, stream: null, sendStream: null, serverStats: null,
  node: null, socket: null, moving: false, moves: [],  // in a cluster: the node holding the call, the front door's socket
  rtt: [], framesReceived: 0, connection: "idle", info: null, errors: [], acks: [],
  notices: [],  // what the notice bar shows: {text, kind, count}, the last MAX_NOTICES
  generating: null,  // a text prompt in work: {step, of} (progress from the server), else null
  micMuted: false, micError: null,  // the mute switch; why the call has no microphone (null: it has one)
  mode: "call",  // "call": this browser's camera goes to a server; "camera": `streamfx camera`'s control page
};
window.streamfx = state;  // read by tests and benchmarks

// ---------------------------------------------------------------- notices and badges
// The notice bar keeps the last MAX_NOTICES messages; a message repeated back to back is
// shown once with a count ("x3"), so a retry loop or a chatty server cannot grow the page.
// notice("") clears the bar. state.errors keeps the last MAX_NOTICES error texts the same way.
const MAX_NOTICES = 5;
function remember(list, text) {
  const last = list[list.length - 1];
  if (last && last.text === text) { last.count++; return false; }
  list.push({ text, count: 1 });
  if (list.length > MAX_NOTICES) list.splice(0, list.length - MAX_NOTICES);
  return true;
}
const errorLog = [];  // {text, count} behind state.errors
function recordError(text) {
  remember(errorLog, text);
  state.errors = errorLog.map((e) => e.text);
}
function notice(text, kind = "error") {
  if (!text) state.notices = [];
  else {
    state.notices = state.notices.filter((n) => n.kind !== "info");  // an info line is replaced by what follows it
    const last = state.notices[state.notices.length - 1];
    if (last && last.text === text && last.kind === kind) last.count++;
    else state.notices.push({ text, kind, count: 1 });
    if (state.notices.length > MAX_NOTICES) state.notices.splice(0, state.notices.length - MAX_NOTICES);
  }
  renderNotices();
}
function renderNotices() {
  const el = $("notice");
  el.hidden = state.notices.length === 0;
  el.replaceChildren(...state.notices.map((n) => {
    const line = document.createElement("div");
    line.className = "notice-line" + (n.kind === "info" ? " info" : "");
    line.textContent = n.text;
    if (n.count > 1) {
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = "x" + n.count;
      line.append(" ", count);
    }
    return line;
  }));
  el.className = "notice" + (state.notices.length && state.notices.every((n) => n.kind === "info") ? " info" : "");
}
function badge(id, text, cls) { const el = $(id); el.textContent = text; el.className = "badge " + (cls || ""); }
function setConnection(s) {
  state.connection = s;
  badge("state", s, s === "connected" ? "ok" : (s === "failed" || s === "closed") ? "bad" : "wait");
  $("reconnect").disabled = s === "idle";
}

// ---------------------------------------------------------------- server info
async function loadInfo() {
  try {
    const res = await fetch("/api/info", { cache: "no-store" });
    if (res.status === 401) { notice("This server needs a token: open the URL it printed (with ?token=...)."); return null; }
    const info = await res.json();
    state.info = info;
    if (info.state === "loading") { badge("engine", "loading model…", "wait"); setTimeout(loadInfo, 1000); return info; }
    if (info.state === "failed") { badge("engine", "engine failed", "bad"); notice("The engine failed to load: " + info.error); return info; }
    badge("engine", "engine: " + info.engine, "ok");
    fillSelect($("preset"), ["", ...info.presets], "(none)");
    renderGallery(info.presets);
    fillSelect($("quality"), info.qualities);
    $("engine-help").textContent = info.description + (info.engine === "3dpe" ? "" :
      " For 3DPE edits, download the official 3dpe.pt and run `streamfx weights import 3dpe.pt` (see README).");
    return info;
  } catch (err) {
    badge("engine", "server unreachable", "bad");
    notice("Cannot reach the StreamFX server. Is it still running (make run)? Retrying…");
    setTimeout(loadInfo, 2000);
    return null;
  }
}
function fillSelect(select, values, emptyLabel) {
  const current = select.value;
  select.innerHTML = "";
  for (const v of values) {
    const opt = document.createElement("option");
    opt.value = v; opt.textContent = v || emptyLabel;
    select.appendChild(opt);
  }
  if (values.includes(current)) select.value = current;
}

// ---------------------------------------------------------------- style gallery
// One tile per style: its thumbnail (/api/styles/NAME/thumbnail; a style without an image
// shows its name alone) and its name. A click chooses it, as the preset list does.
function renderGallery(names) {
  const gallery = $("gallery");
  gallery.replaceChildren(...names.map((name) => {
    const tile = document.createElement("button");
    tile.className = "style-tile"; tile.dataset.name = name; tile.title = name; tile.type = "button";
    const img = document.createElement("img");
    img.alt = ""; img.loading = "lazy"; img.width = 56; img.height = 56;
    img.onerror = () => img.remove();
    img.src = `/api/styles/${encodeURIComponent(name)}/thumbnail`;
    const label = document.createElement("span");
    label.textContent = name;
    tile.append(img, label);
    tile.onclick = () => choosePreset(name);
    return tile;
  }));
  markGallery();
}
function markGallery() {
  for (const tile of $("gallery").children) tile.setAttribute("aria-pressed", String(tile.dataset.name === $("preset").value));
}
function choosePreset(name) {
  $("preset").value = name;
  markGallery();
  send(name ? { type: "prompt", preset: name } : { type: "prompt", clear: true });
}

// ---------------------------------------------------------------- control channel
// The page's control channel on `pc`. A call pushes the page's settings when it opens; the
// camera's page takes the camera's (pushControls false).
function openControlChannel(pc, pushControls) {
  const channel = pc.createDataChannel("control");
  state.channel = channel;
  channel.onopen = () => { send({ type: "hello" }); if (pushControls) sendAllControls(); };
  channel.onmessage = (ev) => onControlMessage(JSON.parse(ev.data));
  return channel;
}
function send(msg) {
  if (state.channel && state.channel.readyState === "open") state.channel.send(JSON.stringify(msg));
}
// Sliders fire `input` for every step they pass; at most one message per SLIDER_MS goes out
// (the first at once, the latest when the interval ends) and `change` sends the final value.
const SLIDER_MS = 100;
function throttled(makeMessage, ms = SLIDER_MS) {
  let lastAt = -Infinity, timer = null, lastSent = null;
  const fire = () => {
    timer = null; lastAt = performance.now();
    const msg = makeMessage();
    lastSent = JSON.stringify(msg);
    send(msg);
  };
  const onInput = () => {
    if (timer) return;  // a trailing send is already due; it reads the value then
    const wait = lastAt + ms - performance.now();
    if (wait <= 0) fire(); else timer = setTimeout(fire, wait);
  };
  onInput.flush = () => {  // the final value, now, unless it is exactly what went out last
    if (timer) { clearTimeout(timer); fire(); }
    else if (JSON.stringify(makeMessage()) !== lastSent) fire();
  };
  return onInput;
}
function poseMessage() {
  return { type: "pose", mode: $("pose").value, yaw: Number($("yaw").value), pitch: Number($("pitch").value) };
}
function showPose() { $("yawv").textContent = $("yaw").value + "°"; $("pitchv").textContent = $("pitch").value + "°"; }
const strengthInput = throttled(() => ({ type: "strength", value: Number($("strength").value) }));
const poseInput = throttled(poseMessage);
function sendPose() { showPose(); send(poseMessage()); }
function sendAllControls() {
  sendPose();
  send({ type: "quality", preset: $("quality").value || "auto" });
  send({ type: "bypass", on: $("bypass").checked });
  send({ type: "strength", value: Number($("strength").value) });
  if ($("preset").value) send({ type: "prompt", preset: $("preset").value });
}
const statsHooks = [];  // more to do with each stats message (the camera page's notices)
function onControlMessage(msg) {
  if (msg.type === "stats") { state.serverStats = msg; renderStats(); statsHooks.forEach((hook) => hook(msg)); }
  else if (msg.type === "error") { recordError(msg.message); notice(msg.message); showGenerating(null); }
  else if (msg.type === "progress" && msg.for === "prompt") showGenerating({ step: msg.step, of: msg.of });
  else if (msg.type === "ack") {
    state.acks.push(msg.for);
    if (state.acks.length > 50) state.acks.splice(0, state.acks.length - 50);
    if (msg.for === "prompt") { notice(""); showGenerating(null); showReference(msg); }
  }
  else if (msg.type === "info") { state.info = { ...state.info, ...msg }; }
}

// A reference image is shrunk in the page to at most 512 px (JPEG) so that it fits one
// data-channel message; the server checks size and format again.
async function sendReference(file) {
  if (!file.type.startsWith("image/")) { notice("Pick an image file (PNG, JPEG, WebP)."); return; }
  let bitmap;
  try { bitmap = await createImageBitmap(file); } catch { notice("That file is not a readable image."); return; }
  const scale = Math.min(1, 512 / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale); canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  notice("Preparing the reference…", "info");
  send({ type: "prompt", image: canvas.toDataURL("image/jpeg", 0.9) });
}

// ---------------------------------------------------------------- stats overlay
function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
function renderStats() {
  const s = state.serverStats || {};
  const lines = [`state ${state.connection}   engine ${s.engine || "?"}` +
      (s.backend ? `   ${s.device || ""} ${s.backend} ${s.precision}` : ""),
    // the headline: frames the engine edited (3dpe renders them from the latest tri-planes)
    `edited ${s.renderer_fps ?? s.fps_out ?? "-"} fps` +
      (s.frames_passed !== undefined ? `  passed through ${s.frames_passed}` : "") +
      (s.planes_age !== undefined && s.planes_age !== null ? `  planes age ${s.planes_age}` : ""),
    `fps in ${s.fps_in ?? "-"}  out ${s.fps_out ?? "-"}  dropped ${s.dropped ?? 0}`,
    `server latency p50 ${s.latency_ms?.p50 ?? "-"} ms  p95 ${s.latency_ms?.p95 ?? "-"} ms`];
  const rtt = state.rtt.slice(-100);
  if (rtt.length) lines.push(`round trip p50 ${percentile(rtt, 50).toFixed(1)} ms`);
  for (const [k, v] of Object.entries(s.stages_ms || {})) lines.push(`  ${k.padEnd(10)} ${v.toFixed(1)} ms`);
  if (s.camera !== undefined) {  // streamfx camera: its source, outputs and microphone
    lines.push(`camera ${s.camera}   read to output p50 ${s.handoff_ms ?? "-"} ms`);
    if (s.outputs && s.outputs.length) lines.push("to " + s.outputs.join(", "));
    if (s.mic) lines.push(`mic ${s.mic.state}   delay ${s.mic.delay_ms ?? "-"} ms (offset ${s.mic.offset_ms ?? 0})`);
  }
  for (const k of ["preset", "strength", "encoder_fps", "face", "pose_clamped"]) {
    if (s[k] !== undefined) lines.push(`${k} ${s[k]}`);
  }
  $("stats").textContent = lines.join("\n");
}

// ---------------------------------------------------------------- text prompts
// A text is a style name, or (servers started with --text-model) an edit generated from the
// caller's face in the background: the button counts the steps, the ack brings a thumbnail.
function showGenerating(progress) {
  state.generating = progress;
  $("generate").textContent = progress ? (progress.of ? `generating ${progress.step}/${progress.of}` : "generating…") : "Generate";
}
function showReference(ack) {
  if (ack.chose) notice(`No style is called that; using the closest, "${ack.chose}".`, "info");
  else if (typeof ack.note === "string") notice(ack.note, "info");
  const img = $("prompt-thumb");
  const thumb = typeof ack.thumbnail === "string" && ack.thumbnail.startsWith("data:image/jpeg;base64,") ? ack.thumbnail : null;
  img.hidden = !thumb;
  if (thumb) { img.src = thumb; img.title = ack.generated ? `generated: ${ack.text}` : (ack.chose || ""); }
}
function sendText() {
  const text = $("prompt-text").value.trim();
  if (!text) { notice("Type a style name or an edit first.", "info"); return; }
  if (!state.channel || state.channel.readyState !== "open") { notice("Start the call first.", "info"); return; }
  showGenerating({ step: 0, of: 0 });
  send({ type: "prompt", text });
}

// ---------------------------------------------------------------- wiring (both pages)
// Elements marked data-only="call" or data-only="camera" belong to one page.
function applyMode(mode) {
  state.mode = mode;
  document.body.dataset.mode = mode;
  for (const el of document.querySelectorAll("[data-only]")) el.hidden = el.dataset.only !== mode;
}
$("stats").onclick = () => $("stats").classList.toggle("collapsed");
$("stats").title = "click to fold or unfold the stats";
$("view").onchange = () => { $("videos").className = $("view").value; };
$("preset").onchange = () => choosePreset($("preset").value);
$("reference").onchange = (ev) => { if (ev.target.files[0]) sendReference(ev.target.files[0]); };
$("generate").onclick = sendText;
$("prompt-text").onkeydown = (ev) => { if (ev.key === "Enter") sendText(); };
$("clear").onclick = () => choosePreset("");
$("strength").oninput = strengthInput;
$("strength").onchange = strengthInput.flush;
for (const id of ["pose", "yaw", "pitch"]) {
  $(id).oninput = () => { showPose(); poseInput(); };
  $(id).onchange = () => { showPose(); poseInput.flush(); };
}
$("quality").onchange = () => send({ type: "quality", preset: $("quality").value });
$("bypass").onchange = () => send({ type: "bypass", on: $("bypass").checked });
if (new URLSearchParams(location.search).has("bypass")) $("bypass").checked = true;
setInterval(renderStats, 1000);

// The server says which page this is: a call (bootCall, call.js) or the camera's (bootCamera, camera.js).
function startPage() {
  loadInfo().then((info) => {
    applyMode(info && info.mode === "camera" ? "camera" : "call");
    if (state.mode === "camera") bootCamera(info); else bootCall();
  });
}
