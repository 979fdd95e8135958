"""The VideoDB Python quickstart on Linux, with only base_url pointed at our endpoint.

The official SDK (videodb 0.5.1, unmodified) was installed with
`pip install --find-links DIST "videodb[capture]==0.5.1"`: the capture extra
resolved to our wheel, so `CaptureClient` spawns our capture-agent by itself.
A second test runs the same session through capturectl against a daemon on its
socket. Both are checked the same way: webhooks, the session's state and live
streams at the endpoint, the events, the exported MP4 (ffprobe and the mic's
tone, audible outside the paused span and digital silence inside it), and that
nothing is left behind.
"""
import array
import asyncio
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.request

import pytest
import videodb
from videodb.capture import CaptureClient

import videodb_capture_bin

RECORD_SECONDS = 9.0
PAUSE_AT, RESUME_AT = 3.0, 6.0   # seconds after the start, for the mic


# ----------------------------------------------------------------------------- helpers

def agent_processes(binary: str) -> list:
    """PIDs of processes running `binary` (by /proc/PID/exe)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/exe") == binary:
                    found.append(int(pid))
            except OSError:
                pass
    return found


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200, url
        return r.read()


def ffprobe(path: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def decode_track(path: str, stream_index: int) -> array.array:
    """One audio stream as 48 kHz mono s16 on the file's timeline (first_pts=0 pads a late start)."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", f"0:{stream_index}",
                          "-af", "aresample=async=1:first_pts=0", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    samples = array.array("h")
    samples.frombytes(raw)
    return samples


def rms_db(samples) -> float:
    if not samples:
        return -math.inf
    power = sum(s * s for s in samples) / len(samples)
    return -math.inf if power == 0 else 10 * math.log10(power / 32768.0 ** 2)


