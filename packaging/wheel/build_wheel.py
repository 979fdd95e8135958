#!/usr/bin/env python3
"""Writes the videodb-capture-bin wheel (a zip laid out as PEP 427 says) from a built
capture-agent; standard library only, so it runs on Debian's python3 as it is.

Usage: build_wheel.py --binary PATH [--libs LIB ...] --out DIR --version V
                      --agent-version A [--requires-external PKG ...]
--libs: shared libraries that go into videodb_capture_bin/lib (the Swift runtime the
binary finds through its RUNPATH, $ORIGIN/../../lib).
Prints the wheel's path.
"""
import argparse
import base64
import hashlib
import io
import os
import re
import stat
import sys
import zipfile

NAME = "videodb-capture-bin"
DIST = "videodb_capture_bin"
TAG = "py3-none-linux_x86_64"
HERE = os.path.dirname(os.path.abspath(__file__))


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def metadata(version: str, agent_version: str, requires_external: list) -> str:
    packages = ", ".join(requires_external) or "(none found)"
    head = [
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {version}",
        "Summary: capture-agent, the Linux (X11, PulseAudio/PipeWire) capture runtime for the VideoDB SDK's videodb[capture]",
        "Platform: Linux",
        "Supported-Platform: linux_x86_64",
        "Requires-Python: >=3.8",
        "Classifier: Operating System :: POSIX :: Linux",
        "Classifier: Environment :: X11 Applications",
        "Classifier: Topic :: Multimedia :: Video :: Capture",
    ]
    head += [f"Requires-External: {p}" for p in requires_external]
    head.append("Description-Content-Type: text/markdown")
    body = f"""
# videodb-capture-bin for Linux (capture-agent {agent_version})

The VideoDB Python SDK's capture extra (`pip install "videodb[capture]"`) needs a
native capture runtime; the published `videodb-capture-bin` wheels carry one for
macOS and Windows only. This wheel carries **capture-agent**, an independent Linux
runtime: the SDK's `CaptureClient` finds it through `videodb_capture_bin.get_binary_path()`
and drives it unmodified over stdin/stdout.

It records the screen (Wayland through the desktop's ScreenCast portal and PipeWire;
X11 through XShm), the microphone and system audio through PulseAudio or PipeWire's
pulse server, encodes H.264/AAC and uploads the chunks to the server the SDK's
`base_url` names.

**What it talks to.** The upload uses capture-agent's own WebSocket uplink protocol,
which a capture endpoint such as capture-agent's reference `capture-endpoint` speaks.
It does not (yet) speak VideoDB's cloud: with `base_url` at VideoDB's service, capture
goes into the agent's local spool, nothing is uploaded, and the agent reports the
error code `ENDPOINT_INCOMPATIBLE` (event `endpoint-incompatible`) at once.

Version {version}: the SDK interface of videodb-capture-bin 0.3.1; the local part
names the capture-agent release inside.

## System libraries

The program links these shared libraries from the system; on Debian 12 install them with

    sudo apt-get install {' '.join(requires_external)}

(Debian 12 packages: {packages}.)
"""
    return "\n".join(head) + "\n" + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--libs", nargs="*", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--agent-version", required=True)
    ap.add_argument("--requires-external", nargs="*", default=[])
    args = ap.parse_args()
    # PEP 440, public part plus an optional local part (what pip accepts in a file name).
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*(\+[A-Za-z0-9]+(\.[A-Za-z0-9]+)*)?", args.version):
        print(f"build_wheel.py: not a wheel version: {args.version}", file=sys.stderr)
        return 2

    with open(args.binary, "rb") as f:
        binary = f.read()
    with open(os.path.join(HERE, "videodb_capture_bin.py"), encoding="utf-8") as f:
        init = (f.read().replace("@WHEEL_VERSION@", args.version)
                .replace("@AGENT_VERSION@", args.agent_version)).encode()
    info = f"{DIST}-{args.version}.dist-info"
    files = [
        (f"{DIST}/__init__.py", init, 0o644),
        (f"{DIST}/bin/linux_x86_64/capture", binary, 0o755),
    ]
    for lib in sorted(args.libs):
        with open(lib, "rb") as f:
            files.append((f"{DIST}/lib/{os.path.basename(lib)}", f.read(), 0o644))
    files += [
        (f"{info}/METADATA", metadata(args.version, args.agent_version, args.requires_external).encode(), 0o644),
        (f"{info}/WHEEL", (
            "Wheel-Version: 1.0\n"
            "Generator: capture-agent packaging/build-wheel.sh\n"
            "Root-Is-Purelib: false\n"
            f"Tag: {TAG}\n").encode(), 0o644),
        (f"{info}/top_level.txt", f"{DIST}\n".encode(), 0o644),
    ]
    record = "\n".join(record_line(p, d) for p, d, _ in files) + f"\n{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode(), 0o644))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{DIST}-{args.version}-{TAG}.whl")
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, data, mode in files:
            entry = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            entry.external_attr = (stat.S_IFREG | mode) << 16   # pip keeps the executable bit
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    os.replace(tmp, path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
