"""Where Chromium is, and the module mark of the browser tests: skipped with the reason where
Chromium is missing, an error under CI (where .ci/run installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("STREAMFX_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.browser
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install -y chromium)")
    pytestmark = [pytest.mark.browser, pytest.mark.skip(reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")]
