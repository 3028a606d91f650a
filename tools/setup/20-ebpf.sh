#!/usr/bin/env bash
# eBPF prerequisites of the sensor (bcc compiles sensor/probe.bpf.c at start):
# - bcc's Python bindings and Debian's kernel headers (+ gcc for the tests' helpers);
# - /lib/modules/$(uname -r)/{build,source} pointing at the headers when the running
#   kernel has no headers package of its own (bcc looks there);
# - tracefs mounted at /sys/kernel/tracing (tracepoints are attached through it).
# Idempotent: does nothing when all of it is in place.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

# gcc/libc6-dev build the tests' C helpers; git is part of their benign workload.
need_apt python3-bpfcc linux-headers-amd64 gcc libc6-dev git

release="$(uname -r)"
moddir="/lib/modules/$release"

# Pick Debian's newest installed header tree (amd64 build dir + its -common source).
latest_headers() {
    ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1
}

if [ ! -e "$moddir/build/Makefile" ]; then
    build="$(latest_headers)"
    if [ -z "$build" ]; then
        echo "    no /usr/src/linux-headers-*-amd64 found: install linux-headers-amd64" >&2
        exit 1
    fi
    common="${build%-amd64}-common"
    if [ ! -d "$common" ]; then
        echo "    $common missing (expected next to $build)" >&2
        exit 1
    fi
    echo "    linking $moddir/{build,source} -> $build, $common" >&2
    mkdir -p "$moddir"
    ln -sfn "$build" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
fi

if [ ! -d /sys/kernel/tracing/events ]; then
    echo "    mounting tracefs at /sys/kernel/tracing" >&2
    mount -t tracefs tracefs /sys/kernel/tracing || {
        echo "    cannot mount tracefs: the sensor needs /sys/kernel/tracing" >&2
        exit 1
    }
fi

if [ ! -e /sys/kernel/btf/vmlinux ]; then
    echo "    warning: /sys/kernel/btf/vmlinux missing; bcc works from the headers alone" >&2
fi
