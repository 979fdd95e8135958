#!/usr/bin/env bash
# packaging/uninstall.sh: removes what packaging/install.sh installed.
#
# Usage (the same options as the install):
#   sudo packaging/uninstall.sh [--prefix DIR] [--unit-dir DIR]
#   packaging/uninstall.sh --user
#   DESTDIR=/tmp/stage packaging/uninstall.sh --prefix /usr
#
# With --user (and no DESTDIR) it first runs
# `systemctl --user disable --now capture-agent.socket capture-agent.service`
# when a user manager is reachable. A system-wide uninstall cannot reach the
# users' managers: each user should disable the units first (the command is
# printed). The spool (~/.local/state/capture-agent) and the configuration
# (~/.config/capture-agent) are left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=layout.sh
source "$here/layout.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { printf 'uninstall.sh: error: %s\n' "$*" >&2; exit 1; }

layout_parse_options "$@"
mode=$LAYOUT_MODE prefix=$LAYOUT_PREFIX unit_dir=$LAYOUT_UNIT_DIR destdir=$LAYOUT_DESTDIR
for arg in "${LAYOUT_REST[@]}"; do
    case $arg in
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

layout_compute "$mode" "$prefix" "$unit_dir"

if [[ -z $destdir && $mode == user ]] && command -v systemctl >/dev/null 2>&1 \
    && systemctl --user show-environment >/dev/null 2>&1; then
    systemctl --user disable --now capture-agent.socket capture-agent.service || true
fi

removed=0
for file in "${INSTALLED_FILES[@]}"; do
    if [[ -e $destdir$file || -L $destdir$file ]]; then
        rm -f -- "$destdir$file"
        printf '  removed %s\n' "$destdir$file"
        removed=$((removed + 1))
    fi
done
# The doc directory is ours alone; the others are shared.
rmdir -- "$destdir$DOC_DIR" 2>/dev/null || true
printf '%d files removed.\n' "$removed"

if [[ -z $destdir ]]; then
    if [[ $mode == system ]]; then
        printf 'Each user who enabled the units: systemctl --user disable --now capture-agent.socket capture-agent.service\n'
    fi
    printf 'Then: systemctl --user daemon-reload\n'
fi
