// StreamFX browser client: camera and microphone -> WebRTC -> server filter -> back, plus the
// control channel. Loaded after rtc.js ($, iceGatheringDone, inboundStats, playAudio).
"use strict";

const state = {
  pc: null, channel: null, stream: null, sendStream: null, serverStats: null,
  node: null, socket: null, moving: false, moves: [],  // in a cluster: the node holding the call, the front door's socket
  rtt: [], framesReceived: 0, connection: "idle", info: null, errors: [], acks: [],
  notices: [],  // what the notice bar shows: {text, kind, count}, the last MAX_NOTICES
  generating: null,  // a text prompt in work: {step, of} (progress from the server), else null
  micMuted: false, micError: null,  // the mute switch; why the call has no microphone (null: it has one)
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

// ---------------------------------------------------------------- camera
async function listCameras() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  const cams = devices.filter((d) => d.kind === "videoinput");
  const select = $("camera");
  const current = select.value;
  select.innerHTML = "";
  cams.forEach((d, i) => {
    const opt = document.createElement("option");
    opt.value = d.deviceId; opt.textContent = d.label || `camera ${i + 1}`;
    select.appendChild(opt);
  });
  if (current) select.value = current;
}

function videoConstraints() {
  const deviceId = $("camera").value;
  const params = new URLSearchParams(location.search);
  const video = { width: { ideal: Number(params.get("w")) || 640 }, height: { ideal: Number(params.get("h")) || 480 },
    frameRate: { ideal: 30 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  return video;
}
// The microphone is asked for with the camera (one prompt). Refused, absent or busy, the call
// goes on with video only: audio never stops a call. ?nomic in the URL leaves it out.
const WANT_MIC = !new URLSearchParams(location.search).has("nomic");
async function openCamera() {
  if (!navigator.mediaDevices?.getUserMedia) throw new Error("This browser cannot open a camera here (a secure context — https or localhost — is needed).");
  const video = videoConstraints();
  state.micError = WANT_MIC ? null : "not asked for (?nomic)";
  if (WANT_MIC) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
      state.micError = stream.getAudioTracks().length ? null : "no microphone";
      return stream;
    } catch (err) { state.micError = err.name + ": " + err.message; }  // the camera alone is tried next
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: false });
  } catch (err) { throw cameraError(err); }
}
function cameraError(err) {
  if (err.name === "NotAllowedError") return new Error("Camera permission was denied. Allow camera access for this site in the browser's settings, then press Start.");
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") return new Error("No usable camera was found. Plug one in or pick another, then press Start.");
  if (err.name === "NotReadableError") return new Error("The camera is in use by another program.");
  return err;
}

// The mute switch: a muted track sends silence; the state outlives a Reconnect.
function setMicMuted(muted) {
  state.micMuted = muted;
  const tracks = state.stream ? state.stream.getAudioTracks() : [];
  for (const track of tracks) track.enabled = !muted;
  const button = $("mute");
  button.disabled = tracks.length === 0;
  button.setAttribute("aria-pressed", String(muted));
  button.title = tracks.length ? (muted ? "the microphone is muted: click to unmute" : "mute the microphone")
    : "no microphone: the call is video only" + (state.micError ? ` (${state.micError})` : "");
}

