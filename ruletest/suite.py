"""The rule-test suite format: YAML files of tests, read into typed records.

A suite file is a YAML list; each item is one test::

    - name: cat reads /etc/shadow               # unique in the run
      rule: Credential file read by a non-login program
      context:                                  # all keys optional
        user: root                              # name or uid of the whole chain
        process: ruletest                       # the process that performs the steps
        parents: [nginx]                        # its ancestors, nearest first
        container: true                         # in a container cgroup (see below)
        network: [169.254.169.254]              # fresh net namespace, these on lo
        tmpfs: [/etc/cron.d]                    # private mounts: fresh tmpfs here
        pod: {image: busybox}                   # instead: in a pod of this image
                                                # (privileged: true for a privileged one)
      steps:
        - run: cat /etc/shadow                  # /bin/sh -c, as a child of `process`
        - open: {path: "{workdir}/f", mode: write}   # or a named system call
      expect:
        alert: true                             # false: a near miss, no alert
        priority: WARNING
        output_fields: {fd.name: /etc/shadow, proc.name: cat}   # fnmatch patterns

`{workdir}` (the test's own empty folder, also $WORKDIR and $HOME) and `{nonce}` (a
token unique to the test, also $NONCE) are replaced in every step argument and expected
value. A test without `rule` must expect no alert: it asserts that no rule at all fires
(a benign workload). Errors name the file and the test; nothing is run from a suite
with errors.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from falconer.ruletest.actor import NAMESPACE_FLAGS, OPEN_MODES, PTRACE_REQUESTS, STEPS, Step
from falconer.ruletest.pods import POD_STEPS

PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
              "INFORMATIONAL", "INFO", "DEBUG")
DEFAULT_PROCESS = "ruletest"
#: comm, Falco's proc.name, holds at most 15 bytes.
MAX_NAME = 15

#: Per step kind: parameter -> (type, required). A bare value (`run: CMD`) fills the
#: first parameter.
STEP_PARAMS: dict[str, dict[str, tuple[type, bool]]] = {
    "run": {"command": (str, True), "check": (bool, False)},
    "open": {"path": (str, True), "mode": (str, False)},
    "connect": {"address": (str, True), "port": (int, True), "proto": (str, False)},
    "listen": {"address": (str, True), "port": (int, True)},
    "exec": {"path": (str, True), "name": (str, False), "args": (list, False),
             "check": (bool, False)},
    "ptrace": {"request": (str, False)},
    "memfd_exec": {"path": (str, False), "name": (str, False), "args": (list, False)},
    "setns": {"namespace": (str, True), "pid": (int, False)},
    "unshare": {"namespaces": (list, True)},
    "setuid": {"uid": (int, True)},
    "bpf_prog_load": {},
    "finit_module": {"path": (str, True)},
    "sleep": {"seconds": (float, True)},
}
#: Closed sets of values for some parameters.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("open", "mode"): tuple(OPEN_MODES),
    ("connect", "proto"): ("tcp", "udp"),
    ("ptrace", "request"): tuple(PTRACE_REQUESTS),
    ("setns", "namespace"): tuple(NAMESPACE_FLAGS),
}
assert set(STEP_PARAMS) == set(STEPS), "every step kind has a parameter table"


class SuiteError(ValueError):
    """A suite file that cannot be run: `file: test: problem`."""


@dataclass(frozen=True)
class Pod:
    """An in-pod context: the test's process runs in a pod of this image, a privileged
    container (all capabilities, the host's devices) when `privileged`."""

    image: str
    privileged: bool = False


@dataclass(frozen=True)
class Context:
    """Who and where the steps run (see the module docstring)."""

    user: str = "root"
    uid: int = 0
    gid: int = 0
    process: str = DEFAULT_PROCESS
    parents: tuple[str, ...] = ()
    container: bool = False
    network: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    pod: Pod | None = None

    @property
    def chain(self) -> list[str]:
        """Process names from the outermost parent to the test's process."""
        return [*reversed(self.parents), self.process]


@dataclass(frozen=True)
class Expect:
    """The outcome: an alert of `rule` (with priority and output fields), or none."""

    alert: bool
    priority: str | None = None
    output_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleTest:
    """One test of a suite file."""

    name: str
    rule: str | None
    context: Context
    steps: tuple[Step, ...]
    expect: Expect
    file: str


def load(paths: list[Path]) -> list[RuleTest]:
    """Every test of the suite files, in order; SuiteError on the first problem."""
    tests: list[RuleTest] = []
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SuiteError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(doc, list):
            raise SuiteError(f"{path}: a suite is a YAML list of tests")
        for i, item in enumerate(doc):
            where = f"{path}: test {i + 1}"
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                where = f"{path}: {item['name']}"
            tests.append(_test(item, str(path), where))
    seen: set[str] = set()
    for t in tests:
        if t.name in seen:
            raise SuiteError(f"{t.file}: {t.name}: the test name is used twice")
        seen.add(t.name)
    return tests


#: The two kinds of case every tested rule needs (`coverage`).
FIRING = "firing"
NEAR_MISS = "near miss"


def coverage(rules: list[str], tests: list[RuleTest]) -> dict[str, list[str]]:
    """What each rule lacks among `tests`: rule name -> the missing kinds of case
    (FIRING, an `alert: true` test; NEAR_MISS, an `alert: false` test naming the rule),
    for the rules that lack any, in the order of `rules`. Tests naming a rule outside
    `rules` are listed under that name with ["not a loaded rule"]."""
    fires = {t.rule for t in tests if t.rule is not None and t.expect.alert}
    misses = {t.rule for t in tests if t.rule is not None and not t.expect.alert}
    gaps: dict[str, list[str]] = {}
    for rule in rules:
        missing = [kind for kind, have in ((FIRING, fires), (NEAR_MISS, misses))
                   if rule not in have]
        if missing:
            gaps[rule] = missing
    for name in sorted((fires | misses) - set(rules)):
        gaps[name] = ["not a loaded rule"]
    return gaps


def _fail(where: str, msg: str) -> SuiteError:
    return SuiteError(f"{where}: {msg}")


def _keys(node: object, allowed: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _fail(where, f"expected a mapping with keys {', '.join(sorted(allowed))}")
    unknown = set(node) - allowed
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(map(str, sorted(unknown)))}; "
                    f"allowed: {', '.join(sorted(allowed))}")
    missing = required - set(node)
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(sorted(missing))}")
    return node


