#!/usr/bin/env bash
# Removes what packaging/install.sh installed; takes the same options (--user, --prefix, --destdir).
set -euo pipefail
exec "$(dirname "$0")/install.sh" --uninstall "$@"
