#!/usr/bin/env bash
# packaging/build-deb.sh: builds the Debian packages with dpkg-deb:
#   capture-agent_<version>_<arch>.deb     capture-agent, capturectl, the Swift runtime
#       they share (/usr/lib/capture-agent), the systemd user units, man pages
#       capturectl(1) and capture-agent(8), bash/zsh/fish completions, the sample
#       config (staged with install.sh --prefix /usr);
#   capture-endpoint_<version>_<arch>.deb  capture-endpoint, its system unit
#       (installed, not enabled) and capture-endpoint(8); only when the binary
#       directory holds a capture-endpoint.
# Prints the path of each package built.
#
# Usage:
#   swift build -c release --product capture-agent; swift build -c release --product capturectl
#   packaging/build-deb.sh --out DIR --binary-dir .build/release [--version V]
#   (scripts/package does it all: the two packages and the wheel)
#
# Options:
#   --out DIR          where the packages go (created if missing)
#   --binary-dir DIR   take the binaries from DIR; without it install.sh builds
#                      capture-agent and capturectl (swift build -c release --static-swift-stdlib)
#   --version V        package version (default: what capture-agent --version prints)
#   --maintainer M     Maintainer field (default: capture-agent developers <maintainers@capture-agent.example>)
#   --manual-tool P    swift-argument-parser's generate-manual (default: swift build --product generate-manual)
#   --fast-compression gzip -1 instead of dpkg-deb's xz (the tests: xz takes 25 s and 48 CPU
#                      seconds for capture-endpoint's package; a release keeps xz, 40 % smaller)
#
# Binaries built against the toolchain's shared Swift runtime (swift build without
# --static-swift-stdlib) get the runtime libraries they use copied into the package's
# private /usr/lib/NAME and a RUNPATH of $ORIGIN/../lib/NAME: capture-agent and
# capturectl then share one copy (17 MB) instead of each linking its own statically.
# Full Foundation and ICU are refused (packaging/shlibs.sh, swift_runtime_bundle).
# Statically linked binaries (capture-endpoint) are shipped as they are.
# Depends is computed from the ELF NEEDED entries of the binaries and of the bundled
# runtime with dpkg-shlibdeps (package dpkg-dev), e.g. libc6, libx11-6, libpulse0,
# libavcodec59, libx264-164, libstdc++6. Any other library that no Debian package
# provides is an error.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=packaging/shlibs.sh
source "$here/shlibs.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { printf 'build-deb.sh: error: %s\n' "$*" >&2; exit 1; }