def _test(item: object, file: str, where: str) -> RuleTest:
    node = _keys(item, {"name", "rule", "context", "steps", "expect"},
                 {"name", "steps", "expect"}, where)
    rule = node.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise _fail(where, "rule: expected a rule name")
    steps = node["steps"]
    if not isinstance(steps, list) or not steps:
        raise _fail(where, "steps: expected a non-empty list")
    expect = _expect(node["expect"], f"{where}: expect")
    if rule is None and expect.alert:
        raise _fail(where, "a test without `rule` can only expect no alert (alert: false)")
    context = _context(node.get("context") or {}, f"{where}: context")
    parsed = tuple(_step(s, f"{where}: step {n + 1}") for n, s in enumerate(steps))
    if context.pod is not None:
        for n, step in enumerate(parsed):
            if step["kind"] not in POD_STEPS or "name" in step["args"]:
                raise _fail(f"{where}: step {n + 1}",
                            f"in a pod, steps are {' and '.join(POD_STEPS)} (without name)")
    return RuleTest(name=node["name"], rule=rule, context=context, steps=parsed,
                    expect=expect, file=file)


def _expect(node: object, where: str) -> Expect:
    node = _keys(node, {"alert", "priority", "output_fields"}, {"alert"}, where)
    if not isinstance(node["alert"], bool):
        raise _fail(where, "alert: expected true or false")
    priority = node.get("priority")
    if priority is not None and str(priority).upper() not in PRIORITIES:
        raise _fail(where, f"priority: {priority!r} is not one of {', '.join(PRIORITIES)}")
    fields = node.get("output_fields") or {}
    if not isinstance(fields, dict):
        raise _fail(where, "output_fields: expected a mapping of field to value")
    if not node["alert"] and (priority or fields):
        raise _fail(where, "priority and output_fields only apply when alert is true")
    return Expect(node["alert"], str(priority).upper() if priority else None,
                  {str(k): str(v) for k, v in fields.items()})


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or len(value.encode()) > MAX_NAME:
        raise _fail(where, f"{value!r}: a process name is 1..{MAX_NAME} bytes without '/'")
    return value


