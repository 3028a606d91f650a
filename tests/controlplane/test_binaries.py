"""The pinned versions agree everywhere, and the built binaries report them."""

from __future__ import annotations

import re
from pathlib import Path

import prereq
import pytest

from falconer.paths import ROOT
from falconer_e2e import binaries

MODULES = ROOT / "e2e" / "controlplane"


def required_version(go_mod: str, module: str) -> str:
    """The version `go_mod` requires `module` at (single-line or block form)."""
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.M)
    assert found, f"{module} is not required in go.mod"
    return found.group(1)


def test_python_pins_match_the_go_modules() -> None:
    kube = (MODULES / "kube" / "go.mod").read_text()
    etcd = (MODULES / "etcd" / "go.mod").read_text()
    assert required_version(kube, "k8s.io/kubernetes") == binaries.KUBERNETES_VERSION
    assert required_version(etcd, "go.etcd.io/etcd/server/v3") == binaries.ETCD_VERSION


def test_every_staging_module_is_pinned_to_the_matching_release() -> None:
    """k8s.io/kubernetes requires its staging modules at v0.0.0: each needs a replace to
    the v0.<minor>.<patch> release cut from the same tag."""
    kube = (MODULES / "kube" / "go.mod").read_text()
    staging_version = "v0." + binaries.KUBERNETES_VERSION.removeprefix("v1.")
    replaces = dict(re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", kube, re.M))
    assert len(replaces) >= 25
    assert set(replaces.values()) == {staging_version}


@pytest.mark.parametrize("name", sorted(binaries.VERSIONS))
def test_binary_reports_its_pinned_version(name: str) -> None:
    try:
        located = binaries.locate(name)
    except binaries.BinaryNotFound as error:
        prereq.require(False, str(error))
        raise
    assert binaries.reports_version(name, located.path, binaries.VERSIONS[name])


def test_a_binary_on_path_at_another_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "kube-scheduler"
    fake.write_text("#!/bin/sh\necho 'Kubernetes v1.34.40'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FALCONER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(binaries.BinaryNotFound, match="another version"):
        binaries.locate("kube-scheduler")
    fake.write_text(f"#!/bin/sh\necho 'Kubernetes {binaries.KUBERNETES_VERSION}'\n")
    assert binaries.locate("kube-scheduler").path == fake
