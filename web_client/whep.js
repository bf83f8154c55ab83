// The WHEP viewer (draft-ietf-wish-whep): /client/whep.html?session=ID[&token=T] watches one
// session's filtered video and hears its caller, receive only. Loaded after rtc.js.
"use strict";

const params = new URLSearchParams(location.search);
const viewer = { pc: null, location: null, status: "", received: {} };
window.whep = viewer;  // read by tests
const WAIT_TRIES = 30;  // 409 (the session has no video yet): ask again each second, this often

function status(text, kind = "") {
  viewer.status = text;
  $("status").textContent = text;
  $("status").className = "status " + kind;
}
function authHeaders() {
  const token = params.get("token");
  return token ? { Authorization: "Bearer " + token } : {};  // else the page's cookie, if any
}
function refusal(code, error) {
  if (code === 404) return "No such session: it has ended, or the ID in the address is wrong.";
  if (code === 401) return params.get("token") ? "The server refused the token in the address (401)."
    : "This server needs a token (401): add &token=... to the address.";
  if (code === 409) return "The session has no video yet; reload the page to try again.";
  return `The server refused to show the session (${code}): ${error}`;
}

// POST the offer; a 409 is asked again while the session's video has not started.
async function postOffer(session, sdp) {
  for (let tries = 1; ; tries++) {
    const res = await fetch(`/whep/${encodeURIComponent(session)}`, { method: "POST", body: sdp,
      headers: { "Content-Type": "application/sdp", ...authHeaders() } });
    if (res.status !== 409 || tries >= WAIT_TRIES) return res;
    status("Waiting for the session's video…");
    await new Promise((r) => setTimeout(r, 1000));
  }
}
async function errorText(res) {
  const text = await res.text();
  try { return JSON.parse(text).error || text; } catch { return text; }
}

function receiverPeer() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    if (!$("video").srcObject) $("video").srcObject = stream;
    if (ev.track.kind === "audio") $("sound").disabled = false;
  };
  pc.onconnectionstatechange = () => showConnection(pc.connectionState);
  return pc;
}
function showConnection(s) {
  if (s === "connected") status("Watching the session.", "ok");
  else if (s === "disconnected") status("The connection is interrupted; waiting for it to come back…");
  else if (s === "failed") status("The connection failed: reload the page to try again.", "bad");
  else if (s === "connecting") status("Connecting…");
}

async function watch() {
  const session = params.get("session");
  if (!session) { status("No session: open this page as /client/whep.html?session=ID (the ID of a call).", "bad"); return; }
  $("session").textContent = "session " + session;
  const pc = receiverPeer();
  viewer.pc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  status("Asking the server for the session…");
  let res;
  try { res = await postOffer(session, pc.localDescription.sdp); } catch {
    status("Cannot reach the StreamFX server. Is it still running?", "bad"); pc.close(); return;
  }
  if (res.status !== 201) { status(refusal(res.status, await errorText(res)), "bad"); pc.close(); return; }
  viewer.location = new URL(res.headers.get("Location"), location.href).href;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
}

// Leaving the page ends this viewer on the server (keepalive: the request outlives the page).
function leave() {
  // The peer is not closed here: its close could reach the server before the DELETE, which
  // would then find no viewer (404); the browser closes it as the page goes.
  if (viewer.location) fetch(viewer.location, { method: "DELETE", keepalive: true, headers: authHeaders() }).catch(() => {});
  viewer.location = null;
}

async function showReceived() {
  viewer.received = await inboundStats(viewer.pc);
  const { video, audio } = viewer.received;
  const v = $("video");
  $("received").textContent = (video ? `video ${v.videoWidth}x${v.videoHeight}, ${video.framesDecoded || 0} frames` : "no video") +
    (audio ? `; audio ${audio.packetsReceived} packets` : "; no audio");
}

// The video starts muted (so it may autoplay); "Sound on", pressed, unmutes it (a click allows sound).
$("sound").onclick = () => {
  const v = $("video");
  v.muted = !v.muted;
  if (!v.muted) v.play().catch(() => {});
  $("sound").setAttribute("aria-pressed", String(!v.muted));
};
addEventListener("pagehide", leave);
setInterval(() => { if (viewer.pc) showReceived(); }, 1000);
watch().catch((err) => status("Could not start: " + err.message, "bad"));
