"""What `falconer test` prints: a progress line per test, the result table, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import TextIO

from falconer.ruletest.runner import Result

STATUS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}


def progress(out: TextIO, done: int, total: int, result: Result) -> None:
    """`[ 12/88] PASS  name (0.4 s)`: one line as each test ends."""
    width = len(str(total))
    retried = f", {result.attempts} attempts" if result.attempts > 1 else ""
    out.write(f"[{done:>{width}}/{total}] {STATUS[result.status]:<5} {result.test.name} "
              f"({result.seconds:.1f} s{retried})\n")
    out.flush()


def table(out: TextIO, results: list[Result]) -> None:
    """The pass/fail table (status, rule, test, reason) and the totals line."""
    rows = [(STATUS[r.status], r.test.rule or "(any rule)", r.test.name,
             r.reason.splitlines()[0] if r.reason else "") for r in results]
    heads = ("STATUS", "RULE", "TEST", "REASON")
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(heads[:3])]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    out.write(line.format(*heads).rstrip() + "\n")
    for row in rows:
        out.write(line.format(*row).rstrip() + "\n")
    out.write(totals(results) + "\n")


def totals(results: list[Result]) -> str:
    """`88 tests: 86 passed, 1 failed, 1 error`."""
    n = Counter(r.status for r in results)
    return (f"{len(results)} tests: {n['pass']} passed, {n['fail']} failed, "
            f"{n['error']} errors")


def junit(path: Path, results: list[Result]) -> None:
    """JUnit XML: one <testsuite> per suite file, a <testcase> per test (classname is
    the rule), <failure> or <error> with the reason and the test's alerts."""
    root = ET.Element("testsuites", name="falconer test", tests=str(len(results)))
    by_file: dict[str, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.test.file, []).append(r)
    for file, group in by_file.items():
        n = Counter(r.status for r in group)
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(group)),
                              failures=str(n["fail"]), errors=str(n["error"]),
                              time=f"{sum(r.seconds for r in group):.3f}")
        for r in group:
            case = ET.SubElement(suite, "testcase", classname=r.test.rule or "(any rule)",
                                 name=r.test.name, time=f"{r.seconds:.3f}")
            if r.status != "pass":
                tag = "failure" if r.status == "fail" else "error"
                el = ET.SubElement(case, tag, message=r.reason.splitlines()[0] if r.reason else "")
                el.text = r.reason + "".join(f"\n{a.get('rule')}: {a.get('output')}"
                                             for a in r.alerts)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
