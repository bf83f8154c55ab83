"""Publishing frames to a virtual camera with pyvirtualcam (imported lazily).

Linux needs a v4l2loopback device; Windows and macOS use OBS Studio's Virtual Camera.
Every failure to find one becomes a :class:`VirtualCameraError` whose one line says how to
create it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from .. import log
from .closing import ClosesOnExit
from .errors import MediaError, VirtualCameraError

logger = log.get(__name__)

INSTALL_HINT = "pyvirtualcam is not installed: pip install 'streamfx[virtualcam]'"
LINUX_HINT = ("no virtual camera device found: create one with "
              "`sudo modprobe v4l2loopback exclusive_caps=1 card_label=StreamFX` "
              "(Debian/Ubuntu: `sudo apt install v4l2loopback-dkms` first)")
OTHER_HINT = ("no virtual camera found: install OBS Studio and start its Virtual Camera once "
              "(Start Virtual Camera), then try again")
SYSFS_VIRTUAL = Path("/sys/devices/virtual/video4linux")


def _hint() -> str:
    return LINUX_HINT if sys.platform.startswith("linux") else OTHER_HINT


def _import() -> ModuleType:
    try:
        import pyvirtualcam
    except ImportError:
        raise VirtualCameraError(INSTALL_HINT) from None
    return pyvirtualcam


def loopback_devices() -> list[str]:
    """Linux: the /dev/videoN nodes that are v4l2loopback devices (virtual video4linux)."""
    if SYSFS_VIRTUAL.is_dir():
        names = sorted(p.name for p in SYSFS_VIRTUAL.glob("video*"))
    elif Path("/sys/class/video4linux").is_dir():
        names = []  # sysfs is there and lists no virtual device
    else:
        names = sorted(p.name for p in Path("/dev").glob("video*"))  # no sysfs: let pyvirtualcam decide
    return [f"/dev/{n}" for n in names if Path(f"/dev/{n}").exists()]


def check_available() -> None:
    """Raise :class:`VirtualCameraError` early if no virtual camera can be opened here."""
    _import()
    if sys.platform.startswith("linux") and not loopback_devices():
        raise VirtualCameraError(LINUX_HINT)


class VirtualCamera(ClosesOnExit):
    """A virtual camera of a fixed size and rate that accepts RGB uint8 frames (H, W, 3)."""

    def __init__(self, width: int, height: int, fps: float, device: str | None = None,
                 backend: str | None = None) -> None:
        """``backend``: a pyvirtualcam backend by name (``v4l2loopback``, ``obs``,
        ``unitycapture``, or one registered with ``pyvirtualcam.register_backend``); None
        lets pyvirtualcam choose, after this platform's device check."""
        pyvirtualcam = _import()
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(sorted(pyvirtualcam.camera.BACKENDS)) or "none on this platform"
            raise VirtualCameraError(f"no virtual camera backend {backend!r} (known here: {known})")
        if device is None and backend is None:
            check_available()
        try:
            self.camera = pyvirtualcam.Camera(width=width, height=height, fps=fps, device=device, backend=backend,
                                              fmt=pyvirtualcam.PixelFormat.RGB)
        except (RuntimeError, OSError, ValueError) as exc:
            text = " ".join(str(exc).split())
            if (device is None and backend is None) or "not found" in text.lower() or "no v4l2 loopback" in text.lower():
                raise VirtualCameraError(f"{_hint()} ({text})" if device else _hint()) from None
            if "busy" in text.lower():
                raise VirtualCameraError(f"the virtual camera {device or backend} is in use by another program "
                                         f"({text}); close it or pick another with --virtual-device") from None
            raise VirtualCameraError(f"cannot open virtual camera {device}: {text}") from None
        self.width, self.height, self.fps = width, height, fps
        self.device = self.camera.device
        logger.info("virtual camera opened", extra={"device": self.device, "size": f"{width}x{height}"})

    def send(self, frame: np.ndarray) -> None:
        """Publish one RGB uint8 frame (height, width, 3)."""
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame is {frame.shape}; the virtual camera takes {(self.height, self.width, 3)}")
        self.camera.send(np.ascontiguousarray(frame))

    def sleep_until_next_frame(self) -> None:
        self.camera.sleep_until_next_frame()

    def close(self) -> None:
        self.camera.close()


class KeptVirtualCamera:
    """A virtual camera that outlives trouble mid-call: a device that fails (its module
    unloaded, taken by another program) is closed, said in one line (:attr:`error`, logged
    once) and opened again every ``retry_s``; the frames meanwhile go nowhere. The first
    open is the caller's: its error stops the start, as a missing device should."""

    def __init__(self, open_camera: Callable[[], VirtualCamera], retry_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._open, self.retry_s, self.clock = open_camera, retry_s, clock
        self.camera: VirtualCamera | None = open_camera()
        self.device = self.camera.device
        self.error: str | None = None
        self._retry_at = 0.0

    def send(self, frame: np.ndarray) -> None:
        if self.camera is None:
            if self.clock() < self._retry_at:
                return
            try:
                self.camera = self._open()
            except MediaError as exc:
                self._trouble(str(exc))
                return
            logger.warning("virtual camera back", extra={"device": self.camera.device})
            self.error = None
        try:
            self.camera.send(frame)
        except Exception as exc:  # noqa: BLE001 - pyvirtualcam's backends raise what they like
            text = " ".join(str(exc).split()) or type(exc).__name__
            self._trouble(f"the virtual camera {self.device} failed ({text})")
            try:
                self.camera.close()
            except Exception:  # noqa: BLE001 - it is gone already
                pass
            self.camera = None

    def _trouble(self, line: str) -> None:
        if line != self.error:
            logger.warning(f"{line}; trying again every {self.retry_s:g} s")
        self.error = line
        self._retry_at = self.clock() + self.retry_s

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None
