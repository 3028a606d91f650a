#!/usr/bin/env bash
# The local Kubernetes cluster for the operator and e2e tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a version-matched kubectl, and the node's
# kubelet and kube-proxy (run by e2e/node.py with 40-node.sh's container runtime), built
# from the Go module proxy (no Docker, no release tarballs) by the wrapper modules in
# e2e/controlplane/{kube,etcd}.
#
# Each binary lands in $FALCONER_CACHE/bin/<name>-<version>, keyed by the version pinned in
# the wrapper's go.mod, so bumping a pin rebuilds and an unchanged pin costs nothing. The
# Go build and module caches live under $FALCONER_CACHE too, so reruns and CI on the same
# machine reuse them. A cold build takes 5-8 minutes on 2 cores (4m46s measured with the
# modules already downloaded, 7m37s from nothing on a busy machine); a rerun, 0.03 s.
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
source "$ROOT/tools/setup/lib.sh"

# Print a progress line with the seconds since this step started.
START=$SECONDS
say() { echo "    [$((SECONDS - START))s] $*" >&2; }

SRC="$ROOT/e2e/controlplane"
BIN="$FALCONER_CACHE/bin"
mkdir -p "$BIN"

GO="$(falconer_go)"
export GOMODCACHE="$FALCONER_CACHE/go/mod" GOCACHE="$FALCONER_CACHE/go/cache"
# The committed go.sum is the truth: never let a build edit go.mod/go.sum or switch
# toolchains behind our back.
# No VCS stamping either: the wrapper modules sit inside Falconer's checkout, whose state
# says nothing about the binaries (and git may be absent).
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

# The version a wrapper module pins for one dependency, e.g. "v1.34.4".
pinned_version() { (cd "$1" && "$GO" list -m -f '{{.Version}}' "$2"); }

# True when <name> is already usable: built into the cache, or on PATH at the right
# version (its --version output contains the version).
have_binary() {
    local name="$1" version="$2" onpath flag=--version
    [ -x "$BIN/$name-$version" ] && return 0
    onpath="$(command -v "$name" 2>/dev/null)" || return 1
    [ "$name" = kubectl ] && flag="version --client"
    # shellcheck disable=SC2086 # $flag is one or two words on purpose
    "$onpath" $flag 2>/dev/null | grep -qF "${version#v}" || return 1
    ln -sf "$onpath" "$BIN/$name-$version"
}

# Build `pkgs` (import paths) from module dir `dir` into the cache as <name>-<version>.
# One `go build` for all of them so shared packages compile once; the outputs go to a
# temporary directory and are renamed into place only when every one of them linked.
build_into_cache() {
    local dir="$1" version="$2" ldflags="$3"
    shift 3
    local tmp pkg name
    tmp="$(mktemp -d "$BIN/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' RETURN
    (cd "$dir" && "$GO" build -ldflags "$ldflags" -o "$tmp/" "$@")
    for pkg in "$@"; do
        name="${pkg##*/}"
        mv -f "$tmp/$name" "$BIN/$name-$version"
        say "built $name-$version"
    done
}

# --- Kubernetes -------------------------------------------------------------------------
KUBE_VERSION="$(pinned_version "$SRC/kube" k8s.io/kubernetes)"
kube_missing=()
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    if have_binary "$name" "$KUBE_VERSION"; then
        say "$name-$KUBE_VERSION present"
    else
        kube_missing+=("k8s.io/kubernetes/cmd/$name")
    fi
done
if [ ${#kube_missing[@]} -gt 0 ]; then
    say "building ${kube_missing[*]##*/} $KUBE_VERSION (cold: many minutes on 2 cores)"
    major_minor="${KUBE_VERSION#v}"
    major="${major_minor%%.*}"
    minor="${major_minor#*.}"
    minor="${minor%%.*}"
    ldflags="-s -w"
    # Stamp what upstream's hack/lib/version.sh stamps, so --version and /version report
    # the pinned release (the API server also derives its emulation version from it).
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major"
        ldflags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
        ldflags+=" -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    build_into_cache "$SRC/kube" "$KUBE_VERSION" "$ldflags" "${kube_missing[@]}"
fi

# --- etcd -------------------------------------------------------------------------------
ETCD_VERSION="$(pinned_version "$SRC/etcd" go.etcd.io/etcd/server/v3)"
if have_binary etcd "$ETCD_VERSION"; then
    say "etcd-$ETCD_VERSION present"
else
    say "building etcd $ETCD_VERSION"
    # etcd's version string is a constant of the pinned module; only the commit is a
    # variable, and a module build has none: say where it came from instead.
    build_into_cache "$SRC/etcd" "$ETCD_VERSION" \
        "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION" \
        falconer.local/controlplane/etcd
fi
say "control plane binaries ready in $BIN"
