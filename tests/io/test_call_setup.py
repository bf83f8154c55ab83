"""What a call needs, checked from sysfs and the sound server: one line each, and the fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from streamfx.io import call_setup


def _sysfs(root: Path, exclusive: str | None, devices=("video10",), cameras=("video0",)) -> Path:
    virtual = root / "devices" / "virtual" / "video4linux"
    for name in devices:
        (virtual / name).mkdir(parents=True)
    if exclusive is not None:
        params = root / "module" / "v4l2loopback" / "parameters"
        params.mkdir(parents=True)
        (params / "exclusive_caps").write_text(exclusive + "\n")
    for name in (*cameras, *devices):
        node = root / "class" / "video4linux" / name
        node.mkdir(parents=True)
        (node / "name").write_text("Integrated Camera\n" if name in cameras else "StreamFX\n")
    return root


def test_a_loopback_device_with_exclusive_caps_is_ready(tmp_path):
    check = call_setup.virtual_camera(_sysfs(tmp_path, "Y"), "linux")
    assert check.ok and "/dev/video10" in check.detail and "exclusive_caps=Y" in check.detail


def test_without_exclusive_caps_the_fix_reloads_the_module(tmp_path):
    check = call_setup.virtual_camera(_sysfs(tmp_path, "N"), "linux")
    assert not check.ok and "exclusive_caps" in check.detail
    assert "modprobe -r v4l2loopback" in check.fix and "exclusive_caps=1" in check.fix
    assert check.line().startswith("MISSING virtual camera:") and "->" in check.line()


def test_no_module_says_how_to_install_it(tmp_path):
    check = call_setup.virtual_camera(_sysfs(tmp_path, None, devices=()), "linux")
    assert not check.ok and "not loaded" in check.detail and "v4l2loopback-dkms" in check.fix


def test_cameras_leave_the_virtual_ones_out(tmp_path):
    check = call_setup.cameras(_sysfs(tmp_path, "Y"), "linux")
    assert check.ok and check.detail == "/dev/video0 (Integrated Camera)"
    none = call_setup.cameras(_sysfs(tmp_path / "b", "Y", cameras=()), "linux")
    assert not none.ok and "--source FILE" in none.fix


def test_no_sound_server_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setattr(call_setup.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(call_setup, "find_library", lambda name: f"lib{name}.so.0")

    def refused(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "Connection failure: Connection refused\n")

    check = call_setup.virtual_microphone("linux", run=refused)
    assert not check.ok and "Connection refused" in check.detail and "pulseaudio --start" in check.fix
    assert "\n" not in check.line()


def test_missing_pulseaudio_parts_name_their_package(monkeypatch):
    monkeypatch.setattr(call_setup.shutil, "which", lambda tool: None)
    assert "pulseaudio-utils" in call_setup.virtual_microphone("linux").fix
    monkeypatch.setattr(call_setup.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(call_setup, "find_library", lambda name: None)
    check = call_setup.virtual_microphone("linux")
    assert not check.ok and "libpulse-simple" in check.detail and "libpulse0" in check.fix


def test_other_systems_name_the_driver_to_install():
    assert "VB-CABLE" in call_setup.virtual_microphone("win32").fix
    assert "BlackHole" in call_setup.virtual_microphone("darwin").fix
