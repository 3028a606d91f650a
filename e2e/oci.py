"""A small, deterministic writer (and checker) of OCI image layouts, packed as one tar.

The archive is what `ctr -n k8s.io images import <tar>` takes (OCI image-layout spec
v1.1): `oci-layout`, `index.json` naming the image through the annotations
`io.containerd.image.name` (the full reference containerd stores) and
`org.opencontainers.image.ref.name` (the tag, as `docker save` writes it), and
`blobs/sha256/<hex>` holding the config, the manifest and gzip'd layer tars.

Deterministic: tar members are sorted, owned by uid/gid 0 unless a tree says otherwise,
have no user or group names and a fixed mtime (or the tree's own, see `tree_layer`),
gzip streams carry no name and mtime 0, JSON is written with sorted keys. The same
inputs therefore give the same digests, byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: The annotation containerd names an imported image by (containerd's images package).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
#: The OCI annotation for a reference's tag inside an image layout (image-spec).
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

#: The mtime of every synthetic tar member (seconds since the epoch).
FIXED_MTIME = 0

#: gzip level of layers: 6 is zlib's default, fast enough for a few hundred MB.
GZIP_LEVEL = 6


class LayoutError(ValueError):
    """An image archive breaks the OCI layout rules (bad digest, size, media type...)."""


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar.

    `path` is relative to the image root, without a leading "/" ("bin/busybox").
    `target` is the link target of a symlink (any string) or of a hard link (the path of
    an earlier member). `mode` holds only permission bits (including setuid/sticky).
    """

    path: str
    kind: Literal["file", "dir", "symlink", "hardlink"]
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Layer:
    """A gzip'd layer tar stored as a blob: `digest` is the sha256 of the gzip bytes,
    `diff_id` that of the uncompressed tar (the config's rootfs.diff_ids), `size` bytes
    of the gzip blob, `path` where the blob is."""

    path: Path
    digest: str
    diff_id: str
    size: int

    def record(self) -> dict[str, Any]:
        """The layer as JSON-able data (for caches); `from_record` reverses it."""
        return {"path": str(self.path), "digest": self.digest, "diff_id": self.diff_id,
                "size": self.size}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Layer:
        """The layer a `record()` describes."""
        return cls(Path(data["path"]), str(data["digest"]), str(data["diff_id"]),
                   int(data["size"]))


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (`config` in the OCI image config)."""

    entrypoint: Sequence[str]
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)


class _Sink(Protocol):
    def write(self, data: memoryview, /) -> object: ...


class _Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: _Sink | None) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        if self.sink is not None:
            self.sink.write(view)
        return len(view)


def digest_of(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise LayoutError(f"unsupported digest {digest!r}")
    return hexdigest


def _tarinfo(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = mtime
    if entry.kind == "file":
        info.type, info.size = tarfile.REGTYPE, len(entry.data)
    elif entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    else:
        info.type, info.linkname = tarfile.LNKTYPE, entry.target
    return info


def _write_layer(blobs: Path, members: Iterable[tuple[tarfile.TarInfo, IO[bytes] | None]]) -> Layer:
    """Stream `members` into a gzip'd tar in `blobs`, hashing both forms on the way."""
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blobs / f".layer-{os.getpid()}.partial"
    with partial.open("wb") as out:
        compressed = _Hashing(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                           compresslevel=GZIP_LEVEL, mtime=0) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for info, data in members:
                    tar.addfile(info, data)
    digest = "sha256:" + compressed.sha.hexdigest()
    final = blobs / _blob_name(digest)
    os.replace(partial, final)
    return Layer(final, digest, "sha256:" + plain.sha.hexdigest(), compressed.size)


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """The entries plus a 0755 directory for every missing parent, sorted by path."""
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        if path.startswith("/") or ".." in path.split("/"):
            raise LayoutError(f"layer path {path!r} must be relative and stay inside the root")
        parent = os.path.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
    return [by_path[p] for p in sorted(by_path)]


def entries_layer(blobs: Path, entries: Iterable[Entry], mtime: int = FIXED_MTIME) -> Layer:
    """A layer of synthetic `entries` (missing parent folders are added as 0755), every
    member with `mtime`; the blob is written into the folder `blobs`."""
    members = ((_tarinfo(e, mtime), io.BytesIO(e.data) if e.kind == "file" else None)
               for e in _with_parents(entries))
    return _write_layer(blobs, members)


