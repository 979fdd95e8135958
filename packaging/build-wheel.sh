#!/usr/bin/env bash
# packaging/build-wheel.sh: builds the videodb-capture-bin wheel for Linux, which
# makes `pip install "videodb[capture]"` work there: the VideoDB SDK imports
# videodb_capture_bin and spawns get_binary_path(), which in this wheel is our
# capture-agent (bin/linux_x86_64/capture). See packaging/README.md.
#
# Usage:
#   packaging/build-wheel.sh [--out DIR] [--binary-dir DIR] [--version V]
#   pip install --find-links DIR "videodb[capture]"
#
# Options:
#   --out DIR          where the wheel goes (default: dist/)
#   --binary-dir DIR   take capture-agent from DIR; without it the script runs
#                      swift build -c release --product capture-agent
#   --version V        the wheel's version (default: 0.3.1+agent.<capture-agent's version>:
#                      the SDK requires videodb-capture-bin>=0.3.1, whose stdio interface
#                      this is; the local part names the capture-agent release inside)
#
# The binary is stripped into the wheel. Built against the toolchain's shared Swift
# runtime, it takes the runtime libraries it uses along (videodb_capture_bin/lib, found
# through RUNPATH $ORIGIN/../../lib, as auditwheel would bundle them); a statically linked
# one goes alone. Its system libraries must come from Debian packages
# (packaging/shlibs.sh); the wheel's metadata lists them (Requires-External, and an
# apt-get line in the description).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=packaging/shlibs.sh
source "$here/shlibs.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { printf 'build-wheel.sh: error: %s\n' "$*" >&2; exit 1; }

out=dist
binary_dir=""
version=""
while (($#)); do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out=$2; shift ;;
        --out=*) out=${1#*=} ;;
        --binary-dir) [[ $# -ge 2 ]] || die "--binary-dir needs a directory"; binary_dir=$2; shift ;;
        --binary-dir=*) binary_dir=${1#*=} ;;
        --version) [[ $# -ge 2 ]] || die "--version needs a value"; version=$2; shift ;;
        --version=*) version=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
for tool in python3 strip dpkg-shlibdeps patchelf; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install python3 binutils dpkg-dev patchelf)"
done

if [[ -z $binary_dir ]]; then
    (cd "$here/.." && swift build -c release --product capture-agent >&2)
    binary_dir=$(cd "$here/.." && swift build -c release --show-bin-path)
fi
agent=$binary_dir/capture-agent
[[ -x $agent ]] || die "no executable capture-agent in $binary_dir"
agent_version=$("$agent" --version) || die "$agent --version failed"
[[ -n $version ]] || version="0.3.1+agent.$agent_version"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The wheel's own layout: videodb_capture_bin/bin/linux_x86_64/capture and .../lib.
binary=$stage/pkg/bin/linux_x86_64/capture
mkdir -p "${binary%/*}"
strip -o "$binary" "$agent"
swift_runtime_bundle "$stage/pkg/lib" "$binary" >"$stage/runtime" || die "cannot bundle the Swift runtime of $agent"
mapfile -t libs < <(sed "s|^|$stage/pkg/lib/|" "$stage/runtime")
depends=$(shlibs_depends "$stage" --private "$stage/pkg/lib" "$binary") || die "cannot list the system libraries of $agent"
mapfile -t packages < <(shlibs_package_names "$depends")

mkdir -p "$out"
python3 "$here/wheel/build_wheel.py" --binary "$binary" --libs "${libs[@]}" --out "$out" --version "$version" \
    --agent-version "$agent_version" --requires-external "${packages[@]}"
