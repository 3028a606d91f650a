"""Where the cluster's binaries are, and at which versions Falconer expects them.

`tools/setup/30-controlplane.sh` (control plane, kubelet, kube-proxy) and
`tools/setup/40-node.sh` (crictl) build them from the Go module proxy into
`$FALCONER_CACHE/bin/<name>-<version>`, keyed by version so that a pin bump never runs
a stale binary. The pins below must equal the ones in `e2e/controlplane/*/go.mod` and
40-node.sh (tests check it); they live here as constants because an installed Falconer
has neither.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The Kubernetes release the control plane runs (k8s.io/kubernetes in kube/go.mod).
KUBERNETES_VERSION = "v1.34.4"

#: The etcd release (go.etcd.io/etcd/server/v3 in etcd/go.mod).
ETCD_VERSION = "v3.6.16"

#: The cri-tools release of crictl (CRICTL_VERSION in tools/setup/40-node.sh).
CRICTL_VERSION = "v1.34.0"

#: The binaries, each with its pinned version.
VERSIONS: dict[str, str] = {
    "etcd": ETCD_VERSION,
    "kube-apiserver": KUBERNETES_VERSION,
    "kube-controller-manager": KUBERNETES_VERSION,
    "kube-scheduler": KUBERNETES_VERSION,
    "kubectl": KUBERNETES_VERSION,
    "kubelet": KUBERNETES_VERSION,
    "kube-proxy": KUBERNETES_VERSION,
    "crictl": CRICTL_VERSION,
}

#: The set-up step that builds each binary, for the error message when one is missing.
SETUP_STEPS: dict[str, str] = {**{name: "30-controlplane.sh" for name in VERSIONS},
                               "crictl": "40-node.sh"}


class BinaryNotFound(FileNotFoundError):
    """A control-plane binary is neither in the cache nor on PATH at the pinned version."""


@dataclass(frozen=True)
class Binary:
    """One located binary."""

    name: str
    version: str
    path: Path


def cache_dir() -> Path:
    """The folder the set-up step builds into (it honours $FALCONER_CACHE the same way)."""
    return Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bin"


def _version_command(name: str, path: Path) -> list[str]:
    """The command printing `path`'s version (kubectl alone has no --version flag)."""
    if name == "kubectl":
        return [str(path), "version", "--client"]
    return [str(path), "--version"]


def reports_version(name: str, path: Path, version: str) -> bool:
    """Whether the binary at `path` says it is `version` (with or without the "v")."""
    try:
        done = subprocess.run(
            _version_command(name, path), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    # A whole-number match: "v1.34.4" must not accept "v1.34.40".
    bare = re.escape(version.removeprefix("v"))
    return re.search(rf"(?<![\d.])v?{bare}(?![\d.])", done.stdout + done.stderr) is not None


def locate(name: str) -> Binary:
    """Find `name` at its pinned version: the cache first, then PATH.

    A binary on PATH is accepted only when it reports the pinned version, because an
    API server of another minor release would serve different API versions.
    """
    version = VERSIONS[name]
    cached = cache_dir() / f"{name}-{version}"
    if os.access(cached, os.X_OK):
        return Binary(name, version, cached)
    on_path = shutil.which(name)
    if on_path is not None and reports_version(name, Path(on_path), version):
        return Binary(name, version, Path(on_path))
    found = f"{on_path} (another version)" if on_path else "nothing on PATH"
    raise BinaryNotFound(
        f"{name} {version} not found: no {cached} and {found}; "
        f"run ./dev setup to build it (tools/setup/{SETUP_STEPS[name]})"
    )


def missing() -> list[str]:
    """Messages for every binary `locate` cannot find (empty when all are there)."""
    problems: list[str] = []
    for name in VERSIONS:
        try:
            locate(name)
        except BinaryNotFound as error:
            problems.append(str(error))
    return problems