def _walk(root: Path, skip_contents: frozenset[str]) -> list[str]:
    """Relative paths under `root`, sorted (so a folder precedes its contents), not
    descending into the folders named in `skip_contents` (those folders are listed)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel + "/"
        found.extend(prefix + name for name in dirs + files)
        dirs[:] = [d for d in dirs if prefix + d not in skip_contents]
    return sorted(found)


def _tree_members(root: Path, mtime: int | None, skip_contents: frozenset[str]
                  ) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    first_of_inode: dict[tuple[int, int], str] = {}
    for rel in _walk(root, skip_contents):
        path = root / rel
        st = path.lstat()
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime) if mtime is None else mtime
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield info, None
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            yield info, None
        elif stat.S_ISREG(st.st_mode):
            inode = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and inode in first_of_inode:
                info.type, info.linkname = tarfile.LNKTYPE, first_of_inode[inode]
                yield info, None
                continue
            first_of_inode[inode] = rel
            info.type, info.size = tarfile.REGTYPE, st.st_size
            with path.open("rb") as data:
                yield info, data
        else:
            raise LayoutError(f"{path}: not a file, folder or symlink (mode {st.st_mode:o}); "
                              "devices, fifos and sockets have no place in an image layer")


def tree_layer(blobs: Path, root: Path, *, mtime: int | None = FIXED_MTIME,
               skip_contents: Iterable[str] = ()) -> Layer:
    """A layer of everything under `root` (not `root` itself), keeping modes, uids, gids,
    symlinks and hard links. `mtime` None keeps each file's own mtime (needed where
    timestamp-checked .pyc files must stay valid); an int replaces them all.
    `skip_contents` names folders (relative) whose contents are left out, e.g. "dev".

    Raises LayoutError on a device, fifo or socket outside those folders.
    """
    return _write_layer(blobs, _tree_members(root, mtime, frozenset(skip_contents)))


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Image:
    """A written image: the archive `path`, its manifest digest and the reference."""

    path: Path
    reference: str
    manifest_digest: str


def _split_reference(reference: str) -> tuple[str, str]:
    """("falconer.local/pause", "3.10") from "falconer.local/pause:3.10"."""
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag or not name:
        raise LayoutError(f"reference {reference!r} has no tag")
    return name, tag


def write_archive(out: Path, reference: str, layers: Sequence[Layer], config: ImageConfig,
                  history: Sequence[str]) -> Image:
    """Write the single-platform (linux/amd64) image `reference` as an OCI layout tar at
    `out` (atomically: a partial file is renamed at the end). `history` holds one
    `created_by` line per layer.
    """
    if len(history) != len(layers):
        raise LayoutError(f"{len(layers)} layers but {len(history)} history lines")
    _, tag = _split_reference(reference)
    config_blob = _json_bytes({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            **({"Entrypoint": list(config.entrypoint)} if config.entrypoint else {}),
            **({"Cmd": list(config.cmd)} if config.cmd else {}),
            "Env": list(config.env),
            "WorkingDir": config.working_dir,
            **({"Labels": dict(config.labels)} if config.labels else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": line} for line in history],
    })
    manifest_blob = _json_bytes({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest_of(config_blob),
                   "size": len(config_blob)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
    })
    manifest_digest = digest_of(manifest_blob)
    index_blob = _json_bytes({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_blob),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {ANNOTATION_IMAGE_NAME: reference, ANNOTATION_REF_NAME: tag},
        }],
    })
    small = {
        "oci-layout": _json_bytes({"imageLayoutVersion": "1.0.0"}),
        "index.json": index_blob,
        f"blobs/sha256/{_blob_name(digest_of(config_blob))}": config_blob,
        f"blobs/sha256/{_blob_name(manifest_digest)}": manifest_blob,
    }
    big = {f"blobs/sha256/{_blob_name(layer.digest)}": layer.path for layer in layers}
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(Entry(folder, "dir", 0o755), FIXED_MTIME))
        for name in sorted(set(small) | set(big)):
            if name in small:
                tar.addfile(_tarinfo(Entry(name, "file", 0o644, small[name]), FIXED_MTIME),
                            io.BytesIO(small[name]))
            else:
                info = _tarinfo(Entry(name, "file", 0o644), FIXED_MTIME)
                info.size = big[name].stat().st_size
                with big[name].open("rb") as data:
                    tar.addfile(info, data)
    os.replace(partial, out)
    return Image(out, reference, manifest_digest)


@dataclass(frozen=True)
class Checked:
    """What `check_archive` found: the reference, the manifest digest, the parsed config
    and the layers' (digest, diff_id, size), base layer first."""

    reference: str
    tag: str
    manifest_digest: str
    config: dict[str, Any]
    layers: list[tuple[str, str, int]]


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    """The stream of the regular member `name` (LayoutError when absent or not a file)."""
    try:
        member = tar.extractfile(name)
    except KeyError:
        raise LayoutError(f"archive has no {name}") from None
    if member is None:
        raise LayoutError(f"{name} is not a regular file")
    return member


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    """The content of the regular member `name`."""
    return _member(tar, name).read()


