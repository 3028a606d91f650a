"""Falconer's local container images, built without Docker or a registry, cached.

Four images, each an OCI image-layout tar that `ctr -n k8s.io images import` takes
(written by `falconer_e2e.oci`), named by `REFS`:

- `pause`: the pod sandbox image, one static binary `/pause` compiled with gcc from
  `e2e/pause/pause.c` (blocks in pause(2), reaps re-parented children, exits 0 on
  SIGINT/SIGTERM).
- `busybox`: a workload image: Debian's `busybox-static` binary at /bin/busybox, a
  symlink for every applet it lists (`busybox --list-full`), /etc/passwd, /etc/group,
  /etc/shadow (so `cat /etc/shadow` reads a real file) and /tmp.
- `workload`: the benign workload's servers: the busybox layer (its `httpd` is the web
  server; a page at /www/index.html) plus a layer with Debian's Redis 7 (`redis-tools`:
  /usr/bin/redis-check-rdb is the whole server, run as /usr/bin/redis-server, a link to
  it as in Debian's `redis-server` package; /usr/bin/redis-cli) and the shared libraries
  the dynamic loader resolves for them on this host, at the same paths.
- `sensor`: what a FalcoInstance's DaemonSet runs (entrypoint `falconer`). Layer 1 is a
  Debian 12 `debootstrap --variant=minbase` root with python3, python3-bpfcc and the
  Debian packages of Falconer's dependencies, upgraded from -updates and -security, plus
  `kubernetes` and `kopf` from PyPI (Debian's are too old); it is cached by its recipe
  (suite, mirrors, package lists), so it is built once (minutes). Layer 2 is Falconer
  installed from this checkout (a wheel, `pip install --no-deps`), rebuilt in seconds
  when the code changes. Kernel headers are not in the image: the pod mounts the
  node's /lib/modules and /usr/src (see `SENSOR_HOST_MOUNTS`).

`build(name)` returns the cached archive `$FALCONER_CACHE/images/<name>-<key>.tar`, where
`key` hashes the image's inputs; it builds only when no archive has that key. Command
line: `python -m falconer_e2e.images build [NAME ...]` (prints one path per image).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from falconer import __version__
from falconer.paths import ROOT
from falconer_e2e import node_host, oci

#: The registry host part of every local image reference; nothing is ever pulled from it.
REGISTRY = "falconer.local"

#: The pause image's tag: the upstream pause release whose behaviour ours matches.
PAUSE_TAG = "3.10"

#: The busybox release Debian 12's busybox-static ships (1:1.35.0-4+deb12u1).
BUSYBOX_TAG = "1.35"

#: The reference each image is imported as.
REFS: dict[str, str] = {
    "pause": f"{REGISTRY}/pause:{PAUSE_TAG}",
    "busybox": f"{REGISTRY}/busybox:{BUSYBOX_TAG}",
    "sensor": f"{REGISTRY}/sensor:{__version__}",
    "workload": f"{REGISTRY}/workload:{BUSYBOX_TAG}-redis7",
}

PAUSE_SOURCE = Path(__file__).resolve().parent / "pause" / "pause.c"
PAUSE_CFLAGS = ("-static", "-O2", "-s", "-Wall", "-Wextra", "-Werror")

BUSYBOX = Path("/bin/busybox")

#: The sensor's base: Debian release and the packages debootstrap adds to minbase.
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = (
    "ca-certificates", "python3", "python3-bpfcc", "python3-cryptography",
    "python3-jinja2", "python3-pip", "python3-yaml",
)
#: Falconer's dependencies Debian 12 lacks or has only in too old a release, from PyPI
#: (pinned). Together with BASE_PACKAGES they cover pyproject's runtime dependencies
#: (tests/images/test_sensor_image.py checks that).
BASE_PIP = ("kopf==1.45.2", "kubernetes==37.0.2", "grpcio==1.85.3", "protobuf==7.36.2", "google-re2==1.1.20251105",
            "prometheus-client==0.26.0")
#: Changes whenever the base recipe changes in a way the lists above do not show.
BASE_RECIPE = 2
#: The mirrors used when the machine's apt sources name none (main archive, security).
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"

#: The Python that installs Falconer into the sensor image: Debian's, so the wheel lands
#: where the image's Debian python3 looks (/usr/local/lib/python3.X/dist-packages).
SYSTEM_PYTHON = Path("/usr/bin/python3")

#: Environment of the sensor container.
SENSOR_IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    # Alerts reach the container log as they happen, not when a pipe buffer fills.
    "PYTHONUNBUFFERED=1",
)



@dataclass(frozen=True)
class HostMount:
    """A node folder a sensor container needs, bind-mounted read-only."""

    host_path: str
    container_path: str
    why: str


#: What a container of the sensor image needs from its node to run bcc, besides the
#: node's PID namespace (hostPID) and its rules folder. Kernel headers are not in the
#: image: bcc compiles against the node's. Verified by tests/images/test_containerd.py,
#: which runs the image with exactly these (and fails with each mount left out).
SENSOR_HOST_MOUNTS: tuple[HostMount, ...] = (
    HostMount("/proc", "/host/proc", "the node's processes, read through $FALCONER_HOST_PROC"),
    HostMount("/sys/kernel/tracing", "/sys/kernel/tracing",
              "tracefs: the tracepoints' ids the probe attaches to"),
    HostMount("/lib/modules", "/lib/modules",
              "/lib/modules/$(uname -r)/build: the headers bcc compiles the probe against"),
    HostMount("/usr/src", "/usr/src", "where Debian's header trees (and those links) are"),
)
#: The sensor container's environment for those mounts.
SENSOR_POD_ENV: dict[str, str] = {"FALCONER_HOST_PROC": "/host/proc"}
#: The capabilities it needs (all others dropped, not privileged): BPF and PERFMON load
#: the programs and open the ring buffer; SYS_PTRACE and DAC_READ_SEARCH read other
#: processes' /proc entries (exe, cwd, fds), without which fields such as
#: proc.pexepath stay empty for processes started before the sensor.
SENSOR_CAPABILITIES: tuple[str, ...] = ("BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
SHADOW = "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the step and its output."""


