#!/usr/bin/env bash
# The Python environment: a virtual env on Debian's python3 (bcc's Python bindings come
# from Debian's python3-bpfcc, so the env sees system site-packages), with the product
# (pyproject.toml, with its dev extras) and the test harness (e2e/pyproject.toml,
# `falconer_e2e`) installed editable. Re-installs only when either pyproject.toml changes.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"
need_apt python3 python3-venv python3-pip python3-bpfcc
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/e2e/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    # The build backend's chatter goes to a log; it is shown only when the install fails.
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$ROOT[dev]" -e "$ROOT/e2e"; } >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
