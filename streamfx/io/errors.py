"""Errors of the file and camera I/O, each shown to the user as one line."""

from __future__ import annotations


class MediaError(Exception):
    """A video file or device that cannot be read or written; the message is one line."""


class CameraError(MediaError):
    """A camera or camera-like source that cannot be opened or read."""


class VirtualCameraError(MediaError):
    """No virtual-camera device (or no pyvirtualcam); the message says how to get one."""
