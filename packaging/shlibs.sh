# shellcheck shell=bash
# packaging/shlibs.sh: the Debian packages a set of binaries needs, shared by
# build-deb.sh (its Depends) and build-wheel.sh (the wheel's Requires-External).
# Sourced, not run.
#
# shlibs_depends WORKDIR BINARY...
#   Prints a Depends value computed by dpkg-shlibdeps from the binaries' ELF
#   NEEDED entries, e.g. "libavcodec59 (>= 7:5.1), libc6 (>= 2.34), ...".
#   Every shared library the binaries load must come from a Debian package:
#   dpkg-shlibdeps quietly treats a library found through RUNPATH (the Swift
#   toolchain's) as private to the package, which would make a package that
#   only runs where that toolchain is installed. Such a library is an error
#   (bundle the Swift runtime with swift_runtime_bundle first, or link it in
#   with --static-swift-stdlib). WORKDIR
#   is a scratch directory (dpkg-shlibdeps wants a debian/control there).
#   On failure prints the reason on stderr and returns 1.
#
#   Libraries found under PRIVATE_DIR (shlibs_depends WORKDIR --private DIR BINARY...)
#   are the package's own (the Swift runtime swift_runtime_bundle put there): they need
#   no Debian package, and what they link counts for Depends like the binaries' own.
#
# shlibs_package_names DEPENDS
#   The package names of a Depends value, one per line, first alternative of each.
#
# swift_runtime_bundle DEST BINARY...
#   For binaries linked against a Swift toolchain's shared runtime (swift build without
#   --static-swift-stdlib): copies the runtime libraries they load (libswiftCore.so,
#   libFoundationEssentials.so, libdispatch.so, ...) into DEST, stripped, and points the
#   binaries at them with a RUNPATH relative to $ORIGIN, so that the binaries of one
#   package share one copy of the runtime. A library a binary names in NEEDED but takes
#   no symbol from is dropped first: TOMLKit imports Foundation, which makes every binary
#   that links it name libFoundation.so (and through it ICU's 40 MB of data) without using
#   it; a static link leaves such a library out the same way. Full Foundation, ICU and the
#   test libraries are refused if a binary still needs them. Static binaries are left as
#   they are. Prints the libraries bundled, one per line.