def cache_dir() -> Path:
    """`$FALCONER_CACHE/images` (default /var/cache/falconer/images)."""
    return Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "images"


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"images: {message}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str | Path], what: str, **kwargs: object) -> str:
    """Run `argv`, returning its stdout; ImageBuildError with its output if it fails."""
    try:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              check=False, **kwargs)  # type: ignore[call-overload]
    except OSError as error:
        raise ImageBuildError(f"{what}: cannot run {argv[0]}: {error}") from None
    if done.returncode != 0:
        raise ImageBuildError(f"{what} failed (exit {done.returncode}): "
                              f"{' '.join(map(str, argv))}\n{done.stdout}{done.stderr}")
    return str(done.stdout)


def _streamed(argv: Sequence[str | Path], what: str, env: dict[str, str] | None = None) -> None:
    """Run a long command, passing its output on as progress lines (at most one every
    5 s, plus the last ten lines if it fails)."""
    progress(f"{what}: {' '.join(map(str, argv))}")
    started = last = time.monotonic()
    tail: list[str] = []
    with subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            tail = (tail + [line.rstrip()])[-10:]
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                progress(f"{what} ({last - started:.0f} s): {line.rstrip()}")
    if child.returncode != 0:
        raise ImageBuildError(f"{what} failed (exit {child.returncode}):\n" + "\n".join(tail))
    progress(f"{what}: done in {time.monotonic() - started:.0f} s")


def _sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def _code_hash() -> str:
    """The hash of the code that lays images out: any change rebuilds every archive."""
    return _sha256(Path(oci.__file__).read_bytes(), Path(__file__).read_bytes())


def _unmount_under(folder: Path) -> None:
    """Unmount everything mounted below `folder` (a new root's /proc and /sys), so that
    deleting the folder can never reach into them; ImageBuildError if one stays."""
    problems = node_host.unmount_under((f"{folder}/",))
    if problems:
        raise ImageBuildError(f"cannot clear {folder}: {'; '.join(problems)}")


# --- pause -------------------------------------------------------------------------------

def _gcc_version() -> str:
    return _run(["gcc", "--version"], "gcc --version").splitlines()[0]


