# Shared helpers for the set-up steps: sourced, never run.
# Every step is idempotent and does nothing (quickly) when nothing is missing.

# Install the Debian packages among "$@" that are not installed yet.
need_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "    installing Debian packages: ${missing[*]}" >&2
    # The package lists may be absent or stale on a fresh machine: refresh once a day.
    local stamp=/var/lib/apt/periodic/falconer-update-stamp
    if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
        apt-get update -qq
        mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Cache for built binaries, outside the repository so CI runs on the same machine reuse it.
FALCONER_CACHE="${FALCONER_CACHE:-/var/cache/falconer}"
export FALCONER_CACHE

# The Go toolchain: Debian's golang is too old for Kubernetes 1.34 (needs go >= 1.24), so
# a machine without a recent `go` gets the pinned toolchain from the Go module proxy,
# where Go publishes its releases as the module golang.org/toolchain.
GO_TOOLCHAIN=go1.26.8
GO_TOOLCHAIN_SHA256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

# True when `$1` is a go command of version 1.24 or newer.
go_is_recent() {
    local v
    v="$("$1" env GOVERSION 2>/dev/null)" || return 1
    v="${v#go}"
    [ "${v%%.*}" -gt 1 ] || { v="${v#*.}"; [ "${v%%.*}" -ge 24 ]; }
}

# Print the path of a usable go command, fetching the pinned toolchain when none is.
falconer_go() {
    local candidate dest="$FALCONER_CACHE/go/toolchain-$GO_TOOLCHAIN" zip
    mkdir -p "$FALCONER_CACHE/go"
    for candidate in "$(command -v go 2>/dev/null)" /usr/local/go/bin/go "$dest/bin/go"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] && go_is_recent "$candidate" \
            && { echo "$candidate"; return 0; }
    done
    [ "$(uname -m)" = x86_64 ] || { echo "no go >= 1.24 found; install one for $(uname -m)" >&2; exit 1; }
    need_apt curl ca-certificates unzip
    # The module proxy is the one the machine is configured with (GOPROXY's first entry).
    local proxy="${GOPROXY:-}"
    proxy="${proxy%%[,|]*}"
    case "$proxy" in
        http://*|https://*) ;;
        *) echo "no go >= 1.24 found and GOPROXY names no module proxy to fetch one from" >&2; exit 1 ;;
    esac
    echo "    fetching Go $GO_TOOLCHAIN from the Go module proxy" >&2
    zip="$(mktemp "$FALCONER_CACHE/go/toolchain.XXXXXX.zip")"
    curl -sSfL -o "$zip" "$proxy/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-amd64.zip"
    echo "$GO_TOOLCHAIN_SHA256  $zip" | sha256sum -c --quiet >&2
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    unzip -q "$zip" -d "$dest.tmp" && rm -f "$zip"
    # Module zips carry no file modes: the commands must be made executable again.
    chmod -R a+x "$dest.tmp"/golang.org/*/bin "$dest.tmp"/golang.org/*/pkg/tool
    rm -rf "$dest" && mv "$dest.tmp"/golang.org/toolchain@* "$dest" && rm -rf "$dest.tmp"
    echo "$dest/bin/go"
}

# Run falconer_go's go command with "$@", reproducibly and from the caches: modules and
# build cache under $FALCONER_CACHE/go, -trimpath, no VCS stamp, this toolchain only
# (GOTOOLCHAIN=local), static binaries (CGO_ENABLED=0). Variables set on the call
# (GOBIN=dir falconer_go_run install ...) reach go.
falconer_go_run() {
    local go
    go="$(falconer_go)"
    GOMODCACHE="$FALCONER_CACHE/go/mod" GOCACHE="$FALCONER_CACHE/go/cache" \
        GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 "$go" "$@"
}
