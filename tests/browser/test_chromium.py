"""Headless Chromium end to end: fake camera -> page -> server -> page, with the round trip measured."""

from __future__ import annotations

import json
import subprocess
import sys

from browser_env import ROOT, pytestmark  # noqa: F401 (pytestmark marks this module)


def test_page_streams_through_server_in_chromium(tmp_path):
    out = tmp_path / "rt.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.browser_roundtrip", "--sizes", "640x480",
                           "--seconds", "4", "--no-baseline", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())["results"][0]
    assert result["connection"] == "connected"
    assert result["errors"] == []
    assert result["received_size"] == [640, 480]
    assert result["frames_received"] > 20
    assert result["server_frames_out"] > 20, "the server's stats must report processed frames"
    assert "engine" in result["server_stages_ms"]
    assert result["round_trip_ms"]["n"] > 10, "stamped frames must come back readable"