def _pause_key() -> str:
    return _sha256(PAUSE_SOURCE.read_bytes(), _gcc_version(), *PAUSE_CFLAGS)


def _pause_layers(cache: Path, blobs: Path) -> list[oci.Layer]:
    with tempfile.TemporaryDirectory(prefix="falconer-pause-") as work:
        # Compiled from a relative name in a scratch folder: no path ends up in the binary.
        shutil.copyfile(PAUSE_SOURCE, Path(work) / "pause.c")
        _run(["gcc", *PAUSE_CFLAGS, "-o", "pause", "pause.c"], "compiling pause.c", cwd=work)
        binary = (Path(work) / "pause").read_bytes()
    return [oci.entries_layer(blobs, [oci.Entry("pause", "file", 0o755, binary)])]


# --- busybox -----------------------------------------------------------------------------

def _busybox_key() -> str:
    if not BUSYBOX.is_file():
        raise ImageBuildError(f"{BUSYBOX} missing: install Debian's busybox-static "
                              "(tools/setup/45-images.sh)")
    return _sha256(BUSYBOX.read_bytes(), PASSWD, GROUP, SHADOW)


def busybox_applets() -> list[str]:
    """The applets' paths (relative, "bin/sh") from `busybox --list-full`; checks that
    the binary is the release `BUSYBOX_TAG` names."""
    banner = _run([BUSYBOX], "busybox").splitlines()[0] if BUSYBOX.is_file() else ""
    if not re.search(rf"\bv{re.escape(BUSYBOX_TAG)}\.", banner):
        raise ImageBuildError(f"{BUSYBOX} says {banner!r}, expected release {BUSYBOX_TAG}")
    return sorted(line.strip() for line in _run([BUSYBOX, "--list-full"], "busybox --list-full")
                  .splitlines() if line.strip() and line.strip() != "bin/busybox")


def _busybox_layers(cache: Path, blobs: Path) -> list[oci.Layer]:
    entries = [
        oci.Entry("bin/busybox", "file", 0o755, BUSYBOX.read_bytes()),
        *(oci.Entry(applet, "symlink", 0o777, target="/bin/busybox")
          for applet in busybox_applets()),
        oci.Entry("etc/passwd", "file", 0o644, PASSWD.encode()),
        oci.Entry("etc/group", "file", 0o644, GROUP.encode()),
        oci.Entry("etc/shadow", "file", 0o640, SHADOW.encode()),
        oci.Entry("root", "dir", 0o700),
        oci.Entry("tmp", "dir", 0o1777),
        *(oci.Entry(mount, "dir", 0o755) for mount in ("dev", "proc", "sys")),
    ]
    return [oci.entries_layer(blobs, entries)]


# --- workload: busybox plus Redis -------------------------------------------------------------

#: Debian's Redis server binary (package redis-tools) and its client; the server runs
#: under the name Debian's redis-server package links to it.
REDIS_SERVER = Path("/usr/bin/redis-check-rdb")
REDIS_CLI = Path("/usr/bin/redis-cli")
#: The dynamic loader that lists a binary's libraries (`--list`, as ldd does).
DYNAMIC_LOADER = Path("/lib64/ld-linux-x86-64.so.2")
WORKLOAD_PAGE = "<html><body>falconer benign workload</body></html>\n"


def shared_libraries(binary: Path) -> list[Path]:
    """The absolute paths (as the loader names them, "/lib/x86_64-linux-gnu/libc.so.6")
    of every library `binary` loads, the loader itself included; ImageBuildError when
    one is not found."""
    listing = _run([DYNAMIC_LOADER, "--list", binary], f"listing the libraries of {binary}")
    out: list[Path] = []
    for line in listing.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target == "not":
                raise ImageBuildError(f"{binary}: library {words[0]} not found")
            out.append(Path(target))
        elif words and words[0].startswith("/"):
            out.append(Path(words[0]))          # the loader itself
    return out


def _workload_binaries() -> list[Path]:
    missing = [p for p in (REDIS_SERVER, REDIS_CLI) if not p.is_file()]
    if missing:
        raise ImageBuildError(f"{', '.join(map(str, missing))} missing: install Debian's "
                              "redis-tools (tools/setup/45-images.sh)")
    return [REDIS_SERVER, REDIS_CLI]


