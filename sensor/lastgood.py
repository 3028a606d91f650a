"""The last good rules, kept on disk so that a restarted sensor can run them
(`falconer sensor --config FILE --state-dir DIR`).

Every clean load of a `--config` input (at start and at each reload) copies the config
file and the rules files it names, as they were loaded, into `DIR/last-good/`: a folder
named after the content's digest, swapped in by renaming a symlink over `last-good`
(atomic, as kubelet swaps a ConfigMap volume's `..data`). A sensor that starts on a
config it cannot load (the ConfigMap deleted or corrupted, then the container
restarted) runs the kept copy instead, says so, reports the reason as its
`lastReloadError` and keeps watching the real config. In the DaemonSet, DIR is on the
pod's `/tmp` emptyDir: it survives container restarts (kill -9, OOM), not the pod's
replacement.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from falconer.engine import RulesSource
from falconer.sensor.config import Snapshot

#: The symlink naming the kept copy, inside the state dir.
KEPT = "last-good"


class KeepError(OSError):
    """The copy could not be written (the running rules are not affected)."""


def kept_config(state_dir: Path) -> Path | None:
    """The kept copy's config file, or None when nothing was kept yet."""
    config = state_dir / KEPT / "falconer.yaml"
    return config if config.is_file() else None


def keep(state_dir: Path, config: Path, snapshot: Snapshot) -> bool:
    """Keep `snapshot` (a clean load of the config file `config`) as the last good
    rules; False when it cannot be kept as it is (a rules file that could not be read).
    The codec only admits rules files in the config's own folder (ConfigMap keys), so
    the copy has the same layout. Raises KeepError when writing fails."""
    if snapshot.config is None or not snapshot.config_text:
        return False
    files: list[tuple[Path, str]] = [(Path("falconer.yaml"), snapshot.config_text)]
    for path, source in zip(snapshot.config.rules_files, snapshot.sources, strict=True):
        if not isinstance(source, RulesSource):
            return False
        files.append((path.relative_to(config.parent), source.text))
    try:
        _swap_in(state_dir, f".{snapshot.digest[:16]}", files)
    except OSError as exc:
        raise KeepError(f"cannot keep the last good rules in {state_dir}: {exc}") from exc
    return True


def _swap_in(state_dir: Path, name: str, files: list[tuple[Path, str]]) -> None:
    """Write `files` into `state_dir/name` (unless there), point `KEPT` at it, and
    remove the copies it replaces."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / name
    if not target.is_dir():
        partial = state_dir / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for relative, text in files:
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            (partial / relative).write_text(text, encoding="utf-8")
        partial.rename(target)
    link = state_dir / f"{KEPT}.new"
    link.unlink(missing_ok=True)
    link.symlink_to(name)
    os.replace(link, state_dir / KEPT)
    for old in state_dir.glob(".*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
