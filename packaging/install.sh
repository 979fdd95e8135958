#!/usr/bin/env bash
# packaging/install.sh: installs capture-agent, capturectl, the systemd user
# units (systemd/capture-agent.service and .socket), shell completions for
# capturectl and a sample configuration.
#
# Usage:
#   swift build -c release --static-swift-stdlib
#   sudo packaging/install.sh --binary-dir .build/release     system-wide, PREFIX=/usr/local
#   packaging/install.sh --user                               this user only (builds first)
#   DESTDIR=/tmp/stage packaging/install.sh --prefix /usr --binary-dir DIR   (packagers)
#
# Options:
#   --user             install for the current user: ~/.local/bin,
#                      ${XDG_CONFIG_HOME:-~/.config}/systemd/user,
#                      ${XDG_DATA_HOME:-~/.local/share}/{bash-completion,zsh,doc},
#                      ~/.config/fish/completions
#   --prefix DIR       system-wide prefix (default: $PREFIX, else /usr/local):
#                      DIR/bin, DIR/lib/systemd/user, DIR/share/...
#   --unit-dir DIR     put the units here instead
#   --binary-dir DIR   take capture-agent (and capturectl) from DIR; without it
#                      the script runs `swift build -c release --static-swift-stdlib`
#                      in the repository and takes its bin path
#   --no-completions   do not install shell completions
#   -h, --help         this text
#
# Environment: DESTDIR (staging root, prepended to every path written; the
# units still name the final paths), PREFIX.
#
# ExecStart= in the installed service names the installed capture-agent.
# Completions come from `capturectl --generate-completion-script bash|zsh|fish`;
# without a working capturectl they are skipped with a warning.
# packaging/uninstall.sh takes the same options and removes what this installs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source-path=SCRIPTDIR source=layout.sh
source "$here/layout.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }

layout_parse_options "$@"
mode=$LAYOUT_MODE prefix=$LAYOUT_PREFIX unit_dir=$LAYOUT_UNIT_DIR destdir=$LAYOUT_DESTDIR
binary_dir=""
completions=yes
set -- "${LAYOUT_REST[@]}"
while (($#)); do
    case $1 in
        --binary-dir) [[ $# -ge 2 ]] || die "--binary-dir needs a directory"; binary_dir=$2; shift ;;
        --binary-dir=*) binary_dir=${1#*=} ;;
        --no-completions) completions=no ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

layout_compute "$mode" "$prefix" "$unit_dir"

# --- The binaries -----------------------------------------------------------
if [[ -z $binary_dir ]]; then
    command -v swift >/dev/null 2>&1 || die "swift is not in PATH; build first and pass --binary-dir DIR"
    build=(swift build --package-path "$repo" -c release --static-swift-stdlib)
    printf 'Building: %s\n' "${build[*]}"
    "${build[@]}"
    binary_dir=$("${build[@]}" --show-bin-path)
fi
binary_dir=$(cd "$binary_dir" 2>/dev/null && pwd) || die "no such directory: $binary_dir"
[[ -x $binary_dir/capture-agent && -f $binary_dir/capture-agent ]] \
    || die "$binary_dir/capture-agent is missing or not executable"
have_ctl=yes
if [[ ! -x $binary_dir/capturectl || ! -f $binary_dir/capturectl ]]; then
    have_ctl=no
    warn "$binary_dir/capturectl is missing: installing without capturectl and its completions"
fi

# The unit names the final path. systemd needs '%' doubled; refuse what would
# need quoting rather than guess.
agent_path=$BIN_DIR/capture-agent
case $agent_path in
    *[[:space:]\"\'\\]*) die "the binary path must not contain spaces, quotes or backslashes: $agent_path" ;;
esac
unit_agent_path=${agent_path//%/%%}

# --- Install ----------------------------------------------------------------
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

# Copies the service with ExecStart=/usr/bin/capture-agent ARGS rewritten to the
# installed binary, keeping ARGS.
rewrite_service() {
    local line count=0
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line == ExecStart=/usr/bin/capture-agent || $line == "ExecStart=/usr/bin/capture-agent "* ]]; then
            printf 'ExecStart=%s%s\n' "$unit_agent_path" "${line#ExecStart=/usr/bin/capture-agent}"
            count=$((count + 1))
        else
            printf '%s\n' "$line"
        fi
    done <"$1" >"$2"
    [[ $count -eq 1 ]] || die "$1: expected one ExecStart=/usr/bin/capture-agent line, found $count"
}
rewrite_service "$repo/systemd/capture-agent.service" "$staging/capture-agent.service"

put() { # put MODE SOURCE FINAL_PATH
    install -D -m "$1" "$2" "$destdir$3"
    printf '  %s\n' "$destdir$3"
}

printf 'Installing (%s) into %s\n' "$mode" "${destdir:-/}"
put 0755 "$binary_dir/capture-agent" "$BIN_DIR/capture-agent"
if [[ $have_ctl == yes ]]; then put 0755 "$binary_dir/capturectl" "$BIN_DIR/capturectl"; fi
put 0644 "$staging/capture-agent.service" "$UNIT_DIR/capture-agent.service"
put 0644 "$repo/systemd/capture-agent.socket" "$UNIT_DIR/capture-agent.socket"
put 0644 "$here/config.toml.example" "$DOC_DIR/config.toml.example"

if [[ $completions == yes && $have_ctl == yes ]]; then
    for shell in bash zsh fish; do
        case $shell in
            bash) target=$BASH_COMPLETION ;;
            zsh) target=$ZSH_COMPLETION ;;
            fish) target=$FISH_COMPLETION ;;
        esac
        if "$binary_dir/capturectl" --generate-completion-script "$shell" >"$staging/completion" 2>"$staging/completion.err" \
            && [[ -s $staging/completion ]]; then
            # A bash completion is sourced, not run: no #! line (the generator writes one).
            [[ $shell == bash ]] && sed -i '1{/^#!/d}' "$staging/completion"
            put 0644 "$staging/completion" "$target"
        else
            warn "capturectl --generate-completion-script $shell failed or printed nothing; no $shell completion ($(head -c 300 "$staging/completion.err"))"
        fi
    done
