"""The sensor image: a valid OCI layout of two layers (the cached Debian base, then
Falconer from this checkout), a reproducible Falconer layer, and a DaemonSet template
that gives the sensor container what the image leaves to the node.

The image is built into the shared cache (`./dev setup` does it: minutes when cold,
seconds after a code change)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from falconer.operator import render
from falconer.operator.spec import parse_instance
from falconer_e2e import images, oci

pytestmark = pytest.mark.timeout(1800)

SITE = "usr/local/lib/python3.11/dist-packages"


@pytest.fixture(scope="module")
def sensor_archive() -> Path:
    return images.build("sensor")


@pytest.fixture(scope="module")
def checked(sensor_archive: Path) -> oci.Checked:
    return oci.check_archive(sensor_archive)


def layer_names(archive: Path, digest: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r|gz") as layer:
            return {m.name: m for m in layer}


def test_sensor_image_config(checked: oci.Checked) -> None:
    assert checked.reference == images.REFS["sensor"]
    config = checked.config["config"]
    assert config["Entrypoint"] == ["falconer"]
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    assert len(checked.layers) == 2


def test_base_layer_is_debian_with_python_and_bcc(sensor_archive: Path,
                                                  checked: oci.Checked) -> None:
    names = layer_names(sensor_archive, checked.layers[0][0])
    for path in ("usr/bin/python3.11", "usr/lib/python3/dist-packages/bcc/__init__.py",
                 f"{SITE}/kopf/__init__.py", f"{SITE}/kubernetes/__init__.py",
                 "etc/debian_version", "etc/ssl/certs/ca-certificates.crt"):
        assert path in names, path
    assert not any(n.startswith(("usr/src/linux-headers", "lib/modules/")) for n in names), \
        "kernel headers come from the node"
    assert not [n for n in names if n.startswith("dev/")], "the runtime provides /dev"
    assert "tmp/builder-ca.crt" not in names and "etc/pip.conf" not in names


def test_falconer_layer_holds_the_package_and_command(sensor_archive: Path,
                                                      checked: oci.Checked) -> None:
    names = layer_names(sensor_archive, checked.layers[1][0])
    assert f"{SITE}/falconer/sensor/probe.bpf.c" in names
    assert f"{SITE}/falconer/operator/templates/daemonset.yaml.j2" in names
    assert any(n.startswith(f"{SITE}/falconer/__pycache__/cli.cpython-311") for n in names)
    assert not any(n.endswith("direct_url.json") for n in names)
    assert names["usr/local/bin/falconer"].mode == 0o755
    with tarfile.open(sensor_archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{checked.layers[1][0].split(':')[1]}")
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            script = layer.extractfile("usr/local/bin/falconer")
            assert script is not None
            assert script.readline() == b"#!/usr/bin/python3\n"


def test_falconer_layer_is_reproducible(tmp_path: Path) -> None:
    first = images.falconer_layer(tmp_path / "a")
    second = images.falconer_layer(tmp_path / "b")
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)


def test_daemonset_gives_the_sensor_what_the_image_leaves_to_the_node() -> None:
    instance = {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance",
                "metadata": {"namespace": "falconer", "name": "default", "uid": "u-1"},
                "spec": {"image": images.REFS["sensor"]}}
    pod = render.render_instance(instance, parse_instance(instance["spec"]), []).daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    assert container["image"] == images.REFS["sensor"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for needed in images.SENSOR_HOST_MOUNTS:
        mount = mounts.get(needed.container_path)
        assert mount is not None, f"no mount at {needed.container_path} ({needed.why})"
        assert host_paths.get(mount["name"]) == needed.host_path
        assert mount.get("readOnly") is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert images.SENSOR_POD_ENV.items() <= env.items()
    context = container["securityContext"]
    assert context["privileged"] is False and context["capabilities"]["drop"] == ["ALL"]
    assert set(images.SENSOR_CAPABILITIES) <= set(context["capabilities"]["add"])


def test_base_covers_every_runtime_dependency() -> None:
    """Each dependency in pyproject.toml comes from a Debian package or a pinned wheel
    of the sensor's base (a dependency added to one but not the other broke the pod)."""
    import re
    import tomllib

    deps = tomllib.loads((images.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps}
    debian = {"pyyaml": "python3-yaml", "jinja2": "python3-jinja2", "cryptography": "python3-cryptography"}
    pinned = {p.split("==")[0].lower() for p in images.BASE_PIP}
    missing = {n for n in names if n not in pinned and debian.get(n) not in images.BASE_PACKAGES}
    assert missing == set(), f"add to images.BASE_PIP or BASE_PACKAGES: {sorted(missing)}"
