#!/usr/bin/env bash
# A real Kubernetes node on this host (e2e/node.py): Debian's containerd (its CRI plugin
# runs the pods), runc, the CNI plugins (bridge, host-local, loopback, portmap), iptables
# (kube-proxy's Service rules) and iproute2 (the bridge), plus crictl, which the node
# harness uses to tear pods down through the CRI. kubelet and kube-proxy come from
# 30-controlplane.sh (same wrapper module, same version as the API server).
#
# crictl is built from the Go module proxy into $FALCONER_CACHE/bin/crictl-<version>
# (35 s to 3 min cold, depending on the module cache and load; a rerun does nothing).
# Debian has no crictl package.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

# Must equal CRICTL_VERSION in e2e/binaries.py (a test checks it).
CRICTL_VERSION=v1.34.0

START=$SECONDS
say() { echo "    [$((SECONDS - START))s] $*" >&2; }

need_apt containerd runc containernetworking-plugins iptables iproute2

BIN="$FALCONER_CACHE/bin"
mkdir -p "$BIN"
if [ -x "$BIN/crictl-$CRICTL_VERSION" ]; then
    say "crictl-$CRICTL_VERSION present"
else
    say "building crictl $CRICTL_VERSION"
    GO="$(falconer_go)"
    export GOMODCACHE="$FALCONER_CACHE/go/mod" GOCACHE="$FALCONER_CACHE/go/cache"
    # `go install pkg@version` checks the module against the checksum database itself.
    export GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
    tmp="$(mktemp -d "$BIN/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # The version stamp cri-tools' Makefile sets, so `crictl --version` names the pin.
    GOBIN="$tmp" "$GO" install \
        -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
        "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    mv -f "$tmp/crictl" "$BIN/crictl-$CRICTL_VERSION"
    say "built crictl-$CRICTL_VERSION"
fi
