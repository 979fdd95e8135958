# shellcheck shell=bash disable=SC2034  # the variables are for the sourcing script
# packaging/layout.sh: where install.sh puts each file and uninstall.sh finds it.
# Sourced, not run. Paths are final (as the running system sees them): the
# scripts prepend $DESTDIR when writing or removing.
#
# layout_compute MODE PREFIX UNIT_DIR_OVERRIDE
#   MODE is "system" or "user". Sets BIN_DIR, UNIT_DIR, BASH_COMPLETION,
#   ZSH_COMPLETION, FISH_COMPLETION, DOC_DIR and INSTALLED_FILES (the
#   complete list, for uninstall.sh).
#
#   system: PREFIX/bin, PREFIX/lib/systemd/user (systemd's user search path
#           holds /usr/lib/systemd/user and /usr/local/lib/systemd/user; see
#           `systemd-analyze --global unit-paths`), PREFIX/share/...
#   user:   ~/.local/bin, ${XDG_CONFIG_HOME:-~/.config}/systemd/user,
#           ${XDG_DATA_HOME:-~/.local/share}/..., fish: ~/.config/fish/completions

layout_compute() {
    local mode=$1 prefix=$2 unit_override=$3
    local data_dir
    if [[ $mode == user ]]; then
        local home=${HOME:?HOME is not set}
        local config_home=${XDG_CONFIG_HOME:-$home/.config}
        data_dir=${XDG_DATA_HOME:-$home/.local/share}
        BIN_DIR=$home/.local/bin
        UNIT_DIR=$config_home/systemd/user
        FISH_COMPLETION=$config_home/fish/completions/capturectl.fish
    else
        prefix=${prefix%/}
        [[ -n $prefix ]] || prefix=/
        [[ $prefix == / ]] && prefix=""
        data_dir=$prefix/share
        BIN_DIR=$prefix/bin
        UNIT_DIR=$prefix/lib/systemd/user
        FISH_COMPLETION=$data_dir/fish/vendor_completions.d/capturectl.fish
    fi
    [[ -n $unit_override ]] && UNIT_DIR=${unit_override%/}
    BASH_COMPLETION=$data_dir/bash-completion/completions/capturectl
    ZSH_COMPLETION=$data_dir/zsh/site-functions/_capturectl
    DOC_DIR=$data_dir/doc/capture-agent
    INSTALLED_FILES=(
        "$BIN_DIR/capture-agent"
        "$BIN_DIR/capturectl"
        "$UNIT_DIR/capture-agent.service"
        "$UNIT_DIR/capture-agent.socket"
        "$BASH_COMPLETION"
        "$ZSH_COMPLETION"
        "$FISH_COMPLETION"
        "$DOC_DIR/config.toml.example"
    )
}

# Where systemd looks for user units, one per line (empty if systemd-analyze is missing).
layout_user_unit_paths() {
    if command -v systemd-analyze >/dev/null 2>&1; then
        systemd-analyze --user unit-paths 2>/dev/null || systemd-analyze --global unit-paths 2>/dev/null || true
    fi
}

# layout_parse_options ARGS...: the options install.sh and uninstall.sh share.
#   Sets LAYOUT_MODE (system|user), LAYOUT_PREFIX ($PREFIX or /usr/local),
#   LAYOUT_UNIT_DIR and LAYOUT_DESTDIR ($DESTDIR, no trailing slash), checks
#   that they are absolute, and leaves every other argument, in order, in
#   LAYOUT_REST for the script's own options. Calls the script's `die`.
layout_parse_options() {
    LAYOUT_MODE=system
    LAYOUT_PREFIX=${PREFIX:-/usr/local}
    LAYOUT_UNIT_DIR=""
    LAYOUT_DESTDIR=${DESTDIR:-}
    LAYOUT_REST=()
    while (($#)); do
        case $1 in
            --user) LAYOUT_MODE=user ;;
            --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; LAYOUT_PREFIX=$2; shift ;;
            --prefix=*) LAYOUT_PREFIX=${1#*=} ;;
            --unit-dir) [[ $# -ge 2 ]] || die "--unit-dir needs a directory"; LAYOUT_UNIT_DIR=$2; shift ;;
            --unit-dir=*) LAYOUT_UNIT_DIR=${1#*=} ;;
            *) LAYOUT_REST+=("$1") ;;
        esac
        shift
    done
    [[ $LAYOUT_PREFIX == /* ]] || die "--prefix must be an absolute path: $LAYOUT_PREFIX"
    [[ -z $LAYOUT_UNIT_DIR || $LAYOUT_UNIT_DIR == /* ]] || die "--unit-dir must be an absolute path: $LAYOUT_UNIT_DIR"
    [[ -z $LAYOUT_DESTDIR || $LAYOUT_DESTDIR == /* ]] || die "DESTDIR must be an absolute path: $LAYOUT_DESTDIR"
    LAYOUT_DESTDIR=${LAYOUT_DESTDIR%/}
}
