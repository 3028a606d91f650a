#!/usr/bin/env bash
# Helm, for the chart's tests (tests/operator/test_helm.py: lint and template). Built from
# the Go module proxy like the control plane (no release tarballs), with the Go toolchain
# that lib.sh finds or fetches, into $FALCONER_CACHE/bin/helm-<version>; nothing to do when present.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

HELM_VERSION=v3.19.0
BIN="$FALCONER_CACHE/bin"
[ -x "$BIN/helm-$HELM_VERSION" ] && exit 0

echo "    building helm $HELM_VERSION (a few minutes on a cold cache)" >&2
mkdir -p "$BIN" "$FALCONER_CACHE/go"
out="$(mktemp -d "$FALCONER_CACHE/go/helm.XXXXXX")"
GOBIN="$out" falconer_go_run install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$out/helm" "$BIN/helm-$HELM_VERSION"
rm -rf "$out"
