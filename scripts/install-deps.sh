#!/usr/bin/env bash
# Installs the Debian 12 packages capture-agent needs to build, test and demo.
# Idempotent: packages already present are skipped quickly.
#
#   scripts/install-deps.sh            everything: building, the rigs, the tests, packaging
#   scripts/install-deps.sh --build    only what `swift build` needs (headers, pkg-config):
#                                      scripts/test installs the rest beside the build
set -euo pipefail

only_build=0
case "${1:-}" in
  "") ;;
  --build) only_build=1 ;;
  *) echo "install-deps: unknown argument '$1' (--build, or nothing)" >&2; exit 64 ;;
esac

BUILD_PKGS=(
  pkg-config
  libpulse-dev libx11-dev libxext-dev libxfixes-dev libxrandr-dev libxdamage-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libwebsockets-dev libx264-dev
  # Wayland desktops: the ScreenCast portal over sd-bus, the compositor's monitors, the
  # screencast's PipeWire stream.
  libsystemd-dev libwayland-dev libpipewire-0.3-dev
  # capture-endpoint: GRDB links the system SQLite; chunk digests use libcrypto; webhooks
  # (http and https) go out through libcurl.
  libsqlite3-dev libssl-dev libcurl4-openssl-dev
)
RIG_PKGS=(
  xvfb xserver-xorg-core xserver-xorg-video-dummy
  pulseaudio pulseaudio-utils
  # PipeWire with its pulse server, as most desktops run it (the rig's --audio-server pipewire;
  # it needs a D-Bus session bus, which the rig starts itself).
  pipewire pipewire-pulse wireplumber dbus-daemon
  ffmpeg x11-utils x11-xserver-utils x11-apps xdotool
  procps time
  # The Wayland rig (scripts/rig --desktop gnome-wayland): headless mutter, the GNOME
  # ScreenCast portal, D-Bus from Python for the consent dialog and the pointer
  # (rig-desktop.py), GStreamer's PipeWire source for screenshots and the reference in
  # scripts/benchmark-wayland.
  mutter xdg-desktop-portal xdg-desktop-portal-gnome python3-dbus python3-gi
  gstreamer1.0-tools gstreamer1.0-pipewire gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad
)
# Daemon tests and docs: systemd-analyze / systemd-socket-activate, setpriv
# (util-linux), a stdlib Python client run as another user, socat examples,
# dpkg-shlibdeps for the .deb test.
TEST_PKGS=(
  systemd util-linux python3 socat dpkg-dev
  # The endpoint's tests and the SDK quickstart: venvs with the VideoDB SDK, schemathesis
  # and pytest from PyPI.
  python3-venv
  # Packaging: strip (build-deb.sh, build-wheel.sh), patchelf to point the binaries at
  # the Swift runtime they ship with, man to render the generated pages, lintian to
  # check the .deb.
  binutils patchelf man-db lintian
)

# Installed, or installed with its triggers not yet run: while another dpkg run processes
# man-db's triggers (the .deb's install test, beside the benchmarks), man-db is
# "triggers-pending", and asking apt for it then failed on the dpkg lock.
wanted=("${BUILD_PKGS[@]}")
[ "$only_build" = 1 ] || wanted+=("${RIG_PKGS[@]}" "${TEST_PKGS[@]}")
missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -Eq "^install ok (installed|triggers-pending|triggers-awaited)$"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt or dpkg run (a test installing the .deb) is waited for, up to 5 minutes.
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
