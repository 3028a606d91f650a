#!/usr/bin/env bash
# The local container images (e2e/images.py), built without Docker or a registry into
# $FALCONER_CACHE/images: pause (gcc, static), busybox (Debian's busybox-static), the
# sensor (a debootstrap'd Debian 12 base, built once, plus Falconer from this checkout) and
# the benign workload's servers (busybox plus Debian's Redis from redis-tools, which ships
# the server binary without installing or starting a service).
# Idempotent: an image whose inputs did not change is not rebuilt (a second or two).
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

# gcc/libc6-dev: the static pause; busybox-static: the busybox and workload images;
# redis-tools: the workload image's Redis; debootstrap and
# Debian's archive keyring: the sensor base; python3-pip: installs Falconer's wheel with
# Debian's own Python layout (/usr/local/lib/python3.X/dist-packages).
need_apt gcc libc6-dev busybox-static debootstrap debian-archive-keyring python3-pip \
    redis-tools

"$ROOT/.venv/bin/python" -m falconer_e2e.images build >/dev/null
