"""Fixtures for the quickstart tests: a private desktop (scripts/rig), a real
capture-endpoint and a webhook receiver, all on loopback, all torn down by PID.

The VideoDB SDK and our wheel come from the venv the test command made
(scripts/test-sdk); nothing here imports our code or patches the SDK.

Environment:
  CAPTURE_TEST_ENDPOINT   the capture-endpoint binary (required)
  CAPTURE_TEST_BIN_DIR    capture-agent and capturectl for the capturectl-driven test
  RIG_AUDIO_SERVER        pulseaudio (default) or pipewire, as scripts/rig reads it
  RIG_DESKTOP             gnome-wayland when pytest already runs inside a Wayland rig's
                          desktop (scripts/test-sdk --desktop gnome-wayland): no rig is
                          started, and the screen-sharing dialog is answered with
  CAPTURE_TEST_RIG        scripts/rig (a copy the desktop's user can run)
"""
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WAYLAND = os.environ.get("RIG_DESKTOP") == "gnome-wayland"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def rig():
    """scripts/rig up: Xvfb with a moving pattern, an audio server whose default
    source carries a 440 Hz tone and whose default sink a 1 kHz one. In a Wayland rig's
    desktop: that desktop, as the environment says."""
    if WAYLAND:
        yield dict(os.environ)
        return
    state = tempfile.mkdtemp(prefix="sdk-rig-")
    up = subprocess.run([f"{REPO}/scripts/rig", "up", "--state-dir", state, "--owner-pid", str(os.getpid())],
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        raise RuntimeError(f"rig up failed: {up.stderr}")
    env = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    yield env
    subprocess.run([f"{REPO}/scripts/rig", "down", "--state-dir", state], capture_output=True, timeout=60)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoint():
    """A capture-endpoint of its own: data directory, port, API key."""
    binary = os.environ["CAPTURE_TEST_ENDPOINT"]
    data = tempfile.mkdtemp(prefix="sdk-endpoint-")
    port = free_port()
    key = "cek_sdk_" + secrets.token_hex(16)
    env = dict(os.environ, CAPTURE_ENDPOINT_API_KEY=key)
    log = open(data + ".log", "wb")
    proc = subprocess.Popen([binary, "--data-dir", data, "--port", str(port), "--log-level", "notice",
                             "--allow-private-webhook-targets"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"capture-endpoint did not come up: {open(data + '.log').read()}")
        time.sleep(0.05)
    yield {"base_url": base, "api_key": key, "data_dir": data, "log": data + ".log", "pid": proc.pid}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    shutil.rmtree(data, ignore_errors=True)
    os.unlink(data + ".log")


class WebhookReceiver:
    """The backend's webhook URL: an HTTP server on loopback keeping every body."""

    def __init__(self):
        received = self.received = []
        lock = self.lock = threading.Condition()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append({"headers": dict(self.headers), "body": json.loads(body)})
                    lock.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, session_id: str, event_type: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for hook in self.received:
                    body = hook["body"]
                    if body.get("capture_session_id") == session_id and body.get("type") == event_type:
                        return hook
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(h["body"].get("type"), h["body"].get("capture_session_id")) for h in self.received]
                    raise AssertionError(f"no {event_type} webhook for {session_id} in {timeout} s; got {seen}")
                self.lock.wait(left)

    def types(self, session_id: str) -> list:
        """The session's webhook types in the order first received, each delivery once: a webhook
        the endpoint sent again (its first attempt got no answer in time, as on a loaded machine)
        carries the same webhook-id, by which a receiver recognises the repeat (Standard
        Webhooks). A delivery without an id counts each time."""
        with self.lock:
            seen, types = set(), []
            for h in self.received:
                if h["body"].get("capture_session_id") != session_id:
                    continue
                webhook_id = next((v for k, v in h["headers"].items() if k.lower() == "webhook-id"), None)
                if webhook_id is not None and webhook_id in seen:
                    continue
                seen.add(webhook_id)
                types.append(h["body"]["type"])
            return types

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def webhooks():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def desktop_env(rig, tmp_path, monkeypatch):
    """This process's environment as a user's desktop session has it: the rig's
    display and audio server, and empty XDG config/state homes, so that what the
    agent leaves behind can be checked. (The SDK starts capture-agent with this
    process's environment.)"""
    for key in ("DISPLAY", "PULSE_SERVER", "XDG_RUNTIME_DIR"):
        if key in rig:
            monkeypatch.setenv(key, rig[key])
    state, config = tmp_path / "state", tmp_path / "config"
    state.mkdir()
    config.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("CAPTURE_AGENT_SOCKET", raising=False)
    monkeypatch.setenv("CAPTURE_AGENT_LOG_LEVEL", "info")
    return {"state": str(state), "config": str(config), "runtime": rig["XDG_RUNTIME_DIR"]}


class Consent:
    """The person at a Wayland desktop: `expect()` before a request that shows the
    screen-sharing dialog, `answered()` after it (scripts/rig consent clicks the first
    monitor, then Share). Nothing to do on X11, which has no dialog."""

    def __init__(self):
        self.proc = None

    def expect(self):
        if WAYLAND:
            self.proc = subprocess.Popen([os.environ["CAPTURE_TEST_RIG"], "consent", "--state-dir", os.environ["RIG_STATE_DIR"],
                                          "share", "--monitor", "1", "--timeout", "60"],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def answered(self):
        if self.proc:
            out, err = self.proc.communicate(timeout=90)
            assert self.proc.returncode == 0, f"rig consent: {err}"
            self.proc = None


@pytest.fixture
def consent():
    person = Consent()
    yield person
    if person.proc and person.proc.poll() is None:
        person.proc.kill()

