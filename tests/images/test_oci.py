"""The OCI layout writer: deterministic layers and archives, and a checker that catches
every kind of corruption it claims to (pure file work, no container runtime)."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from falconer_e2e import oci

ENTRIES = [
    oci.Entry("bin/tool", "file", 0o755, b"#!/bin/sh\necho hi\n"),
    oci.Entry("bin/alias", "symlink", 0o777, target="/bin/tool"),
    oci.Entry("etc/config", "file", 0o600, b"secret-free\n", uid=0, gid=42),
    oci.Entry("tmp", "dir", 0o1777),
]


def members(layer: oci.Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(layer.path, "r:gz") as tar:
        return tar.getmembers()


def test_entries_layer_is_deterministic_whatever_the_order(tmp_path: Path) -> None:
    shuffled = ENTRIES[:]
    random.Random(7).shuffle(shuffled)
    first = oci.entries_layer(tmp_path / "a", ENTRIES)
    second = oci.entries_layer(tmp_path / "b", shuffled)
    assert (first.digest, first.diff_id, first.size) == (second.digest, second.diff_id, second.size)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.digest == oci.digest_of(first.path.read_bytes())
    assert first.diff_id == oci.digest_of(gzip.decompress(first.path.read_bytes()))


def test_entries_layer_adds_parents_sorted_with_fixed_metadata(tmp_path: Path) -> None:
    infos = members(oci.entries_layer(tmp_path, ENTRIES))
    assert [i.name for i in infos] == ["bin", "bin/alias", "bin/tool", "etc", "etc/config", "tmp"]
    by_name = {i.name: i for i in infos}
    assert by_name["bin"].isdir() and by_name["bin"].mode == 0o755
    assert by_name["tmp"].mode == 0o1777
    assert by_name["bin/alias"].issym() and by_name["bin/alias"].linkname == "/bin/tool"
    assert (by_name["etc/config"].mode, by_name["etc/config"].gid) == (0o600, 42)
    assert {(i.mtime, i.uname, i.gname) for i in infos} == {(oci.FIXED_MTIME, "", "")}


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape", "a/../../b"])
def test_entries_must_stay_inside_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(oci.LayoutError, match="relative"):
        oci.entries_layer(tmp_path, [oci.Entry(bad, "file")])


def make_tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/prog").write_bytes(b"\x7fELF")
    (root / "usr/bin/prog").chmod(0o4755)
    os.link(root / "usr/bin/prog", root / "usr/bin/prog-again")
    (root / "usr/bin/alias").symlink_to("prog")
    (root / "dev").mkdir()
    os.mkfifo(root / "dev/fifo")
    os.utime(root / "usr/bin/prog", (1_600_000_000, 1_600_000_000))


def test_tree_layer_keeps_modes_links_and_hard_links(tmp_path: Path) -> None:
    make_tree(tmp_path / "root")
    layer = oci.tree_layer(tmp_path / "blobs", tmp_path / "root", skip_contents=["dev"])
    by_name = {i.name: i for i in members(layer)}
    assert sorted(by_name) == ["dev", "usr", "usr/bin", "usr/bin/alias", "usr/bin/prog",
                               "usr/bin/prog-again"]
    assert by_name["usr/bin/prog"].mode == 0o4755 and by_name["usr/bin/prog"].isreg()
    assert by_name["usr/bin/prog-again"].islnk()
    assert by_name["usr/bin/prog-again"].linkname == "usr/bin/prog"
    assert by_name["usr/bin/alias"].linkname == "prog"
    assert by_name["usr/bin/prog"].mtime == oci.FIXED_MTIME


def test_tree_layer_can_keep_the_trees_mtimes(tmp_path: Path) -> None:
    make_tree(tmp_path / "root")
    layer = oci.tree_layer(tmp_path / "blobs", tmp_path / "root", mtime=None,
                           skip_contents=["dev"])
    assert {i.name: i.mtime for i in members(layer)}["usr/bin/prog"] == 1_600_000_000


def test_tree_layer_refuses_a_fifo_outside_skipped_folders(tmp_path: Path) -> None:
    make_tree(tmp_path / "root")
    with pytest.raises(oci.LayoutError, match="dev/fifo"):
        oci.tree_layer(tmp_path / "blobs", tmp_path / "root")


CONFIG = oci.ImageConfig(entrypoint=["/bin/tool"], cmd=["--help"], env=["PATH=/bin"])


def write(tmp_path: Path, name: str = "image.tar") -> oci.Image:
    layer = oci.entries_layer(tmp_path / "blobs", ENTRIES)
    return oci.write_archive(tmp_path / name, "falconer.local/tool:1.0", [layer], CONFIG,
                             ["the tool"])


def test_archive_is_a_valid_layout_naming_the_image(tmp_path: Path) -> None:
    image = write(tmp_path)
    checked = oci.check_archive(image.path)
    assert (checked.reference, checked.tag) == ("falconer.local/tool:1.0", "1.0")
    assert checked.manifest_digest == image.manifest_digest
    assert checked.config["config"]["Entrypoint"] == ["/bin/tool"]
    assert checked.config["config"]["Cmd"] == ["--help"]
    assert (checked.config["os"], checked.config["architecture"]) == ("linux", "amd64")
    with tarfile.open(image.path) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["blobs", "blobs/sha256"] and "oci-layout" in names
    assert index["manifests"][0]["annotations"] == {
        oci.ANNOTATION_IMAGE_NAME: "falconer.local/tool:1.0", oci.ANNOTATION_REF_NAME: "1.0"}
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}


def test_archive_is_deterministic(tmp_path: Path) -> None:
    first = write(tmp_path / "a")
    second = write(tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_a_reference_needs_a_tag(tmp_path: Path) -> None:
    layer = oci.entries_layer(tmp_path, ENTRIES)
    with pytest.raises(oci.LayoutError, match="no tag"):
        oci.write_archive(tmp_path / "x.tar", "falconer.local/tool", [layer], CONFIG, ["x"])


def rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Copy the archive `src` to `dst`, passing every member's bytes through `change`."""
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for info in old.getmembers():
            if not info.isfile():
                new.addfile(info)
                continue
            data = change(info.name, old.extractfile(info).read())  # type: ignore[union-attr]
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def json_edit(edit: Callable[[dict[str, Any]], None], kind: str) -> Callable[[str, bytes], bytes]:
    """A `change` that edits the JSON member of `kind` ("index", "manifest") in place:
    the blob keeps its old name, so its digest no longer matches unless it is the index."""
    def change(name: str, data: bytes) -> bytes:
        if kind == "index" and name == "index.json":
            value = json.loads(data)
            edit(value)
            return json.dumps(value).encode()
        if kind == "manifest" and name.startswith("blobs/") and b'"layers"' in data \
                and oci.MEDIA_MANIFEST.encode() in data:
            value = json.loads(data)
            edit(value)
            return json.dumps(value).encode()
        return data
    return change