def _context(node: object, where: str) -> Context:
    node = _keys(node, {"user", "process", "parents", "container", "network", "tmpfs", "pod"},
                 set(), where)
    user = node.get("user", "root")
    try:
        pw = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(str(user))
    except KeyError as exc:
        raise _fail(where, f"user: no such user {user!r} on this host") from exc
    parents = node.get("parents") or []
    if not isinstance(parents, list):
        raise _fail(where, "parents: expected a list of process names, nearest first")
    lists = {}
    for key in ("network", "tmpfs"):
        value = node.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(where, f"{key}: expected a list of strings")
        lists[key] = tuple(value)
    if not all(p.startswith("/") for p in lists["tmpfs"]):
        raise _fail(where, "tmpfs: expected absolute paths")
    container = node.get("container", False)
    if not isinstance(container, bool):
        raise _fail(where, "container: expected true or false")
    pod = None
    if node.get("pod") is not None:
        pnode = _keys(node["pod"], {"image", "privileged"}, {"image"}, f"{where}: pod")
        if not isinstance(pnode.get("privileged", False), bool):
            raise _fail(f"{where}: pod", "privileged: expected true or false")
        pod = Pod(image=str(pnode["image"]), privileged=pnode.get("privileged", False))
        if set(node) - {"pod"}:
            raise _fail(where, "pod: the image decides the user and the runtime the process "
                        "tree; it cannot be combined with other context keys")
    return Context(user=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid,
                   process=_name(node.get("process", DEFAULT_PROCESS), f"{where}: process"),
                   parents=tuple(_name(p, f"{where}: parents") for p in parents),
                   container=container, network=lists["network"], tmpfs=lists["tmpfs"],
                   pod=pod)


def _step(node: object, where: str) -> Step:
    if not isinstance(node, dict) or not node:
        raise _fail(where, f"expected one of: {', '.join(STEP_PARAMS)}")
    kinds = [k for k in node if k in STEP_PARAMS]
    if len(kinds) != 1:
        raise _fail(where, f"expected exactly one of: {', '.join(STEP_PARAMS)}")
    kind = kinds[0]
    params = STEP_PARAMS[kind]
    value = node[kind]
    if isinstance(value, dict):
        args = dict(value)
        extra = {k: v for k, v in node.items() if k != kind}
        if extra:
            raise _fail(where, f"{kind}: put {', '.join(extra)} inside its mapping")
    else:
        first = next(iter(params), None)
        if first is None:
            if value not in (None, {}):
                raise _fail(where, f"{kind}: takes no arguments")
            args = {}
        else:
            args = {first: value, **{k: v for k, v in node.items() if k != kind}}
    unknown = set(args) - set(params)
    if unknown:
        raise _fail(where, f"{kind}: unknown argument(s) {', '.join(sorted(unknown))}; "
                    f"allowed: {', '.join(params) or 'none'}")
    for pname, (ptype, required) in params.items():
        if pname not in args:
            if required:
                raise _fail(where, f"{kind}: missing argument {pname}")
            continue
        v = args[pname]
        if ptype is float and isinstance(v, int) and not isinstance(v, bool):
            v = args[pname] = float(v)
        if not isinstance(v, ptype) or (ptype is int and isinstance(v, bool)):
            raise _fail(where, f"{kind}: {pname}: expected {ptype.__name__}")
        choices = CHOICES.get((kind, pname))
        if choices and v not in choices:
            raise _fail(where, f"{kind}: {pname}: {v!r} is not one of {', '.join(choices)}")
        if isinstance(v, list):
            args[pname] = [str(x) for x in v]
    if kind == "unshare":
        bad = [ns for ns in args["namespaces"] if ns not in NAMESPACE_FLAGS]
        if bad:
            raise _fail(where, f"unshare: unknown namespace(s) {', '.join(bad)}")
    if kind == "exec" and "name" in args:
        _name(args["name"], f"{where}: exec name")
    return Step(kind=kind, args=args)


def substitute(value: Any, workdir: str, nonce: str) -> Any:
    """`{workdir}` and `{nonce}` replaced in a value and everything inside it."""
    if isinstance(value, str):
        return value.replace("{workdir}", workdir).replace("{nonce}", nonce)
    if isinstance(value, list):
        return [substitute(v, workdir, nonce) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, workdir, nonce) for k, v in value.items()}
    return value