def tone_share(samples, frequency: float, rate: int = 48000) -> float:
    """The share of the signal's power at `frequency` (Goertzel), 0..1."""
    n = len(samples)
    k = round(n * frequency / rate)
    w = 2 * math.pi * k / n
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power_at = (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2 / n
    total = sum(x * x for x in samples)
    return 0.0 if total == 0 else power_at / total


def window(samples, start: float, end: float, rate: int = 48000):
    return samples[int(start * rate):int(end * rate)]


def check_delivered(endpoint, webhooks, session_id: str, events: list, summary: dict,
                    pause_ns: int, resume_ns: int) -> dict:
    """What the backend sees after the recording: the same for both drivers."""
    conn = videodb.connect(api_key=endpoint["api_key"], base_url=endpoint["base_url"])
    names = [e["event"] for e in events]
    for name in ("recording-started", "recording-paused", "recording-resumed", "recording-stopped",
                 "upload-progress", "recording-complete"):
        assert name in names, f"no {name} event: {names}"
    complete = next(e for e in events if e["event"] == "recording-complete")
    assert complete["data"]["deliveredTo"] == "endpoint", complete
    assert complete["data"]["chunks"] > 0

    deadline = time.monotonic() + 30
    while (session := conn.get_capture_session(session_id)).status != "stopped":
        assert time.monotonic() < deadline, f"the session is still {session.status}"
        time.sleep(0.2)
    webhooks.wait_for(session_id, "capture_session.stopped", 30)

    deadline = time.monotonic() + 120
    while (export := session.export())["export_status"] != "exported":
        assert export["export_status"] == "exporting", export
        assert time.monotonic() < deadline, "the export did not finish in 120 s"
        time.sleep(0.5)
    assert export["video_id"] and export["stream_url"]
    webhooks.wait_for(session_id, "capture_session.exported", 30)
    assert conn.get_capture_session(session_id).status == "exported"

    with tempfile.TemporaryDirectory() as tmp:
        mp4 = os.path.join(tmp, "export.mp4")
        with open(mp4, "wb") as f:
            f.write(fetch(export["stream_url"]))
        probe = ffprobe(mp4)
        streams = probe["streams"]
        video = [s for s in streams if s["codec_type"] == "video"]
        audio = [s for s in streams if s["codec_type"] == "audio"]
        assert len(video) == 1 and video[0]["codec_name"] == "h264", streams
        assert (video[0]["width"], video[0]["height"]) == (1920, 1080)
        # The mix, then mic and system audio each as a track of its own.
        assert len(audio) == 3, [s.get("tags") for s in audio]
        recorded = summary["durationNs"] / 1e9
        duration = float(probe["format"]["duration"])
        assert abs(duration - recorded) <= 0.5, f"export {duration:.3f} s, recorded {recorded:.3f} s"

        # Each copied track is named by its channel id (title, or handler_name as MP4 keeps it).
        named = [s for s in audio if any(v.startswith("mic:") for v in s.get("tags", {}).values())]
        assert len(named) == 1, [s.get("tags") for s in audio]
        mic = named[0]
        samples = decode_track(mp4, mic["index"])
        pause, resume = pause_ns / 1e9, resume_ns / 1e9
        before = window(samples, 0.5, pause - 0.3)
        inside = window(samples, pause + 0.3, resume - 0.3)
        after = window(samples, resume + 0.3, recorded - 0.5)
        # Every 50 ms of both spans, not only their first second.
        for name, part in (("before the pause", before), ("after the resume", after)):
            assert len(part) > 48000, name
            assert rms_db(part) > -15, f"the mic's tone is not audible {name}: {rms_db(part):.1f} dB"
            # The tone, 50 ms at a time: the clock correction may nudge a stream back into
            # step by repeating or leaving out a frame (at most 1 in 256, AudioPlacement). Such
            # a nudge of half a millisecond turns a 440 Hz tone by a quarter period, which over
            # a whole second halves the power in the exact 440 Hz bin though nothing was lost;
            # over 50 ms (22 periods) it costs at most a few per cent. A 20 ms gap leaves 0.6.
            shares = [tone_share(part[i:i + 2400], 440) for i in range(0, len(part) - 2400 + 1, 2400)]
            # On failure, what the agent counted for the mic: all zero, and the hole was in the
            # rig's tone player, not in the capture.
            counted = {k: v for c in summary.get("channels", []) if str(c.get("channel", "")).startswith("mic:")
                       for k, v in c.items() if k in ("silenceFilledMs", "overlapDroppedMs", "repeatedSamples",
                                                      "lostSamples", "discontinuities")}
            assert min(shares) > 0.85, (f"{name}: not the 440 Hz tone throughout: {[round(x, 2) for x in shares]}; "
                                        f"the agent counted for the mic: {counted}")
        assert len(inside) > 48000
        assert max(abs(s) for s in inside) <= 1, f"the paused span is not silent: {rms_db(inside):.1f} dB"
    return {"duration": duration, "recorded": recorded, "chunks": complete["data"]["chunks"],
            "mic dB before/inside/after": [round(rms_db(x), 1) for x in (before, inside, after)]}


def check_nothing_left(desktop_env, session_id: str):
    spool = os.path.join(desktop_env["state"], "capture-agent", "spool")
    left = os.listdir(spool) if os.path.isdir(spool) else []
    assert left == [], f"spool directories left behind: {left}"
    tokens = os.path.join(desktop_env["runtime"], "capture-agent", "tokens")
    left = os.listdir(tokens) if os.path.isdir(tokens) else []
    assert left == [], f"token files left behind: {left}"


# ----------------------------------------------------------------------------- the SDK

def test_the_wheel_is_what_the_sdk_loads():
    path = videodb_capture_bin.get_binary_path()
    assert path.endswith("/videodb_capture_bin/bin/linux_x86_64/capture")
    assert os.access(path, os.X_OK)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert videodb_capture_bin.__version__.startswith("0.3.1+agent."), videodb_capture_bin.__version__
    assert videodb_capture_bin.__version__.endswith(version)
    from importlib.metadata import requires, version as dist_version
    assert dist_version("videodb-capture-bin") == videodb_capture_bin.__version__
    assert any(r.startswith("videodb-capture-bin") for r in requires("videodb")), requires("videodb")
    # The Swift runtime the binary uses comes from the wheel, not from a toolchain on this machine.
    lib_dir = os.path.realpath(os.path.join(os.path.dirname(path), "..", "..", "lib"))
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    swift = {}
    for line in ldd.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and (parts[0].startswith("libswift") or "Foundation" in parts[0]):
            swift[parts[0]] = os.path.realpath(parts[2])
    assert "libswiftCore.so" in swift and "libFoundationEssentials.so" in swift, ldd
    assert all(p == os.path.join(lib_dir, name) for name, p in swift.items()), ldd
    assert "libFoundation.so" not in swift, ldd


def test_quickstart_through_the_sdk(endpoint, webhooks, desktop_env, consent):
    base_url, api_key = endpoint["base_url"], endpoint["api_key"]
    binary = videodb_capture_bin.get_binary_path()
    assert agent_processes(binary) == []

    # Backend half: the app's server creates a session and a client token.
    conn = videodb.connect(api_key=api_key, base_url=base_url)
    ws = conn.connect_websocket()

    async def flow():
        await ws.connect()
        assert ws.connection_id
        session = conn.create_capture_session(end_user_id="quickstart-user", callback_url=webhooks.url,
                                              ws_connection_id=ws.connection_id,
                                              metadata={"app": "quickstart", "os": "linux"})
        assert session.status == "created"
        token = conn.generate_client_token(expires_in=600)
        assert session.id in [s.id for s in conn.list_capture_sessions()]

        # Client half: the desktop app, with the token.
        client = CaptureClient(client_token=token, base_url=base_url)
        assert await client.request_permission("microphone") is True
        consent.expect()   # Wayland: the desktop's dialog, answered as a person would
        assert await client.request_permission("screen_capture") is True
        consent.answered()
        channels = await client.list_channels()
        assert channels.mics and channels.displays and channels.system_audio, channels
        mic, display, system = channels.mics.default, channels.displays.default, channels.system_audio.default
        assert mic.id.startswith("mic:") and display.id.startswith("display:") \
            and system.id.startswith("system_audio:"), (mic, display, system)
        for channel in (mic, display, system):
            channel.store = True
        display.is_primary = True

        events = []

        async def collect():
            async for event in client.events():
                events.append(event)

        collector = asyncio.create_task(collect())
        # What the backend's event WebSocket (ws_connection_id above) receives meanwhile.
        socket_events = []

        async def collect_socket():
            async for message in ws.receive():
                socket_events.append(message)

        socket_collector = asyncio.create_task(collect_socket())
        await client.start_session(capture_session_id=session.id, channels=[mic, display, system])
        started = time.monotonic()
        assert len(agent_processes(binary)) == 1

        hook = await asyncio.to_thread(webhooks.wait_for, session.id, "capture_session.active", 30)
        assert hook["headers"].get("webhook-signature", "").startswith("v1,")
        live = conn.get_capture_session(session.id)
        assert live.status == "active"
        for kind in ("mic", "screen", "system_audio"):
            streams = live.get_rtstream(kind)
            assert len(streams) == 1 and streams[0].stream_url, (kind, live.rtstreams)
        # The screen's live HLS while it records: a playlist with a segment that plays.
        playlist_url = live.get_rtstream("screen")[0].stream_url
        deadline = time.monotonic() + 15
        while "#EXTINF" not in (playlist := fetch(playlist_url).decode()):
            assert time.monotonic() < deadline, playlist
            await asyncio.sleep(0.3)
        assert playlist.startswith("#EXTM3U")

        await asyncio.sleep(max(0.0, started + PAUSE_AT - time.monotonic()))
        await mic.pause()
        await asyncio.sleep(max(0.0, started + RESUME_AT - time.monotonic()))
        await mic.resume()
        await asyncio.sleep(max(0.0, started + RECORD_SECONDS - time.monotonic()))
        await client.stop_session()   # answers after the endpoint acknowledged the last chunk

        await client.shutdown()
        await asyncio.wait_for(collector, 10)

        # The session's transitions reach the backend's socket too, as the webhooks carry them.
        deadline = time.monotonic() + 30
        while "capture_session.stopped" not in [m.get("event") for m in socket_events]:
            assert time.monotonic() < deadline, f"no capture_session.stopped on the event socket: {socket_events}"
            await asyncio.sleep(0.2)
        await ws.close()
        await asyncio.wait_for(socket_collector, 10)
        seen = [(m.get("channel"), m.get("event"), m.get("data", {}).get("capture_session_id"),
                 m.get("data", {}).get("status")) for m in socket_events]
        assert seen[:2] == [("capture_session", "capture_session.active", session.id, "active"),
                            ("capture_session", "capture_session.stopped", session.id, "stopped")], seen
        return session.id, events

    session_id, events = asyncio.run(flow())
    assert agent_processes(binary) == [], "client.shutdown() left capture-agent running"

    paused = next(e for e in events if e["event"] == "recording-paused")
    resumed = next(e for e in events if e["event"] == "recording-resumed")
    assert paused["data"]["tracks"] == ["mic"] and resumed["data"]["tracks"] == ["mic"]
    summary = next(e for e in events if e["event"] == "recording-stopped")["data"]["summary"]
    result = check_delivered(endpoint, webhooks, session_id, events, summary,
                             paused["data"]["atNs"], resumed["data"]["atNs"])
    assert webhooks.types(session_id)[:3] == ["capture_session.active", "capture_session.stopped",
                                              "capture_session.exported"], webhooks.types(session_id)
    check_nothing_left(desktop_env, session_id)
    print(f"sdk: {result}")


# ----------------------------------------------------------------------------- capturectl

def test_same_flow_through_capturectl(endpoint, webhooks, desktop_env, tmp_path, consent):
    bin_dir = os.environ["CAPTURE_TEST_BIN_DIR"]
    agent, capturectl = os.path.join(bin_dir, "capture-agent"), os.path.join(bin_dir, "capturectl")
    socket_path = str(tmp_path / "control.sock")
    conn = videodb.connect(api_key=endpoint["api_key"], base_url=endpoint["base_url"])
    session = conn.create_capture_session(end_user_id="capturectl-user", callback_url=webhooks.url)
    token_file = tmp_path / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(conn.generate_client_token(expires_in=600))

    daemon = subprocess.Popen([agent, "daemon", "--transport", "socket", "--socket", socket_path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "agent.log", "wb"))
    try:
        def ctl(*args, timeout=60):
            r = subprocess.run([capturectl, *args, "--socket", socket_path], capture_output=True, text=True,
                               timeout=timeout)
            assert r.returncode == 0, f"capturectl {' '.join(args)}: {r.returncode} {r.stderr}"
            return r.stdout

        deadline = time.monotonic() + 20
        while subprocess.run([capturectl, "ping", "--socket", socket_path], capture_output=True).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.1)
        follower = subprocess.Popen([capturectl, "events", "--follow", "--json", "--socket", socket_path],
                                    stdout=subprocess.PIPE, text=True)
        channels = json.loads(ctl("channels", "--json"))["channels"]
        ids = {c["channel_id"] for c in channels}
        assert {"mic:default", "display:1", "system_audio:default"} <= ids, ids
        consent.expect()   # Wayland: a new user's first start shows the desktop's dialog
        ctl("start", "--session", session.id, "--token-file", str(token_file), "--endpoint", endpoint["base_url"],
            "--channel", "mic:default", "--channel", "display:1", "--channel", "system_audio:default",
            "--primary", "display:1", "--json")
        consent.answered()
        started = time.monotonic()
        webhooks.wait_for(session.id, "capture_session.active", 30)
        assert conn.get_capture_session(session.id).status == "active"
        time.sleep(max(0.0, started + PAUSE_AT - time.monotonic()))
        ctl("pause", "--track", "mic")
        time.sleep(max(0.0, started + RESUME_AT - time.monotonic()))
        ctl("resume", "--track", "mic")
        time.sleep(max(0.0, started + RECORD_SECONDS - time.monotonic()))
        stopped = json.loads(ctl("stop", "--json", timeout=120))
        time.sleep(0.5)
        follower.terminate()
        events = [json.loads(line) for line in follower.communicate(timeout=10)[0].splitlines() if line.strip()]
    finally:
        daemon.terminate()
        status = daemon.wait(timeout=20)
    assert status == 0, f"the daemon exited with {status}"

    events = [e for e in events if e.get("sessionId") == session.id]
    paused = next(e for e in events if e["event"] == "recording-paused")
    resumed = next(e for e in events if e["event"] == "recording-resumed")
    result = check_delivered(endpoint, webhooks, session.id, events, stopped["summary"],
                             paused["data"]["atNs"], resumed["data"]["atNs"])
    assert not os.path.exists(socket_path), "the daemon left its socket behind"
    check_nothing_left(desktop_env, session.id)
    print(f"capturectl: {result}")