// ---------------------------------------------------------------- round-trip stamping
// With "measure round trip", frames go through a canvas that writes a frame number as
// black/white blocks; the returned video is read back and matched to the send time.
const STAMP_BITS = 12, STAMP_X = 24, STAMP_Y = 24, STAMP_B = 24;
const sentAt = new Map();
let stampWidth = 0;  // width of the frames the stamps were drawn on
function stampedStream(cameraStream) {
  const video = document.createElement("video");
  video.srcObject = cameraStream; video.muted = true; video.play();
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  let n = 0;
  const draw = () => {
    if (video.videoWidth) {
      if (canvas.width !== video.videoWidth) { canvas.width = video.videoWidth; canvas.height = video.videoHeight; }
      stampWidth = canvas.width;
      ctx.drawImage(video, 0, 0);
      const id = (n++ % ((1 << STAMP_BITS) - 1)) + 1;
      for (let b = 0; b < STAMP_BITS; b++) {
        ctx.fillStyle = (id >> b) & 1 ? "#fff" : "#000";
        ctx.fillRect(STAMP_X + b * STAMP_B, STAMP_Y, STAMP_B, STAMP_B);
      }
      sentAt.set(id, performance.now());
    }
    video.requestVideoFrameCallback(draw);
  };
  video.requestVideoFrameCallback(draw);
  return canvas.captureStream(30);
}
function watchReturn(remote) {
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = (now) => {
    state.framesReceived++;
    if ($("measure").checked && remote.videoWidth && stampWidth) {
      // the returned video may be scaled: read the stamp region back at the sent scale
      const k = remote.videoWidth / stampWidth;
      canvas.width = STAMP_X + STAMP_BITS * STAMP_B; canvas.height = STAMP_Y + STAMP_B;
      ctx.drawImage(remote, 0, 0, canvas.width * k, canvas.height * k, 0, 0, canvas.width, canvas.height);
      let id = 0;
      for (let b = 0; b < STAMP_BITS; b++) {
        const p = ctx.getImageData(STAMP_X + b * STAMP_B + STAMP_B / 2, STAMP_Y + STAMP_B / 2, 1, 1).data;
        if ((p[0] + p[1] + p[2]) / 3 > 127) id |= 1 << b;
      }
      if (sentAt.has(id)) { state.rtt.push(performance.now() - sentAt.get(id)); sentAt.delete(id); }
      if (state.rtt.length > 2000) state.rtt.shift();
    }
    remote.requestVideoFrameCallback(onFrame);
  };
  remote.requestVideoFrameCallback(onFrame);
}

// ---------------------------------------------------------------- WebRTC
async function start() {
  notice("");
  await stop();
  try {
    state.stream = await openCamera();
  } catch (err) { notice(err.message); setConnection("idle"); return; }
  await listCameras();
  $("local").srcObject = state.stream;  // muted: the caller must not hear their own voice
  setMicMuted(state.micMuted);
  if (WANT_MIC && state.micError) notice("No microphone (" + state.micError + "): the call is video only.", "info");
  state.sendStream = $("measure").checked ? stampedStream(state.stream) : state.stream;
  const answer = await connectCall();
  if (answer && answer.refused) notice("The server refused the call: " + answer.refused);
}

// One peer connection through /offer. In a cluster (the answer names a `node`), the page
// also keeps the front door's /ws socket: when the node is lost (or ICE fails) it offers
// again on its own, waiting out a 503's Retry-After, and the call resumes on another node.
async function connectCall() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    setConnection(pc.connectionState);
    if (pc.connectionState === "failed") {
      if (state.node) moveCall("The connection to the node failed");
      else notice("The connection failed. Press Reconnect.");
    }
  };
  pc.ontrack = (ev) => showRemote(ev.track);
  const channel = pc.createDataChannel("control");
  state.channel = channel;
  channel.onopen = () => { send({ type: "hello" }); sendAllControls(); };
  channel.onmessage = (ev) => onControlMessage(JSON.parse(ev.data));
  for (const track of state.sendStream.getVideoTracks()) {
    track.contentHint = "detail";  // keep the resolution; a filter needs the detail more than the frame rate
    pc.addTrack(track, state.sendStream);
  }
  for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.sendStream);  // one stream: lip sync

  setConnection("connecting");
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  let answer, res;
  try {
    res = await fetch("/offer", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }) });
    answer = await res.json();
  } catch (err) {
    setConnection("failed");
    notice("Cannot reach the StreamFX server. Is it still running?");
    return null;
  }
  if (!res.ok) {
    pc.close(); state.pc = null;
    setConnection("failed");
    const retry = Number(res.headers.get("Retry-After"));
    return { refused: answer.error || res.statusText, retryAfter: res.status === 503 && retry > 0 ? retry : null };
  }
  state.caller = answer.caller;
  state.node = answer.node || null;
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  for (const sender of pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) continue;
    params.degradationPreference = "maintain-resolution";
    params.encodings[0].maxBitrate = 4_000_000;
    params.encodings[0].scaleResolutionDownBy = 1;
    sender.setParameters(params).catch(() => {});
  }
  if (state.node) openClusterSocket(answer.caller);
  return answer;
}

