#!/usr/bin/env bash
# What the rule tests (`falconer test rules/tests/*.yaml`) run: `ip` for a test's own
# network namespace, setcap/getcap, mount/nsenter/unshare, and the tools of the benign
# workload (git, gcc, tar, xz, sqlite3, curl).
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"
need_apt iproute2 libcap2-bin util-linux mount git gcc libc6-dev tar xz-utils sqlite3 curl