def _workload_files() -> dict[str, Path]:
    """Image path ("usr/bin/redis-cli") -> the host file whose bytes it gets."""
    files: dict[str, Path] = {}
    for binary in _workload_binaries():
        files[str(binary).lstrip("/")] = binary
        for lib in shared_libraries(binary):
            files[str(lib).lstrip("/")] = lib.resolve()
    return dict(sorted(files.items()))


def _workload_key() -> str:
    files = _workload_files()
    return _sha256(_busybox_key(), WORKLOAD_PAGE,
                   *(part for path, src in files.items() for part in (path, src.read_bytes())))


def _workload_layers(cache: Path, blobs: Path) -> list[oci.Layer]:
    entries = [
        *(oci.Entry(path, "file", 0o755, src.read_bytes())
          for path, src in _workload_files().items()),
        oci.Entry("usr/bin/redis-server", "symlink", 0o777, target=REDIS_SERVER.name),
        oci.Entry("www/index.html", "file", 0o644, WORKLOAD_PAGE.encode()),
    ]
    return [*_busybox_layers(cache, blobs), oci.entries_layer(blobs, entries)]


# --- sensor: the Debian base ---------------------------------------------------------------

@dataclass(frozen=True)
class Mirrors:
    """Debian mirrors: `main` for the release and its -updates, `security` for
    -security."""

    main: str
    security: str


def apt_source_files() -> list[Path]:
    """This machine's apt sources: /etc/apt/sources.list and sources.list.d/*.{list,sources}."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return [p for p in candidates if p.is_file() and p.suffix in ("", ".list", ".sources")]


def debian_mirrors(sources: Sequence[Path] | None = None) -> Mirrors:
    """The Debian mirrors named in `sources` (one-line or deb822 apt sources; default
    `apt_source_files()`): the first URI ending in /debian and the first ending in
    /debian-security, else the defaults (deb.debian.org)."""
    texts = [p.read_text() for p in (apt_source_files() if sources is None else sources)]
    uris = [m.group(1).rstrip("/") for text in texts for m in
            re.finditer(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M)]
    main = next((u for u in uris if u.endswith("/debian")), DEFAULT_MIRROR)
    security = next((u for u in uris if u.endswith("/debian-security")),
                    DEFAULT_SECURITY_MIRROR)
    return Mirrors(main, security)


def _base_key(mirrors: Mirrors) -> str:
    return _sha256(str(BASE_RECIPE), DEBIAN_SUITE, mirrors.main, mirrors.security,
                   *BASE_PACKAGES, "--", *BASE_PIP)


def _chroot_env() -> dict[str, str]:
    """The environment of commands in the new root: the machine's proxy and PyPI index
    settings, nothing else of the builder's."""
    keep = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
            "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root", LANG="C.UTF-8",
               DEBIAN_FRONTEND="noninteractive", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_CACHE_DIR="1", PIP_ROOT_USER_ACTION="ignore")
    return env


