// The call page: this browser's camera and microphone -> WebRTC -> the server's filter -> back.
// Loaded after controls.js (state, notices, the control channel).
"use strict";

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
  openControlChannel(pc, true);
  for (const track of state.sendStream.getVideoTracks()) {
    track.contentHint = "detail";  // keep the resolution; a filter needs the detail more than the frame rate
    pc.addTrack(track, state.sendStream);
  }
  for (const track of state.stream.getAudioTracks()) pc.addTrack(track, state.sendStream);  // one stream: lip sync

  setConnection("connecting");
  const { res, answer } = await postOffer(pc);
  if (!res) {
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

// ---------------------------------------------------------------- wiring (the call page)
function bootCall() {
  $("start").onclick = start;
  $("reconnect").onclick = start;
  $("mute").onclick = () => setMicMuted(!state.micMuted);
  $("camera").onchange = () => { if (state.pc) start(); };
  if (new URLSearchParams(location.search).has("measure")) $("measure").checked = true;
  watchReturn($("remote"));
  if (new URLSearchParams(location.search).has("autostart")) start();
  else listCameras().catch(() => {});
}