#: Bytes read at a time when hashing blobs.
CHUNK = 1 << 20


def _open_blob(tar: tarfile.TarFile, descriptor: dict[str, Any], media_type: str) -> IO[bytes]:
    """The blob `descriptor` points at, after checking its media type, size and digest
    (streamed: layers may be hundreds of MB); the returned stream is at offset 0."""
    if descriptor.get("mediaType") != media_type:
        raise LayoutError(f"descriptor {descriptor.get('digest')} has media type "
                          f"{descriptor.get('mediaType')!r}, expected {media_type!r}")
    name = f"blobs/sha256/{_blob_name(str(descriptor['digest']))}"
    blob = _member(tar, name)
    hashing = _Hashing(None)
    while chunk := blob.read(CHUNK):
        hashing.write(chunk)
    if hashing.size != descriptor["size"]:
        raise LayoutError(f"blob {descriptor['digest']}: {hashing.size} bytes, descriptor "
                          f"says {descriptor['size']}")
    if "sha256:" + hashing.sha.hexdigest() != descriptor["digest"]:
        raise LayoutError(f"blob {descriptor['digest']} does not hash to its name")
    blob.seek(0)
    return blob


def _json_blob(tar: tarfile.TarFile, descriptor: dict[str, Any], media_type: str) -> Any:
    return json.loads(_open_blob(tar, descriptor, media_type).read())


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes what is read through it from `source`."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        buffer[:len(data)] = data
        self.sha.update(data)
        return len(data)


def _layer_diff_id(gzipped: IO[bytes]) -> str:
    """sha256 of the uncompressed layer, checking on the way that it is a readable tar
    (one pass: the tar is read through the hashing stream, then the rest drained)."""
    try:
        with gzip.GzipFile(fileobj=gzipped, mode="rb") as plain:
            hashing = _HashingReader(plain)
            with tarfile.open(fileobj=hashing, mode="r|") as tar:
                for _ in tar:
                    pass
            while hashing.read(CHUNK):
                pass
    except (OSError, EOFError, tarfile.TarError) as error:
        raise LayoutError(f"a layer is not a gzip'd tar: {error}") from None
    return "sha256:" + hashing.sha.hexdigest()


def check_archive(path: Path) -> Checked:
    """Parse the OCI layout tar at `path` and verify it: `oci-layout` version, one
    manifest in `index.json` with both name annotations, every blob's size and digest,
    every layer a gzip'd tar whose sha256 is the config's diff_id.

    Raises LayoutError naming the first problem.
    """
    with tarfile.open(path, "r:") as tar:
        layout = json.loads(_member_bytes(tar, "oci-layout"))
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise LayoutError(f"oci-layout says {layout!r}")
        index = json.loads(_member_bytes(tar, "index.json"))
        if index.get("schemaVersion") != 2 or len(index.get("manifests", [])) != 1:
            raise LayoutError("index.json must have schemaVersion 2 and exactly one manifest")
        descriptor = index["manifests"][0]
        annotations = descriptor.get("annotations", {})
        reference = annotations.get(ANNOTATION_IMAGE_NAME, "")
        tag = annotations.get(ANNOTATION_REF_NAME, "")
        if not reference or _split_reference(reference)[1] != tag:
            raise LayoutError(f"index.json annotations {annotations!r} do not name the image")
        manifest = _json_blob(tar, descriptor, MEDIA_MANIFEST)
        config = _json_blob(tar, manifest["config"], MEDIA_CONFIG)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(manifest["layers"]):
            raise LayoutError(f"{len(manifest['layers'])} layers but {len(diff_ids)} diff_ids")
        layers = []
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            if _layer_diff_id(_open_blob(tar, layer, MEDIA_LAYER)) != diff_id:
                raise LayoutError(f"layer {layer['digest']} does not unpack to {diff_id}")
            layers.append((str(layer["digest"]), str(diff_id), int(layer["size"])))
    return Checked(reference, tag, str(descriptor["digest"]), config, layers)
