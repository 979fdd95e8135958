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
#   (the Swift runtime must be linked in with --static-swift-stdlib). WORKDIR
#   is a scratch directory (dpkg-shlibdeps wants a debian/control there).
#   On failure prints the reason on stderr and returns 1.
#
# shlibs_package_names DEPENDS
#   The package names of a Depends value, one per line, first alternative of each.

shlibs_depends() {
    local work=$1 f lib line found v
    shift
    local -A needed_by=() owned=()
    for f in "$@"; do
        while read -r lib; do
            needed_by[$lib]=${f##*/}
        done < <(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
    done
    local candidates=() unowned=()
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
        echo "error: these libraries belong to no Debian package; build the binaries with swift build -c release --static-swift-stdlib" >&2
        return 1
    fi
    mkdir -p "$work/debian"
    printf 'Source: capture-agent\n\nPackage: capture-agent\nArchitecture: any\n' >"$work/debian/control"
    local binaries=() shlibs
    for f in "$@"; do binaries+=("-e$(readlink -f "$f")"); done
    if ! shlibs=$(cd "$work" && dpkg-shlibdeps -O "${binaries[@]}" 2>"$work/shlibdeps.err"); then
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

# dpkg knows a file by the path its package shipped, with or without /usr.
_shlibs_variants() {
    case $1 in
        /usr/*) printf '%s\n%s\n' "$1" "${1#/usr}" ;;
        *) printf '%s\n%s\n' "$1" "/usr$1" ;;
    esac
    readlink -f "$1"
}
