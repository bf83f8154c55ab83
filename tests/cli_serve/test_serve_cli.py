"""``streamfx serve`` options: TLS, token files, the admin token, exposed-mode warnings, URLs.

Most checks run the command in this process with ``web.run_app`` replaced (nothing binds);
one starts the real server over HTTPS and talks to it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from streamfx.cli import main
from streamfx.cli import serve
from streamfx.server import tls

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def launched(monkeypatch, tmp_path):
    """Run ``streamfx serve ARGS`` here without serving: returns (exit code, stdout, stderr, what run_app got)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("STREAMFX_CONFIG_DIR")  # the XDG default is what these check
    for name in ("STREAMFX_TOKEN", "STREAMFX_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    seen: dict = {}

    def create_app(config):
        seen["config"] = config
        return "app"

    monkeypatch.setattr(serve, "create_app", create_app)
    monkeypatch.setattr(serve.web, "run_app", lambda app, **kw: seen.update(kw))

    def launch(capsys, *args: str):
        seen.clear()
        code = main(["serve", "--engine", "overlay", *args])
        out, err = capsys.readouterr()
        return code, out, err, seen

    return launch


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


def test_cert_without_key_is_one_line(launched, capsys, tmp_path):
    code, _, err, seen = launched(capsys, "--cert", str(tmp_path / "c.pem"))
    _one_line_error(code, err, "--cert and --key")
    assert "config" not in seen


def test_cert_and_key_that_do_not_match_are_one_line(launched, capsys, tmp_path):
    one = tls.self_signed(["localhost"], [], tmp_path / "one")
    two = tls.self_signed(["localhost"], [], tmp_path / "two")
    code, _, err, _ = launched(capsys, "--cert", str(one.cert), "--key", str(two.key))
    _one_line_error(code, err, "does not belong")


def test_cert_and_key_serve_https(launched, capsys, tmp_path):
    files = tls.self_signed(["localhost"], ["127.0.0.1"], tmp_path / "mine")
    code, out, _, seen = launched(capsys, "--cert", str(files.cert), "--key", str(files.key))
    assert code == 0
    assert "https://127.0.0.1:8080/" in out.splitlines()[0]
    assert files.fingerprint_sha256 in out and str(files.cert) in out
    assert isinstance(seen["ssl_context"], ssl.SSLContext) and seen["config"].tls


def test_token_file_empty_or_unreadable_is_refused(launched, capsys, tmp_path):
    empty = tmp_path / "tokens.txt"
    empty.write_text("# nobody yet\n\n   \n")
    code, _, err, _ = launched(capsys, "--token-file", str(empty))
    _one_line_error(code, err, "no tokens")
    code, _, err, _ = launched(capsys, "--token-file", str(tmp_path / "missing.txt"))
    _one_line_error(code, err, "cannot read")


def test_token_file_gives_caller_tokens_and_admin_must_differ(launched, capsys, tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("# the team\nalice-token\n\nbob-token  # Bob\nalice-token\n")
    code, out, _, seen = launched(capsys, "--token-file", str(path))
    assert code == 0
    assert seen["config"].tokens == ("alice-token", "bob-token")
    code, _, err, _ = launched(capsys, "--token-file", str(path), "--admin-token", "bob-token")
    _one_line_error(code, err, "--admin-token")
    code, _, err, _ = launched(capsys, "--token", "same", "--admin-token", "same")
    _one_line_error(code, err, "--admin-token")


def test_exposed_without_tls_warns_and_generates_tokens(launched, capsys):
    code, out, _, seen = launched(capsys, "--host", "0.0.0.0", "--port", "8123", "--allow-host", "cam.example.org")
    assert code == 0
    config = seen["config"]
    warning = [line for line in out.splitlines() if "plain HTTP" in line]
    assert len(warning) == 1 and "--tls self-signed" in warning[0] and "--cert" in warning[0]
    assert config.token and config.admin_token and config.token != config.admin_token
    admin = [line for line in out.splitlines() if config.admin_token in line]
    assert len(admin) == 1 and "/metrics" in admin[0]
    urls = re.findall(r"(http://\S+)", out)
    assert urls[0] == f"http://127.0.0.1:8123/?token={config.token}"
    hosts = {u.split("//")[1].rsplit(":", 1)[0].strip("[]") for u in urls}
    for address in tls.reachable_addresses():
        if ":" not in address:  # 0.0.0.0 serves IPv4 only
            assert address in hosts
    assert "cam.example.org" in config.allowed_hosts
    assert hosts <= set(config.allowed_hosts), "the printed URLs must pass the Host check"
    assert seen["ssl_context"] is None and not config.tls
    assert config.limits.max_callers is None


def test_loopback_prints_no_warning_and_no_admin_token(launched, capsys):
    code, out, _, seen = launched(capsys, "--port", "8124")
    assert code == 0
    assert out.splitlines()[0].startswith("StreamFX serving on http://127.0.0.1:8124/ ")
    assert "plain HTTP" not in out and "admin token" not in out
    assert seen["config"].admin_token is None and seen["config"].token is None


def test_max_callers_is_checked_when_given(launched, capsys):
    code, _, err, _ = launched(capsys, "--max-callers", "0")
    _one_line_error(code, err, "--max-callers")
    code, _, _, seen = launched(capsys, "--max-callers", "3")
    assert code == 0 and seen["config"].limits.max_callers == 3


def test_tls_self_signed_on_every_address(launched, capsys, tmp_path):
    code, out, _, seen = launched(capsys, "--host", "0.0.0.0", "--port", "8125", "--tls", "self-signed")
    assert code == 0
    assert "plain HTTP" not in out
    urls = re.findall(r"(https?://\S+)", out)
    assert urls and all(u.startswith("https://") for u in urls)
    files = tls.load(tmp_path / "config" / "streamfx" / "tls" / "cert.pem",
                     tmp_path / "config" / "streamfx" / "tls" / "key.pem")
    assert files.fingerprint_sha256 in out
    names, addresses = serve.tls_names("0.0.0.0")
    assert {"localhost", "127.0.0.1"} <= set(names) | set(addresses)
    assert set(tls.reachable_addresses()) <= set(names) | set(addresses)


# ---------------------------------------------------------------------------- a real server
def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_real_server_over_self_signed_https(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), STREAMFX_ICE_LOOPBACK="1")
    env.pop("STREAMFX_CONFIG_DIR", None)
    env.pop("STREAMFX_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--engine", "overlay", "--port", "0",
                             "--tls", "self-signed"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 60
        while not any("SHA-256" in line for line in printed):
            assert time.monotonic() < deadline, f"no fingerprint printed: {printed}"
            try:
                line = out.get(timeout=1)
            except queue.Empty:
                continue
            assert line is not None, f"server exited: {printed} {proc.stderr.read()[-2000:]}"
            printed.append(line)
        url = re.search(r"(https://127\.0\.0\.1:\d+/)", printed[0]).group(1)
        files = tls.load(tmp_path / "streamfx" / "tls" / "cert.pem", tmp_path / "streamfx" / "tls" / "key.pem")
        assert files.fingerprint_sha256 in "".join(printed) and str(files.cert) in "".join(printed)

        context = ssl.create_default_context(cafile=str(files.cert))  # only this certificate is trusted
        while True:
            try:
                with urllib.request.urlopen(url + "api/info", timeout=2, context=context) as r:
                    if json.load(r).get("state") == "ready":
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the server did not answer over https"
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