// The filtered video in the muted <video>, the caller's voice (delayed to match) in the <audio>.
function showRemote(track) {
  if (track.kind === "video") { $("remote").srcObject = new MediaStream([track]); return; }
  playAudio($("remote-audio"), track, () => {  // ?autostart: no click yet, the browser holds the sound back
    notice("Click anywhere on the page to hear the call.", "info");
    document.addEventListener("click", () => $("remote-audio").play().catch(() => {}), { once: true });
  });
}

function openClusterSocket(caller) {
  if (state.socket) state.socket.close();
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?caller=${encodeURIComponent(caller)}`);
  state.socket = ws;
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "cluster" && (msg.event === "node-lost" || msg.event === "front-door-lost")) moveCall(msg.message);
  };
}

async function moveCall(why) {
  if (state.moving || !state.sendStream) return;
  state.moving = true;
  state.moves.push(why);  // why each move happened (read by tests)
  if (state.socket) { state.socket.close(); state.socket = null; }
  if (state.pc) { state.pc.close(); state.pc = null; }
  notice(why + ": moving the call to another node…", "info");
  try {
    for (;;) {
      if (!state.sendStream) return;  // stopped meanwhile
      const answer = await connectCall();
      if (answer && !answer.refused) {
        notice(`The call moved to node ${answer.node}; its smoothing starts fresh.`, "info");
        return;
      }
      const wait = (answer && answer.retryAfter) || 2;
      notice(`No room in the cluster yet (${answer ? answer.refused : "unreachable"}); trying again in ${wait} s`, "info");
      await new Promise((r) => setTimeout(r, wait * 1000));
    }
  } finally { state.moving = false; }
}

async function stop() {
  if (state.socket) { state.socket.close(); state.socket = null; }
  state.node = null;
  if (state.pc) { state.pc.close(); state.pc = null; }
  if (state.stream) { state.stream.getTracks().forEach((t) => t.stop()); state.stream = null; }
  state.sendStream = null;
  state.channel = null;
  setMicMuted(state.micMuted);  // no stream: the switch is off until the next Start
}

// ---------------------------------------------------------------- control channel
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
function onControlMessage(msg) {
  if (msg.type === "stats") { state.serverStats = msg; renderStats(); }
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

// ---------------------------------------------------------------- wiring
$("start").onclick = start;
$("stats").onclick = () => $("stats").classList.toggle("collapsed");
$("stats").title = "click to fold or unfold the stats";
$("reconnect").onclick = start;
$("mute").onclick = () => setMicMuted(!state.micMuted);
$("camera").onchange = () => { if (state.pc) start(); };
$("view").onchange = () => { $("videos").className = $("view").value; };
$("preset").onchange = () => send($("preset").value ? { type: "prompt", preset: $("preset").value } : { type: "prompt", clear: true });
$("reference").onchange = (ev) => { if (ev.target.files[0]) sendReference(ev.target.files[0]); };
$("generate").onclick = sendText;
$("prompt-text").onkeydown = (ev) => { if (ev.key === "Enter") sendText(); };
$("clear").onclick = () => { $("preset").value = ""; send({ type: "prompt", clear: true }); };
$("strength").oninput = strengthInput;
$("strength").onchange = strengthInput.flush;
for (const id of ["pose", "yaw", "pitch"]) {
  $(id).oninput = () => { showPose(); poseInput(); };
  $(id).onchange = () => { showPose(); poseInput.flush(); };
}
$("quality").onchange = () => send({ type: "quality", preset: $("quality").value });
$("bypass").onchange = () => send({ type: "bypass", on: $("bypass").checked });
if (new URLSearchParams(location.search).has("measure")) $("measure").checked = true;
if (new URLSearchParams(location.search).has("bypass")) $("bypass").checked = true;
watchReturn($("remote"));
setInterval(renderStats, 1000);
loadInfo().then(() => {
  if (new URLSearchParams(location.search).has("autostart")) start();
  else listCameras().catch(() => {});
});
