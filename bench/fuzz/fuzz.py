"""The fuzz campaign: `./dev fuzz [--minutes N] [--runs N] [--target T ...]`.

Each target (bench/fuzz/targets.py) runs in its own process under atheris (libFuzzer,
coverage-guided over the instrumented `falconer` modules), starting from its seeds, the
corpus kept from earlier runs (/var/cache/falconer/fuzz/<target>/corpus, outside the
repository) and every input that once crashed it (bench/fuzz/regressions/<target>/, run
first, every time). A progress line per target shows runs, coverage and speed; a crash's
input is written to /var/cache/falconer/fuzz/<target>/crash-<sha1> and the run fails.
The summary (runs, seconds, crashes per target) is printed and appended to
/var/cache/falconer/fuzz/campaigns.jsonl.

Exit status: 0 when no target crashed, 1 otherwise, 2 on a bad command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"
CACHE = Path(os.environ.get("FALCONER_FUZZ_DIR", "/var/cache/falconer/fuzz"))
#: Seconds one input may take before libFuzzer calls it a hang (a shared machine is slow).
INPUT_TIMEOUT_S = 30
#: Seconds between progress lines.
PROGRESS_S = 5.0
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s")
_COV = re.compile(r"cov: (\d+)")
_CORPUS = re.compile(r"corp: (\d+)/")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")


@dataclass
class Outcome:
    """One target's run: inputs executed, wall seconds, crash files written."""

    target: str
    runs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    exit_code: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)   # how far inputs got (loader)
    shown: float = field(default=0.0, repr=False)   # when the progress line was last printed


def main(argv: list[str] | None = None) -> int:
    """Run the campaign (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(HERE))
    if argv[:1] in (["--child"], ["--child-fast"]):
        # Before anything imports Falconer: its modules must load instrumented.
        return _child(argv[1], argv[2:], instrument=argv[0] == "--child")
    from targets import TARGETS  # noqa: PLC0415 - bench/fuzz is no package

    parser = argparse.ArgumentParser(prog="./dev fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="time budget per target")
    parser.add_argument("--runs", type=int, default=-1, help="inputs per target (-1: no bound)")
    parser.add_argument("--fast", action="store_true",
                        help="no coverage instrumentation: mutate the kept corpus only "
                             "(several times the inputs per second; for volume after a "
                             "coverage-guided run has grown the corpus)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="run only this target (repeatable; default: all)")
    args = parser.parse_args(argv)
    outcomes = [_run(name, args.minutes, args.runs, args.fast) for name in args.target or sorted(TARGETS)]
    _report(outcomes)
    return 0 if all(o.crashes == 0 and o.exit_code == 0 for o in outcomes) else 1


def _child(name: str, libfuzzer_args: list[str], instrument: bool) -> int:
    """Inside the target's process: instrument Falconer (unless told not to), then fuzz
    until the budget ends."""
    import atheris  # noqa: PLC0415

    if instrument:
        with atheris.instrument_imports(include=["falconer"]):
            import targets  # noqa: PLC0415
    else:
        import targets  # noqa: PLC0415

    target = targets.TARGETS[name]
    mutate = target.mutate or (lambda data, max_size, _seed, mutate_bytes: mutate_bytes(data, max_size))
    # Without coverage every input looks alike to libFuzzer, which then keeps mutating the
    # same few: in fast mode half the mutations start from a corpus input drawn here.
    pool = [] if instrument else _corpus(libfuzzer_args)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        base = rng.choice(pool) if pool and rng.random() < 0.5 else data
        return mutate(base, max_size, seed, atheris.Mutate)

    atheris.Setup([sys.argv[0], *libfuzzer_args], target.run, custom_mutator=mutator)
    atheris.Fuzz()
    return 0


def _corpus(libfuzzer_args: list[str]) -> list[bytes]:
    """Every input in the corpus folders named on libFuzzer's command line."""
    folders = [Path(a) for a in libfuzzer_args if not a.startswith("-")]
    return [p.read_bytes() for folder in folders if folder.is_dir() for p in sorted(folder.iterdir())
            if p.is_file()]


