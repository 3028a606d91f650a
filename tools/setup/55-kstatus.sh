#!/usr/bin/env bash
# kstatus, for the GitOps health test (e2e/test_gitops.py): a small command around
# sigs.k8s.io/cli-utils/pkg/kstatus/status (what Flux computes readiness with), built
# from the Go module proxy with the wrapper module e2e/gitops/kstatus into
# $FALCONER_CACHE/bin/kstatus-<hash of go.mod, go.sum and main.go>; nothing to do when present.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

SRC="$ROOT/e2e/gitops/kstatus"
KEY="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-16)"
BIN="$FALCONER_CACHE/bin"
[ -x "$BIN/kstatus-$KEY" ] && exit 0

echo "    building kstatus (sigs.k8s.io/cli-utils)" >&2
mkdir -p "$BIN" "$FALCONER_CACHE/go"
out="$(mktemp "$FALCONER_CACHE/go/kstatus.XXXXXX")"
(cd "$SRC"; falconer_go_run build -mod=readonly -o "$out" .)
mv "$out" "$BIN/kstatus-$KEY"
