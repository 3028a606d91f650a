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