shlibs_depends() {
    local work=$1 f lib line found v private=""
    shift
    if [[ ${1:-} == --private ]]; then private=$(readlink -f "$2"); shift 2; fi
    local -A needed_by=() owned=()
    for f in "$@"; do
        while read -r lib; do
            needed_by[$lib]=${f##*/}
        done < <(_shlibs_loaded "$f")
    done
    local candidates=() unowned=()
    local -a private_libs=()
    if [[ -n $private ]]; then
        for lib in "${!needed_by[@]}"; do
            [[ $(readlink -f "$lib") == "$private"/* ]] || continue
            private_libs+=("$lib")
            unset 'needed_by[$lib]'
        done
    fi
    for lib in "${!needed_by[@]}"; do mapfile -t -O "${#candidates[@]}" candidates < <(_shlibs_variants "$lib"); done
    if ((${#candidates[@]})); then
        while IFS= read -r line; do
            owned[${line#*: }]=1
        done < <(dpkg -S "${candidates[@]}" 2>/dev/null || true)
    fi
    for lib in "${!needed_by[@]}"; do
        found=no
        while read -r v; do [[ -n ${owned[$v]:-} ]] && found=yes; done < <(_shlibs_variants "$lib")
        [[ $found == yes ]] || unowned+=("$lib (needed by ${needed_by[$lib]})")
    done
    if ((${#unowned[@]})); then
        printf '  %s\n' "${unowned[@]}" | sort >&2
        echo "error: these libraries belong to no Debian package and are not shipped with the binaries (swift_runtime_bundle), nor linked in (swift build --static-swift-stdlib)" >&2
        return 1
    fi
    mkdir -p "$work/debian"
    printf 'Source: capture-agent\n\nPackage: capture-agent\nArchitecture: any\n' >"$work/debian/control"
    local binaries=() shlibs
    for f in "$@" "${private_libs[@]}"; do binaries+=("-e$(readlink -f "$f")"); done
    local search=()
    [[ -n $private ]] && search=("-l$private")
    if ! shlibs=$(cd "$work" && dpkg-shlibdeps -O "${search[@]}" "${binaries[@]}" 2>"$work/shlibdeps.err"); then
        cat "$work/shlibdeps.err" >&2
        echo "error: dpkg-shlibdeps could not map every library to a package" >&2
        return 1
    fi
    shlibs=${shlibs#shlibs:Depends=}
    if [[ -z $shlibs ]]; then
        echo "error: dpkg-shlibdeps printed no dependencies" >&2
        return 1
    fi
    printf '%s\n' "$shlibs"
}

shlibs_package_names() {
    tr ',' '\n' <<<"$1" | sed -e 's/|.*//' -e 's/(.*//' -e 's/[[:space:]]//g' | sed '/^$/d'
}

# The shared libraries the loader finds for FILE (ldd), by absolute path, one per line.
_shlibs_loaded() {
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
}

# _shlibs_symbols --defined-only|--undefined-only FILE: its dynamic symbols, unversioned, sorted.
_shlibs_symbols() {
    nm -D "$1" "$2" | awk '{print $NF}' | sed 's/@.*//' | sort -u
}

# dpkg knows a file by the path its package shipped, with or without /usr.
_shlibs_variants() {
    case $1 in
        /usr/*) printf '%s\n%s\n' "$1" "${1#/usr}" ;;
        *) printf '%s\n%s\n' "$1" "/usr$1" ;;
    esac
    readlink -f "$1"
}

swift_runtime_bundle() {
    local dest=$1 f lib name runtime=""
    shift
    # The toolchain's runtime directory: where ldd finds libswiftCore.so, unless a Debian
    # package owns it.
    for f in "$@"; do
        lib=$(_shlibs_loaded "$f" | grep '/libswiftCore\.so$' || true)
        [[ -n $lib ]] || continue
        dpkg -S "$lib" >/dev/null 2>&1 && continue
        runtime=$(dirname "$(readlink -f "$lib")")
        break
    done
    [[ -n $runtime ]] || return 0

    local -A bundle=() exports=()
    for f in "$@"; do
        # Drop the runtime libraries the binary names but takes nothing from.
        local undefined
        undefined=$(_shlibs_symbols --undefined-only "$f")
        while read -r name; do
            lib=$runtime/$name
            [[ -e $lib ]] || continue
            [[ -n ${exports[$name]+set} ]] || exports[$name]=$(_shlibs_symbols --defined-only "$lib")
            if [[ -z $(comm -12 <(printf '%s\n' "$undefined") <(printf '%s\n' "${exports[$name]}")) ]]; then
                patchelf --remove-needed "$name" "$f"
            fi
        done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
        while read -r lib; do
            [[ $(readlink -f "$lib") == "$runtime"/* ]] && bundle[$lib]=${f##*/}
        done < <(_shlibs_loaded "$f")
    done
    local refused=()
    for lib in "${!bundle[@]}"; do
        case ${lib##*/} in
            libFoundation.so|libFoundationNetworking.so|libFoundationXML.so|libFoundationInternationalization.so|\
            lib_FoundationICU.so|libXCTest.so|libTesting.so|lib_Testing_*.so)
                refused+=("$lib (needed by ${bundle[$lib]})") ;;
        esac
    done
    if ((${#refused[@]})); then
        printf '  %s\n' "${refused[@]}" | sort >&2
        echo "error: full Foundation, ICU and the test libraries do not go into a package: use FoundationEssentials" >&2
        return 1
    fi
    ((${#bundle[@]})) || return 0
    mkdir -p "$dest"
    for lib in "${!bundle[@]}"; do
        install -m 0644 "$lib" "$dest/${lib##*/}"
        strip --strip-unneeded "$dest/${lib##*/}"
        patchelf --set-rpath '$ORIGIN' "$dest/${lib##*/}"
        printf '%s\n' "${lib##*/}"
    done | sort
    for f in "$@"; do
        # (not grep -q: under pipefail, readelf's SIGPIPE would fail the test)
        [[ $(readelf -d "$f") == *'[libswiftCore.so]'* ]] || continue
        patchelf --set-rpath "\$ORIGIN/$(realpath -m --relative-to="$(dirname "$f")" "$dest")" "$f"
    done
}
