"""Operator hot paths without an API server: how long a FalcoRule of the upstream size
takes to convert, compile (cold and cached) and render into an instance's manifests.

Prints one line per measurement (best of several runs, milliseconds).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from falconer.operator import convert, render, rules
from falconer.operator.spec import parse_instance, parse_rule
from falconer.paths import ROOT

UPSTREAM = ROOT.parent / "shared" / "anchors" / "falco-rules"
FILES = ["falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"]


def best_ms(fn: Callable[[], object], runs: int = 5) -> float:
    """The fastest of `runs` calls, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> int:
    paths = [UPSTREAM / f for f in FILES]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"bench_operator: upstream rules files missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    specs = {}
    for path in paths:
        text = path.read_text()
        name = path.stem.replace("_", "-")
        ms = best_ms(lambda t=text, n=name: convert.falcorule_manifest(t, n))
        print(f"to-crd {path.name}: {ms:.1f} ms")
        specs[name] = parse_rule(convert.falcorule_manifest(text, name)["spec"])
    for name, spec in specs.items():
        cold = best_ms(lambda n=name, s=spec: rules.compile_uncached([rules.render_text(n, s)], rules.engine_options()),
                       runs=3)
        rules.compile_falcorule(name, spec)
        cached = best_ms(lambda n=name, s=spec: rules.compile_falcorule(n, s))
        print(f"compile {name}: cold {cold:.1f} ms, cached {cached:.1f} ms (render_text included)")
    texts = [rules.render_text(name, spec) for name, spec in specs.items()]
    combined = best_ms(lambda: rules.compile_uncached(texts, rules.engine_options()), runs=3)
    print(f"compile all three as one set: {combined:.1f} ms")
    instance = {"metadata": {"name": "bench", "namespace": "bench", "uid": "u"}, "spec": {}}
    print(f"render instance (3 FalcoRules): {best_ms(lambda: render.render_instance(instance, parse_instance(None), texts)):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