def _host_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts ($PIP_CERT, else Debian's bundle): a
    machine behind a TLS-inspecting proxy trusts a CA the new root does not know."""
    for candidate in (os.environ.get("PIP_CERT", ""), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@contextmanager
def _chroot_session(rootfs: Path) -> Iterator[dict[str, str]]:
    """For commands run in `rootfs`: /proc mounted, the machine's DNS, pip configuration
    and CA bundle copied in; yields their environment. All of it is undone afterwards
    (resolv.conf is left empty: the container runtime provides it)."""
    env = _chroot_env()
    added: list[Path] = []
    if Path("/etc/pip.conf").is_file():
        shutil.copyfile("/etc/pip.conf", rootfs / "etc/pip.conf")
        added.append(rootfs / "etc/pip.conf")
    ca = _host_ca_bundle()
    if ca is not None:
        shutil.copyfile(ca, rootfs / "tmp/builder-ca.crt")
        added.append(rootfs / "tmp/builder-ca.crt")
        env["PIP_CERT"] = "/tmp/builder-ca.crt"
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    _run(["mount", "-t", "proc", "proc", rootfs / "proc"], "mounting /proc in the new root")
    try:
        yield env
    finally:
        _run(["umount", "-l", rootfs / "proc"], "unmounting /proc in the new root")
        for path in added:
            path.unlink(missing_ok=True)
        (rootfs / "etc/resolv.conf").write_text("")


def _install_packages(rootfs: Path) -> None:
    """Upgrade `rootfs` from -updates and -security, apt-get BASE_PACKAGES into it (apt,
    unlike debootstrap's --include, resolves virtual packages), then pip BASE_PIP there
    (so Debian's packages satisfy what they can) and `pip check` the result."""
    with _chroot_session(rootfs) as env:
        _streamed(["chroot", rootfs, "apt-get", "update", "-q"], "sensor base: apt-get update",
                  env=env)
        _streamed(["chroot", rootfs, "apt-get", "upgrade", "-y", "-q"],
                  "sensor base: apt-get upgrade (-updates, -security)", env=env)
        _streamed(["chroot", rootfs, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                   *BASE_PACKAGES], "sensor base: apt-get install", env=env)
        _streamed(["chroot", rootfs, "python3", "-m", "pip", "install",
                   "--no-warn-script-location", "--break-system-packages", *BASE_PIP],
                  "sensor base: pip install", env=env)
        _run(["chroot", rootfs, "python3", "-m", "pip", "check"], "sensor base: pip check",
             env=env)


def _trim(rootfs: Path) -> None:
    """Drop what a running image never uses: downloaded .debs, apt lists, logs, caches."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*",
                    "root/.cache", "tmp/*", "var/tmp/*", "usr/share/man/*",
                    "usr/share/info/*"):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _write_apt_sources(rootfs: Path, mirrors: Mirrors) -> None:
    """The image's sources.list: the release, its -updates and -security."""
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirrors.main} {DEBIAN_SUITE} main\n"
        f"deb {mirrors.main} {DEBIAN_SUITE}-updates main\n"
        f"deb {mirrors.security} {DEBIAN_SUITE}-security main\n")


def _read_record(path: Path) -> oci.Layer | None:
    """The layer a record file describes; None when it is missing or unreadable."""
    try:
        return oci.Layer.from_record(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sensor_base_layer(cache: Path) -> oci.Layer:
    """The sensor's Debian layer, built once per recipe (`_base_key`): its blob is kept in
    `cache/blobs` and described by `cache/layers/sensor-base-<key>.json` (a layer of an
    older recipe is removed). Takes minutes when cold (debootstrap, then apt and pip
    download some 200 packages); prints progress."""
    mirrors = debian_mirrors()
    key = _base_key(mirrors)
    layers = cache / "layers"
    record = layers / f"sensor-base-{key[:16]}.json"
    cached = _read_record(record)
    if cached is not None and cached.path.is_file() and cached.path.stat().st_size == cached.size:
        return cached
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap missing: install it (tools/setup/45-images.sh)")
    # Named like the sensor's scratch folders: swept with them after a killed build.
    with tempfile.TemporaryDirectory(prefix="sensor-base-", dir=cache) as work:
        rootfs = Path(work) / "rootfs"
        try:
            _streamed(["debootstrap", "--variant=minbase",
                       "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
                       DEBIAN_SUITE, rootfs, mirrors.main], "sensor base: debootstrap")
            _write_apt_sources(rootfs, mirrors)
            _install_packages(rootfs)
            _trim(rootfs)
            progress("sensor base: packing the layer")
            layer = oci.tree_layer(cache / "blobs", rootfs, mtime=None,
                                   skip_contents=("dev", "proc", "sys", "run"))
        finally:
            # A failed debootstrap may leave its /proc and /sys mounted in the new root:
            # they must be gone before the folder is deleted.
            _unmount_under(Path(work))
    for old in layers.glob("sensor-base-*.json"):
        old_layer = _read_record(old)
        if old_layer is not None and old_layer.path != layer.path:
            old_layer.path.unlink(missing_ok=True)
        old.unlink()
    layers.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(layer.record(), sort_keys=True))
    progress(f"sensor base: {layer.size / 1e6:.0f} MB compressed, {layer.digest}")
    return layer


# --- sensor: Falconer itself ---------------------------------------------------------------

def _source_files() -> list[Path]:
    """The files a Falconer wheel is built from: pyproject.toml, README.md and the
    package folders pyproject's `package-dir` maps (no caches), sorted."""
    pyproject = ROOT / "pyproject.toml"
    folders = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"].values()
    files = [pyproject, ROOT / "README.md"]
    for folder in sorted(set(folders)):
        for path in sorted((ROOT / folder).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if path.is_file() and "__pycache__" not in parts and not any(
                    p.startswith(".") or p.endswith(".egg-info") for p in parts):
                files.append(path)
    return files


def _source_hash() -> str:
    return _sha256(*(part for path in _source_files()
                     for part in (str(path.relative_to(ROOT)), path.read_bytes())))


def _python_version(python: Path | str) -> str:
    return _run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                f"{python} --version").strip()


def _drop_direct_url(site: Path) -> None:
    """Remove pip's direct_url.json (it records the scratch path of the wheel) and its
    RECORD line, so the same code always gives the same layer."""
    for direct in site.glob("falconer-*.dist-info/direct_url.json"):
        direct.unlink()
        record = direct.with_name("RECORD")
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if "/direct_url.json," not in ln))


