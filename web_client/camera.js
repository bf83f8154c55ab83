// The camera's control page (`streamfx camera`): the process reads the camera, so this page
// asks for no permission. It receives two previews (the camera, then the filtered video),
// shows the camera's settings and changes them over the control channel; the camera keeps
// them for its next start. Loaded after controls.js.
"use strict";

const cameraState = { camera: null, mic: null, vcam: null, whip: null };  // last states noticed, to tell each change once
state.cameraPage = cameraState;

async function connectPreview() {
  if (state.pc) state.pc.close();
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });  // the camera as read
  pc.addTransceiver("video", { direction: "recvonly" });  // what the virtual camera gets
  pc.ontrack = (ev) => {
    const first = pc.getTransceivers().indexOf(ev.transceiver) === 0;
    $(first ? "local" : "remote").srcObject = new MediaStream([ev.track]);
  };
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    setConnection(pc.connectionState);
    if (pc.connectionState === "failed") notice("The preview connection failed. Press Reconnect (the camera keeps running).");
  };
  openControlChannel(pc, false);
  setConnection("connecting");
  const { res, answer } = await postOffer(pc);
  if (!res) { setConnection("failed"); notice("Cannot reach the camera. Is `streamfx camera` still running?"); return; }
  if (!res.ok) { pc.close(); state.pc = null; setConnection("failed"); notice("The camera refused the preview: " + (answer.error || res.statusText)); return; }
  state.caller = answer.caller;
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
}

// The page starts from the camera's settings (saved, or from its command line).
function showSettings(s) {
  if (!s) return;
  $("preset").value = s.prompt && [...$("preset").options].some((o) => o.value === s.prompt) ? s.prompt : "";
  markGallery();
  $("pose").value = s.pose; $("yaw").value = s.yaw; $("pitch").value = s.pitch; showPose();
  $("strength").value = s.strength; $("bypass").checked = s.bypass;
  if ([...$("quality").options].some((o) => o.value === s.quality)) $("quality").value = s.quality;
  $("mic-offset").value = s.mic_offset_ms; showMicOffset();
}

function showMicOffset() { $("mic-offsetv").textContent = `${$("mic-offset").value} ms`; }
const micOffsetInput = throttled(() => ({ type: "mic_offset", ms: Number($("mic-offset").value) }));

// Each stats message: the microphone's delay, and one notice per change of the camera's,
// the microphone's or the WHIP push's trouble.
function onCameraStats(s) {
  const mic = s.mic;
  $("mic-state").textContent = mic ? `${mic.state}${mic.device ? " → " + mic.device : ""}` : "off (start the camera with --virtual-mic)";
  $("mic-delay").textContent = mic && mic.delay_ms !== null && mic.delay_ms !== undefined ? `${mic.delay_ms} ms` : "–";
  $("mic-offset").disabled = !mic;
  const changed = (key, value, text, kind) => {
    if (cameraState[key] === value) return;
    cameraState[key] = value;
    if (text) notice(text, kind);
  };
  changed("camera", s.camera, s.camera === "lost" ? "The camera is lost: the call sees a still frame until it is plugged in again." :
    (cameraState.camera === "lost" ? "The camera is back." : null), s.camera === "lost" ? "error" : "info");
  changed("mic", mic ? mic.error : null, mic && mic.error ? "Virtual microphone: " + mic.error : null);
  changed("vcam", s.virtual_camera ? s.virtual_camera.error : null,
    s.virtual_camera && s.virtual_camera.error ? s.virtual_camera.error + "; trying again every second." : null);
  changed("whip", s.whip ? s.whip.error : null, s.whip && s.whip.error ? "WHIP push: " + s.whip.error : null);
}

function bootCamera(info) {
  showSettings(info && info.settings);
  statsHooks.push(onCameraStats);
  $("reconnect").onclick = connectPreview;
  $("mic-offset").oninput = () => { showMicOffset(); micOffsetInput(); };
  $("mic-offset").onchange = () => { showMicOffset(); micOffsetInput.flush(); };
  connectPreview();
}