def _run(name: str, minutes: float, runs: int, fast: bool) -> Outcome:
    from targets import TARGETS  # noqa: PLC0415

    target = TARGETS[name]
    work = CACHE / name
    corpus, seeds = work / "corpus", work / "seeds"
    for folder in (corpus, seeds):
        folder.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds():
        (seeds / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    before = set(work.glob("crash-*")) | set(work.glob("timeout-*")) | set(work.glob("oom-*"))
    regressions = REGRESSIONS / name
    command = [sys.executable, str(Path(__file__).resolve()), "--child-fast" if fast else "--child", name,
               f"-max_total_time={max(1, int(minutes * 60))}", f"-runs={runs}",
               f"-max_len={target.max_len}", f"-timeout={INPUT_TIMEOUT_S}", "-rss_limit_mb=4096",
               f"-artifact_prefix={work}/", "-print_final_stats=1",
               # Without coverage no input looks new: keep every seed and corpus input
               # as a base to mutate.
               *(["-keep_seed=1"] if fast else []),
               str(corpus), str(seeds), *([str(regressions)] if regressions.is_dir() else [])]
    outcome = Outcome(name)
    outcomes = work / "outcomes.json"
    outcomes.unlink(missing_ok=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONSAFEPATH": "1", "FALCONER_FUZZ_OUTCOMES": str(outcomes)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", env=env) as child:
        assert child.stdout is not None
        log = (work / "last-run.log").open("w")
        with log:
            for line in child.stdout:
                log.write(line)
                _progress(name, line, outcome, started)
        outcome.exit_code = child.wait()
    outcome.seconds = round(time.monotonic() - started, 1)
    after = set(work.glob("crash-*")) | set(work.glob("timeout-*")) | set(work.glob("oom-*"))
    outcome.crashes = len(after - before) or (1 if outcome.exit_code != 0 else 0)
    if outcomes.exists():
        outcome.outcomes = json.loads(outcomes.read_text())
        print(f"\n[{name}] outcomes (sampled every 2000 inputs): {outcome.outcomes}", end="")
    if outcome.crashes:
        print(f"\n[{name}] CRASH: see {work}/last-run.log and {sorted(after - before)}", flush=True)
    print(flush=True)
    return outcome


def _progress(name: str, line: str, outcome: Outcome, started: float) -> None:
    """Fold libFuzzer's status lines into one progress line per target."""
    done = _DONE.match(line)
    if done:
        outcome.runs = int(done.group(1))
        return
    status = _STATUS.match(line)
    if status is None:
        if "Uncaught Python exception" in line or line.startswith(("==", "Traceback")):
            print(f"\n[{name}] {line.rstrip()}", flush=True)
        return
    outcome.runs = int(status.group(1))
    elapsed = time.monotonic() - started
    if status.group(2) not in ("pulse", "INITED", "DONE") and elapsed < outcome.shown + PROGRESS_S:
        return
    outcome.shown = elapsed
    cov, corpus = _COV.search(line), _CORPUS.search(line)
    print(f"\r[{name}] {outcome.runs} inputs, cov {cov.group(1) if cov else '-'}, "
          f"corpus {corpus.group(1) if corpus else '-'}, {outcome.runs / max(elapsed, 1e-9):.0f}/s, "
          f"{elapsed:.0f} s   ", end="", flush=True)


def _report(outcomes: list[Outcome]) -> None:
    print(f"{'target':<14}{'inputs':>12}{'seconds':>10}{'crashes':>9}")
    for o in outcomes:
        print(f"{o.target:<14}{o.runs:>12}{o.seconds:>10}{o.crashes:>9}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "campaigns.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "outcomes": [{k: v for k, v in asdict(o).items() if k != "shown"} for o in outcomes]}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