def build_wheel(out: Path) -> Path:
    """Build Falconer's wheel from a copy of this checkout's sources (`pip wheel --no-deps`,
    so the checkout gets no build/ or egg-info) into `out`; its path. ImageBuildError when
    pip fails or writes no wheel."""
    with tempfile.TemporaryDirectory(prefix="falconer-wheel-") as work:
        src = Path(work, "src")
        for path in _source_files():
            target = src / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, src],
             "building the Falconer wheel")
    wheel = next(out.glob("falconer-*.whl"), None)
    if wheel is None:
        raise ImageBuildError(f"pip wheel wrote no falconer-*.whl into {out}")
    return wheel


def falconer_layer(blobs: Path) -> oci.Layer:
    """Falconer from this checkout: a wheel built from a copy of the sources, installed
    with Debian's pip (`--no-deps --root`) under /usr/local, byte-compiled with
    hash-checked .pyc files; every member with a fixed mtime, so equal code gives an
    equal layer. About 10-20 s (the wheel build fetches its build backend from PyPI)."""
    version = _python_version(SYSTEM_PYTHON)
    with tempfile.TemporaryDirectory(prefix="falconer-layer-") as work:
        staging = Path(work, "root")
        progress("sensor: building the Falconer wheel")
        wheel = build_wheel(Path(work, "wheels"))
        _run([SYSTEM_PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
              "--no-warn-script-location", "--root", staging, wheel],
             "installing the Falconer wheel", env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
        site = staging / f"usr/local/lib/python{version}/dist-packages"
        if not (site / "falconer").is_dir() or not (staging / "usr/local/bin/falconer").is_file():
            raise ImageBuildError(f"pip did not install falconer under {site} and "
                                  f"{staging}/usr/local/bin (is {SYSTEM_PYTHON} Debian's?)")
        _drop_direct_url(site)
        _run([SYSTEM_PYTHON, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
              "-s", staging, "-p", "/", site / "falconer"], "byte-compiling Falconer")
        return oci.tree_layer(blobs, staging)


def _sensor_key() -> str:
    return _sha256(_base_key(debian_mirrors()), _source_hash(), _python_version(SYSTEM_PYTHON))


def _sensor_layers(cache: Path, blobs: Path) -> list[oci.Layer]:
    return [sensor_base_layer(cache), falconer_layer(blobs)]


# --- the recipes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How one image is made: `key` hashes its inputs; `layers(cache, scratch)` returns
    its layers, base first, built into the folder `scratch` unless kept in `cache` for
    reuse; `history` says what each layer is."""

    key: Callable[[], str]
    layers: Callable[[Path, Path], list[oci.Layer]]
    config: oci.ImageConfig
    history: tuple[str, ...]


RECIPES: dict[str, Recipe] = {
    "pause": Recipe(_pause_key, _pause_layers, oci.ImageConfig(entrypoint=["/pause"]),
                    ("gcc " + " ".join(PAUSE_CFLAGS) + " e2e/pause/pause.c -> /pause",)),
    "busybox": Recipe(_busybox_key, _busybox_layers,
                      oci.ImageConfig(entrypoint=[], cmd=["sh"]),
                      ("Debian busybox-static: /bin/busybox, applet links, /etc, /tmp",)),
    "sensor": Recipe(_sensor_key, _sensor_layers,
                     oci.ImageConfig(entrypoint=["falconer"], cmd=["--help"], env=SENSOR_IMAGE_ENV),
                     (f"debootstrap --variant=minbase {DEBIAN_SUITE} + "
                      + ",".join(BASE_PACKAGES) + "; pip " + " ".join(BASE_PIP),
                      "pip install --no-deps falconer (this checkout)")),
    "workload": Recipe(_workload_key, _workload_layers,
                       oci.ImageConfig(entrypoint=[], cmd=["sh"]),
                       ("Debian busybox-static: /bin/busybox, applet links, /etc, /tmp",
                        "Debian redis-tools: redis-server, redis-cli and their libraries; "
                        "/www/index.html")),
}


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    """Serialise builds of image `name` sharing `cache` (set-up steps and test sessions
    of several checkouts overlap); other images build meanwhile."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f".lock-{name}").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def archive_path(name: str, cache: Path | None = None) -> Path:
    """Where `build(name, cache)` puts (or finds) the archive for the current inputs."""
    recipe = _recipe(name)
    return (cache or cache_dir()) / f"{name}-{_sha256(_code_hash(), recipe.key())[:16]}.tar"


def _recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"no image {name!r}; images: {', '.join(RECIPES)}") from None


