"""What a video call needs on this machine, checked without opening anything: the virtual
camera, the virtual microphone's prerequisites, the cameras. ``streamfx doctor`` prints one
line per check; a missing part's line carries the command that fixes it on this OS.

Nothing here is a guess from the OS alone: Linux reads sysfs (v4l2loopback's module and its
devices, ``exclusive_caps``, the real cameras' names) and asks the sound server (``pactl
info``, answered by PulseAudio and by PipeWire's pipewire-pulse). Windows and macOS name the
driver to install; they are not checked here (no such machine was tried).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from ctypes.util import find_library
import sys
from dataclasses import dataclass
from pathlib import Path

from .virtual_camera import LINUX_HINT

SYS = Path("/sys")
V4L2_MODULE = "module/v4l2loopback"
MODPROBE = "sudo modprobe v4l2loopback exclusive_caps=1 card_label=StreamFX"


@dataclass(frozen=True)
class Check:
    name: str            # "virtual camera", "virtual microphone", "cameras"
    ok: bool
    detail: str          # what was found
    fix: str | None = None  # the command or step that fixes it, where it is missing

    def line(self) -> str:
        mark = "ok     " if self.ok else "MISSING"
        return f"{mark} {self.name}: {self.detail}" + (f" -> {self.fix}" if self.fix and not self.ok else "")


def virtual_camera(sys_root: Path = SYS, platform: str = sys.platform) -> Check:
    if importlib.util.find_spec("pyvirtualcam") is None:
        return Check("virtual camera", False, "pyvirtualcam is not installed", "pip install 'streamfx[virtualcam]'")
    if not platform.startswith("linux"):
        step = ("install OBS Studio 30+ and click Start Virtual Camera once" if platform in ("win32", "darwin")
                else "a v4l2loopback device or OBS's virtual camera")
        return Check("virtual camera", True, f"not checked on {platform}: pyvirtualcam uses OBS's virtual camera",
                     step)
    module = sys_root / V4L2_MODULE
    if not module.is_dir():
        return Check("virtual camera", False, "the v4l2loopback kernel module is not loaded",
                     f"sudo apt install v4l2loopback-dkms && {MODPROBE}")
    devices = _devices(sys_root)
    if not devices:
        return Check("virtual camera", False, "v4l2loopback is loaded but has no device", LINUX_HINT.split(": ", 1)[1])
    caps = (module / "parameters" / "exclusive_caps").read_text().strip() if (
        module / "parameters" / "exclusive_caps").exists() else ""
    if caps and not any(v in ("Y", "1") for v in caps.split(",")):
        return Check("virtual camera", False, f"{', '.join(devices)} without exclusive_caps (Chrome and Zoom will not "
                     "list it)", f"sudo modprobe -r v4l2loopback && {MODPROBE}")
    return Check("virtual camera", True, f"{', '.join(devices)} (v4l2loopback" + (f", exclusive_caps={caps})" if caps
                                                                              else ")"))


def _devices(sys_root: Path) -> list[str]:
    virtual = sys_root / "devices" / "virtual" / "video4linux"
    return sorted(f"/dev/{p.name}" for p in virtual.glob("video*")) if virtual.is_dir() else []


def virtual_microphone(platform: str = sys.platform, run=subprocess.run) -> Check:
    if platform == "win32":
        return Check("virtual microphone", True, "not checked on Windows: it plays into VB-CABLE",
                     "install VB-CABLE (vb-audio.com/Cable), then pick 'CABLE Output' in the call app")
    if platform == "darwin":
        return Check("virtual microphone", True, "not checked on macOS: it plays into BlackHole",
                     "brew install blackhole-2ch, then pick BlackHole in the call app")
    if shutil.which("pactl") is None:
        return Check("virtual microphone", False, "pactl not found (PulseAudio's tools)",
                     "sudo apt install pulseaudio-utils")
    if find_library("pulse-simple") is None:
        return Check("virtual microphone", False, "libpulse-simple not found (PulseAudio's client library)",
                     "sudo apt install libpulse0")
    try:
        info = run(["pactl", "info"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("virtual microphone", False, f"pactl info failed ({exc})", "start PulseAudio or PipeWire")
    if info.returncode != 0:
        reason = (info.stderr or info.stdout).strip().splitlines()[:1] or ["no answer"]
        return Check("virtual microphone", False, f"no sound server answers ({reason[0]})",
                     "start one: `pulseaudio --start` (or `systemctl --user start pipewire-pulse`)")
    name = next((line.split(":", 1)[1].strip() for line in info.stdout.splitlines()
                 if line.startswith("Server Name")), "a sound server")
    return Check("virtual microphone", True, f"{name} answers; 'StreamFX Microphone' can be made there")


def cameras(sys_root: Path = SYS, platform: str = sys.platform) -> Check:
    if not platform.startswith("linux"):
        return Check("cameras", True, f"not listed on {platform}: --source 0 opens the first one")
    classes = sys_root / "class" / "video4linux"
    virtual = {p.name for p in (sys_root / "devices" / "virtual" / "video4linux").glob("video*")}
    found = []
    for node in sorted(classes.glob("video*")) if classes.is_dir() else []:
        if node.name in virtual:
            continue
        name = (node / "name").read_text().strip() if (node / "name").exists() else "?"
        found.append(f"/dev/{node.name} ({name})")
    if not found:
        return Check("cameras", False, "no camera found (no /dev/video* besides virtual ones)",
                     "plug one in, or use --source FILE")
    return Check("cameras", True, ", ".join(found))


def call_checks() -> list[Check]:
    return [virtual_camera(), virtual_microphone(), cameras()]