def flip_layer_byte(name: str, data: bytes) -> bytes:
    if name.startswith("blobs/") and data[:2] == b"\x1f\x8b":
        return data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    return data


def drop_annotation(index: dict[str, Any]) -> None:
    del index["manifests"][0]["annotations"][oci.ANNOTATION_IMAGE_NAME]


def wrong_size(index: dict[str, Any]) -> None:
    index["manifests"][0]["size"] += 1


def wrong_media_type(index: dict[str, Any]) -> None:
    index["manifests"][0]["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"


def two_manifests(index: dict[str, Any]) -> None:
    index["manifests"].append(index["manifests"][0])


def add_layer(manifest: dict[str, Any]) -> None:
    manifest["layers"].append(manifest["layers"][0])


@pytest.mark.parametrize(("change", "message"), [
    (flip_layer_byte, "does not hash to its name"),
    (json_edit(drop_annotation, "index"), "do not name the image"),
    (json_edit(wrong_size, "index"), "descriptor says"),
    (json_edit(wrong_media_type, "index"), "media type"),
    (json_edit(two_manifests, "index"), "exactly one manifest"),
    (json_edit(add_layer, "manifest"), "descriptor says"),
], ids=["layer-byte", "annotation", "size", "media-type", "two-manifests", "manifest-edit"])
def test_check_archive_catches_corruption(tmp_path: Path, change: Callable[[str, bytes], bytes],
                                          message: str) -> None:
    image = write(tmp_path)
    broken = tmp_path / "broken.tar"
    rewrite(image.path, broken, change)
    with pytest.raises(oci.LayoutError, match=message):
        oci.check_archive(broken)


def test_check_archive_catches_a_diff_id_that_does_not_match(tmp_path: Path) -> None:
    real = oci.entries_layer(tmp_path / "blobs", ENTRIES)
    liar = oci.Layer(real.path, real.digest, oci.digest_of(b"something else"), real.size)
    archive = oci.write_archive(tmp_path / "x.tar", "falconer.local/tool:1.0", [liar], CONFIG,
                                ["x"])
    with pytest.raises(oci.LayoutError, match="does not unpack to"):
        oci.check_archive(archive.path)