#: An archive not asked for in this long is removed when another of its image is built
#: (several checkouts share the cache, each with its own sensor archive).
UNUSED_ARCHIVE_SECONDS = 3600.0


def _sweep_scratch(cache: Path, name: str) -> None:
    """Remove the scratch folders (`<name>-*`) a killed build of image `name` left in
    `cache`, with the /proc it may have mounted in a new root; called with that image
    locked, so none is in use."""
    for folder in cache.glob(f"{name}-*"):
        if folder.is_dir():
            _unmount_under(folder)
            progress(f"removing {folder}, left by a killed build")
            shutil.rmtree(folder)


def _prune(cache: Path, name: str, keep: Path) -> None:
    """Remove archives of image `name` other than `keep` that nobody asked for lately."""
    for old in cache.glob(f"{name}-*.tar"):
        if old != keep and time.time() - old.stat().st_mtime > UNUSED_ARCHIVE_SECONDS:
            old.unlink()


def build(name: str, cache: Path | None = None) -> Path:
    """The OCI archive of image `name` (a key of `RECIPES`), imported as
    `REFS[name]`: the cached one when its inputs are unchanged, else built now. Archives
    of the same image unused for `UNUSED_ARCHIVE_SECONDS` are then removed. `cache`
    defaults to `cache_dir()`.

    Raises ValueError for an unknown name and ImageBuildError when a build step fails
    (a missing tool names the set-up step that installs it).
    """
    recipe = _recipe(name)
    cache = cache or cache_dir()
    with _locked(cache, name):
        out = archive_path(name, cache)
        if out.is_file():
            os.utime(out)  # in use: not pruned by a build of another checkout
            return out
        _sweep_scratch(cache, name)
        started = time.monotonic()
        progress(f"building {REFS[name]}")
        with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=cache) as scratch:
            layers = recipe.layers(cache, Path(scratch))
            oci.write_archive(out, REFS[name], layers, recipe.config, recipe.history)
        _prune(cache, name, out)
        progress(f"{REFS[name]}: {out} ({out.stat().st_size / 1e6:.1f} MB, "
                 f"{time.monotonic() - started:.0f} s)")
        return out


def main(argv: Sequence[str] | None = None) -> int:
    """`build [NAME ...]`: build (or find cached) images, print one archive path each."""
    parser = argparse.ArgumentParser(prog="python -m falconer_e2e.images")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build images into the cache")
    build_cmd.add_argument("names", nargs="*", metavar="NAME",
                           help=f"images to build (default: all of {', '.join(RECIPES)})")
    build_cmd.add_argument("--cache", type=Path, default=None,
                           help=f"cache folder (default: {cache_dir()})")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(RECIPES):
            print(build(name, args.cache), flush=True)
    except (ImageBuildError, ValueError) as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
