// Helpers shared by the pages (controls.js, call.js, camera.js) and the WHEP viewer (whep.js);
// a plain script, loaded first.
"use strict";

const $ = (id) => document.getElementById(id);

// The server gathers every candidate before it answers, and so does the page: the offer
// goes out whole (no trickle ICE), or after 3 s with what there is.
function iceGatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", check); resolve(); } };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);
  });
}

// Offer `pc` to POST /offer as JSON once its candidates are gathered: {res, answer}, or {}
// when the server cannot be reached.
async function postOffer(pc) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  try {
    const res = await fetch("/offer", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }) });
    return { res, answer: await res.json() };
  } catch (err) { return {}; }
}

// What arrives, per kind, from the inbound-rtp stats: {video: {packetsReceived, framesDecoded,
// ...}, audio: {packetsReceived, totalSamplesReceived, totalAudioEnergy, ...}} (read by tests too).
async function inboundStats(pc) {
  const out = {};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    out[s.kind] = { packetsReceived: s.packetsReceived || 0, bytesReceived: s.bytesReceived || 0,
      framesDecoded: s.framesDecoded, totalSamplesReceived: s.totalSamplesReceived,
      totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel };
  });
  return out;
}

// Play a remote audio track in `element` (an <audio>). The call starts from a click, so the
// browser lets it play; where it does not (autoplay blocked), onBlocked says so.
function playAudio(element, track, onBlocked) {
  element.srcObject = new MediaStream([track]);
  const playing = element.play();
  if (playing) playing.catch((err) => { if (err.name === "NotAllowedError") onBlocked(); });
}