out=""
binary_dir=""
manual_tool=""
version=""
maintainer="capture-agent developers <maintainers@capture-agent.example>"
compression=()
while (($#)); do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out=$2; shift ;;
        --out=*) out=${1#*=} ;;
        --binary-dir) [[ $# -ge 2 ]] || die "--binary-dir needs a directory"; binary_dir=$2; shift ;;
        --binary-dir=*) binary_dir=${1#*=} ;;
        --version) [[ $# -ge 2 ]] || die "--version needs a value"; version=$2; shift ;;
        --version=*) version=${1#*=} ;;
        --manual-tool) [[ $# -ge 2 ]] || die "--manual-tool needs a path"; manual_tool=$2; shift ;;
        --manual-tool=*) manual_tool=${1#*=} ;;
        --maintainer) [[ $# -ge 2 ]] || die "--maintainer needs a value"; maintainer=$2; shift ;;
        --maintainer=*) maintainer=${1#*=} ;;
        --fast-compression) compression=(-Zgzip -z1) ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ -n $out ]] || die "--out DIR is required"
[[ -z $version || $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "not a Debian version: $version"
for tool in dpkg-deb dpkg-shlibdeps dpkg; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install dpkg-dev)"
done
command -v patchelf >/dev/null 2>&1 || die "patchelf is missing (apt-get install patchelf)"
mkdir -p "$out"
out=$(cd "$out" && pwd)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
command -v strip >/dev/null 2>&1 || die "strip is missing (apt-get install binutils)"
arch=$(dpkg --print-architecture)
build_date=${SOURCE_DATE_EPOCH:-$(git -C "$here/.." log -1 --format=%ct 2>/dev/null || date +%s)}

# Man pages come from the same ArgumentParser definitions as --help (swift-argument-parser's
# generate-manual reads `TOOL --experimental-dump-help`), dated by the source, not today, so
# two builds are the same bytes.
if [[ -z $manual_tool ]]; then
    (cd "$here/.." && swift build --product generate-manual >&2) || die "cannot build generate-manual"
    manual_tool=$(cd "$here/.." && swift build --show-bin-path)/generate-manual
fi
[[ -x $manual_tool ]] || die "no generate-manual at $manual_tool"

# man_page ROOT NAME SECTION: ROOT/usr/share/man/manSECTION/NAME.SECTION.gz from ROOT/usr/bin/NAME.
man_page() {
    local root=$1 name=$2 section=$3
    mkdir -p "$root/usr/share/man/man$section" "$stage/man"
    "$manual_tool" "$root/usr/bin/$name" --section "$section" --date "$(date -u -d "@$build_date" +%Y-%m-%d)" \
        --authors "capture-agent developers" -o "$stage/man" >/dev/null || die "generate-manual failed for $name"
    # An empty line in mdoc is a paragraph break groff warns about; .Pp says it.
    sed 's/^$/.Pp/' "$stage/man/$name.$section" | gzip -9n >"$root/usr/share/man/man$section/$name.$section.gz"
}

# prepare_binaries NAME ROOT: strips ROOT/usr/bin/*, bundles the Swift runtime they share
# into ROOT/usr/lib/NAME, and sets DEPENDS from what they link (first, so that a binary
# that needs something no package provides fails before anything runs it).
prepare_binaries() {
    local name=$1 root=$2 f
    # Debian ships binaries stripped (policy 10.1; the symbols would triple the size).
    for f in "$root"/usr/bin/*; do strip --strip-unneeded "$f"; done
    swift_runtime_bundle "$root/usr/lib/$name" "$root"/usr/bin/* >/dev/null || exit 1
    mkdir -p "$stage/shlibs-$name"
    DEPENDS=$(shlibs_depends "$stage/shlibs-$name" --private "$root/usr/lib/$name" "$root"/usr/bin/*) || exit 1
}

# finish_package NAME ROOT EXTRA_CONTROL_LINES DESCRIPTION: writes copyright, changelog and
# control (Depends: $DEPENDS), builds OUT/NAME_VERSION_ARCH.deb and prints its path.
finish_package() {
    local name=$1 root=$2 extra=$3 description=$4 depends=$DEPENDS

    # copyright (machine-readable, DEP-5) and the changelog, as every package has.
    local doc=$root/usr/share/doc/$name
    mkdir -p "$doc"
    cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: capture-agent
Upstream-Contact: $maintainer
Comment: The capture-agent project has not chosen a licence yet; until it does,
 its authors keep all rights. The Swift runtime and FoundationEssentials, shipped
 in /usr/lib/$name or linked in statically, are the Swift project's; Debian's
 libraries are linked dynamically, under their own licences.

Files: *
Copyright: 2026 capture-agent developers
License: none
 No licence has been granted yet.
COPYRIGHT
    if [[ -d $root/usr/lib/$name ]]; then
        cat >>"$doc/copyright" <<COPYRIGHT

Files: usr/lib/$name/*
Copyright: 2014-2026 Apple Inc. and the Swift project authors
License: Apache-2.0 with Runtime Library Exception
 On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0. Runtime Library Exception: as an
 exception, if you use this Software to compile your source code and portions
 of this Software are embedded into the binary product as a result, you may
 redistribute such product without providing attribution as would otherwise
 be required by Sections 4(a), 4(b) and 4(d) of the License.
COPYRIGHT
    fi
    # A version without a Debian revision (0.2.0, not 0.2.0-1) makes a native package,
    # whose changelog is changelog.gz.
    local changelog=changelog.gz
    [[ $version == *-* ]] && changelog=changelog.Debian.gz
    {
        printf '%s (%s) unstable; urgency=medium\n\n' "$name" "$version"
        printf '  * Packaged by packaging/build-deb.sh; see the project history for changes.\n\n'
        printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$build_date")"
    } | gzip -9n >"$doc/$changelog"

    mkdir -p "$root/DEBIAN"
    {
        printf 'Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: %s\n' "$name" "$version" "$arch" "$maintainer"
        printf 'Installed-Size: %s\nDepends: %s\n' "$(du -sk "$root" | cut -f1)" "$depends"
        [[ -n $extra ]] && printf '%s\n' "$extra"
        printf '%s\n' "$description"
    } >"$root/DEBIAN/control"
    local deb=$out/${name}_${version}_${arch}.deb
    dpkg-deb "${compression[@]}" --root-owner-group --build "$root" "$deb" >/dev/null
    printf '%s\n' "$deb"
}

# --- capture-agent: the daemon, capturectl, the user units, completions, the sample config.
root=$stage/capture-agent
install_args=(--prefix /usr)
[[ -n $binary_dir ]] && install_args+=(--binary-dir "$binary_dir")
DESTDIR=$root "$here/install.sh" "${install_args[@]}" >"$stage/install.log" || {
    cat "$stage/install.log" >&2
    die "install.sh failed"
}
prepare_binaries capture-agent "$root"
for b in capture-agent capturectl; do
    [[ -x $root/usr/bin/$b ]] || die "no $b in ${binary_dir:-the build}: the package ships both"
done
if [[ -z $version ]]; then
    version=$("$root/usr/bin/capture-agent" --version) || die "capture-agent --version failed"
    [[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "capture-agent --version printed no Debian version: $version"
fi
man_page "$root" capturectl 1
man_page "$root" capture-agent 8
finish_package capture-agent "$root" "Recommends: pulseaudio | pipewire-pulse
Suggests: capture-endpoint
Section: video
Priority: optional" "Description: Linux screen and audio capture daemon
 capture-agent records the X11 screen, the microphone and the system audio
 (PulseAudio or PipeWire) into H.264/AAC MPEG-TS chunks and uploads them to a
 capture endpoint over WebSocket. It runs as a systemd user service, started
 on demand by its control socket; users enable it with:
 systemctl --user enable --now capture-agent.socket
 capturectl drives it from the shell; the VideoDB SDK drives it over stdio."

# --- capture-endpoint: the reference server and its system unit (when it was built).
endpoint_bin=${binary_dir:+$binary_dir/capture-endpoint}
if [[ -n $endpoint_bin && -x $endpoint_bin ]]; then
    root=$stage/capture-endpoint
    install -D -m 0755 "$endpoint_bin" "$root/usr/bin/capture-endpoint"
    install -D -m 0644 "$here/../systemd/capture-endpoint.service" "$root/usr/lib/systemd/system/capture-endpoint.service"
    prepare_binaries capture-endpoint "$root"
    man_page "$root" capture-endpoint 8
    # swift-nio-extras compiles its own copy of zlib (CNIOExtrasZlib) into every binary that
    # uses its compression handlers; SwiftPM has no way to link the system's instead.
    mkdir -p "$root/usr/share/lintian/overrides"
    printf '%s\n' "# zlib is vendored by swift-nio-extras (CNIOExtrasZlib) and linked in statically." \
        "capture-endpoint: embedded-library zlib [usr/bin/capture-endpoint]" \
        >"$root/usr/share/lintian/overrides/capture-endpoint"
    finish_package capture-endpoint "$root" "Section: net
Priority: optional" "Description: reference server for capture sessions, uplink, webhooks and export
 capture-endpoint serves the VideoDB-style capture session API, client
 tokens, the chunk uplink capture-agent streams to over WebSocket, signed
 webhooks, an event WebSocket, live HLS per channel and export to MP4, with
 SQLite storage. The system unit capture-endpoint.service is installed but
 not enabled: give it /etc/capture-endpoint/api-keys and webhook-secret
 first (see the unit file)."
fi