fi

# --- Next steps -------------------------------------------------------------
if [[ -n $destdir ]]; then
    printf '\nStaged into %s. The units run %s.\n' "$destdir" "$agent_path"
    exit 0
fi

if ! layout_user_unit_paths | grep -qxF "$UNIT_DIR"; then
    warn "systemd does not search $UNIT_DIR for user units (see systemd-analyze --user unit-paths); pass --unit-dir or link the units"
fi
if [[ $mode == user ]] && [[ ":$PATH:" != *":$BIN_DIR:"* ]]; then
    warn "$BIN_DIR is not in PATH: add it to run capturectl by name"
fi
cat <<MSG

Done. Start the daemon on demand (the control socket starts it):

    systemctl --user daemon-reload && systemctl --user enable --now capture-agent.socket

(or also at login: systemctl --user enable --now capture-agent.service)

The user manager needs the desktop session's variables: WAYLAND_DISPLAY on
Wayland (the ScreenCast portal is reached on the session bus), DISPLAY and
XAUTHORITY on X11. Most desktop sessions import them already; otherwise, from
the desktop session:

    systemctl --user import-environment WAYLAND_DISPLAY XDG_CURRENT_DESKTOP DISPLAY XAUTHORITY
    dbus-update-activation-environment --systemd WAYLAND_DISPLAY XDG_CURRENT_DESKTOP

Settings: copy $DOC_DIR/config.toml.example to
\${XDG_CONFIG_HOME:-~/.config}/capture-agent/config.toml and edit it.
Logs: journalctl --user -u capture-agent
MSG
if [[ $mode == system ]]; then
    printf '\nEvery user enables the units for themselves (as that user, not with sudo).\n'
fi
if [[ $mode == user && $completions == yes && $have_ctl == yes ]]; then
    printf 'zsh: add %s to fpath to use the completion.\n' "$(dirname "$ZSH_COMPLETION")"
fi
