#!/usr/bin/env bash
# Installs capture-agent and capturectl the way Linux users expect.
#
#   sudo packaging/install.sh [--prefix /usr/local]   system-wide (default prefix /usr/local)
#   packaging/install.sh --user                       for this user only (~/.local, ~/.config/systemd/user)
#   packaging/install.sh ... --destdir DIR            stage into DIR (for packagers)
#   packaging/install.sh ... --binary-dir DIR         take already built binaries from DIR
#   packaging/install.sh ... --uninstall              remove what an install with the same options put there
#
# Installs: bin/capture-agent, bin/capturectl; the systemd user units
# capture-agent.service (ExecStart rewritten to the installed binary) and
# capture-agent.socket; capturectl completions for bash, zsh and fish; and
# README.md, docs/control-protocol.md and config.toml.example under
# share/doc/capture-agent. Without --binary-dir it builds a release first.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=system
prefix=/usr/local
prefix_given=0
destdir=""
binary_dir=""
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --user) mode=user; shift ;;
    --prefix) prefix="$2"; prefix_given=1; shift 2 ;;
    --destdir) destdir="$2"; shift 2 ;;
    --binary-dir) binary_dir="$2"; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done

if [ "$mode" = user ]; then
  [ "$prefix_given" = 1 ] || prefix="$HOME/.local"
  unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
else
  # Directories the user manager searches (systemd-analyze --user unit-paths).
  case "$prefix" in
    /usr) unit_dir=/usr/lib/systemd/user ;;
    *) unit_dir="$prefix/lib/systemd/user" ;;
  esac
fi
bin_dir="$prefix/bin"
share="$prefix/share"
files=(
  "$bin_dir/capture-agent" "$bin_dir/capturectl"
  "$unit_dir/capture-agent.service" "$unit_dir/capture-agent.socket"
  "$share/bash-completion/completions/capturectl"
  "$share/zsh/site-functions/_capturectl"
  "$share/fish/vendor_completions.d/capturectl.fish"
  "$share/doc/capture-agent/README.md"
  "$share/doc/capture-agent/control-protocol.md"
  "$share/doc/capture-agent/config.toml.example"
)

if [ "$uninstall" = 1 ]; then
  for f in "${files[@]}"; do
    if [ -e "$destdir$f" ]; then rm -f "$destdir$f" && echo "removed $destdir$f"; fi
  done
  rmdir "$destdir$share/doc/capture-agent" 2>/dev/null || true
  echo "uninstalled. If the socket was enabled: systemctl --user disable --now capture-agent.socket"
  exit 0
fi

if [ -z "$binary_dir" ]; then
  echo "== building (release)"
  swift build -c release --product capture-agent 2>&1 | grep -v "prohibited flag" | tail -n 1
  swift build -c release --product capturectl 2>&1 | grep -v "prohibited flag" | tail -n 1
  binary_dir="$(swift build -c release --show-bin-path)"
fi
for b in capture-agent capturectl; do
  [ -x "$binary_dir/$b" ] || { echo "install.sh: $binary_dir/$b is missing or not executable" >&2; exit 66; }
done

put() { # put MODE SOURCE TARGET
  install -D -m "$1" "$2" "$destdir$3"
  echo "installed $destdir$3"
}
put 0755 "$binary_dir/capture-agent" "$bin_dir/capture-agent"
put 0755 "$binary_dir/capturectl" "$bin_dir/capturectl"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/bin/capture-agent|ExecStart=$bin_dir/capture-agent|" systemd/capture-agent.service >"$work/capture-agent.service"
put 0644 "$work/capture-agent.service" "$unit_dir/capture-agent.service"
put 0644 systemd/capture-agent.socket "$unit_dir/capture-agent.socket"

for shell in bash zsh fish; do
  if ! "$binary_dir/capturectl" --generate-completion-script "$shell" >"$work/completion.$shell" 2>/dev/null; then
    echo "install.sh: warning: capturectl could not generate its $shell completions" >&2
    continue
  fi
  case "$shell" in
    bash) put 0644 "$work/completion.bash" "$share/bash-completion/completions/capturectl" ;;
    zsh) put 0644 "$work/completion.zsh" "$share/zsh/site-functions/_capturectl" ;;
    fish) put 0644 "$work/completion.fish" "$share/fish/vendor_completions.d/capturectl.fish" ;;
  esac
done

put 0644 README.md "$share/doc/capture-agent/README.md"
[ -f docs/control-protocol.md ] && put 0644 docs/control-protocol.md "$share/doc/capture-agent/control-protocol.md"
put 0644 packaging/config.toml.example "$share/doc/capture-agent/config.toml.example"

cat <<MSG

Next steps:
  systemctl --user daemon-reload
  systemctl --user enable --now capture-agent.socket
The daemon captures the display in the user manager's DISPLAY/XAUTHORITY; most
desktop sessions import them, otherwise:
  systemctl --user import-environment DISPLAY XAUTHORITY
Settings: ~/.config/capture-agent/config.toml (example: $share/doc/capture-agent/config.toml.example)
Check:    capturectl ping && capturectl channels
MSG
