"""The rule-derived kernel filter: which paths of the open family no rule can match.

For each forwarded open-family syscall (open, openat, openat2, creat) the loaded rules
are read (their expanded conditions, `CompiledRule.condition`) for an over-approximation
of the paths they can match: exact paths and prefixes from checks on `fd.name`,
`fd.nameraw`, `fd.directory`, `fs.path.name(raw)` and `evt.arg.name` with `=`, `in`,
`startswith`, `pmatch` and `glob` (its literal prefix), and suffixes from `endswith`
and from `fd.filename` (`=`, `in`: "/" + the name). `and` intersects
(over-approximately, `_intersect`), `or` unites, `not` and every other check bound
nothing. A syscall where some rule's condition cannot be bounded (e.g. a bare
`evt.type = openat`) is forwarded whole.

A rule on a syscall that reads a descriptor opened earlier (close, dup, fchmod ...) and
looks at `fd.*` fields (condition or output) sees what the open recorded: its bound on
`fd.name` joins every open's bound, or leaves opens unbounded. A check that the
descriptor is no file (`fd.type in (ipv4, ipv6)`) bounds it to nothing.

The kernel side (probe.bpf.c `passes_filter`) lets a record through when its path is
not plain (relative, "//", "/.", "..", trailing "/", longer than KEY_PATH - 1: the
resolved `fd.name` could differ; a check that the path contains one of those is thus
bounded to nothing), opens a directory (state: cwd, dirfd-relative paths), or
matches an entry of the syscall's group in the LPM trie (suffixes are matched as
prefixes of the reversed path). `KernelFilter.passes` is the
same decision in Python, for the soundness test and for tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from falconer.engine import ast
from falconer.engine.evttypes import event_types
from falconer.engine.ruleset import Ruleset
from falconer.sensor import kernelabi as abi
from falconer.sensor import record

OPEN_FAMILY = frozenset({"open", "openat", "openat2", "creat"})
#: Syscalls whose event takes its descriptor from the fd table, where it may stand as an
#: open recorded it (sensor/tracker.py handlers; socket calls' fds come from socket()).
FD_FROM_TABLE = frozenset({"close", "dup", "dup2", "dup3", "fchmod", "setns",
                           "finit_module", "fchdir"})
#: fd.type / fd.typechar values of a descriptor an open made.
OPENED_FD_TYPES = frozenset({"file", "directory", "f", "d"})
#: Fields naming an open's path (plain absolute paths: raw == resolved).
OPEN_PATH_FIELDS = frozenset({"fd.name", "fd.nameraw", "fs.path.name", "fs.path.nameraw",
                              "evt.arg.name"})
#: Fields naming a descriptor's path as its open recorded it.
FD_PATH_FIELDS = frozenset({"fd.name", "fd.nameraw"})
_GLOB_SPECIAL = "*?[\\"
#: A path with one of these is never compared in the kernel (see `plain_absolute`).
_NOT_PLAIN = ("//", "/.", "..")
#: Group ids are one byte: bit 7 the generation, bit 6 the reversed (suffix) entries.
MAX_GROUPS = 63
GENERATION_BIT = 0x80


@dataclass(frozen=True)
class PathBound:
    """Paths a condition can match: equal to one of `exact`, starting with one of
    `prefixes` or ending with one of `suffixes`."""

    exact: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()

    def __or__(self, other: PathBound) -> PathBound:
        return PathBound(self.exact | other.exact, self.prefixes | other.prefixes,
                         self.suffixes | other.suffixes)

    @property
    def size(self) -> int:
        """Map entries this bound takes."""
        return len(self.exact) + len(self.prefixes) + len(self.suffixes)

    def matches(self, path: str) -> bool:
        """Whether `path` is inside the bound."""
        return (path in self.exact or any(path.startswith(p) for p in self.prefixes)
                or any(path.endswith(x) for x in self.suffixes))


EMPTY = PathBound()
#: None stands for "unbounded" throughout.
Bound = PathBound | None


def _union(a: Bound, b: Bound) -> Bound:
    return None if a is None or b is None else a | b


#: Past this many entries an intersection keeps its smaller operand instead.
MAX_INTERSECTION = 4096


def _intersect(a: Bound, b: Bound) -> Bound:
    """An over-approximation of a ∩ b, piece by piece: an exact path stays if the other
    side can match it; of two nested prefixes (suffixes) the longer stays; a prefix
    against a suffix keeps the prefix."""
    if a is None or b is None:
        return b if a is None else a
    exact = {e for e in a.exact if b.matches(e)} | {e for e in b.exact if a.matches(e)}
    prefixes = {_longer(p, q) for p in a.prefixes for q in b.prefixes
                if p.startswith(q) or q.startswith(p)}
    prefixes |= a.prefixes if b.suffixes else set()
    prefixes |= b.prefixes if a.suffixes else set()
    suffixes = {_longer(s, t) for s in a.suffixes for t in b.suffixes
                if s.endswith(t) or t.endswith(s)}
    result = PathBound(frozenset(exact), frozenset(prefixes), frozenset(suffixes))
    if result.size > MAX_INTERSECTION:
        return a if a.size <= b.size else b
    return result


def _longer(x: str, y: str) -> str:
    return x if len(x) >= len(y) else y


def _values(right: ast.Expr) -> list[str] | None:
    if isinstance(right, ast.Value):
        return [right.text]
    if isinstance(right, ast.ListValue):
        return [v.text for v in right.values]
    return None   # a transformer or a field reference


def _check_bound(node: ast.BinaryCheck, fields: frozenset[str]) -> Bound:
    """The bound of one check, None when it constrains no path field of `fields`."""
    left = node.left
    if not isinstance(left, ast.Field) or left.arg is not None:
        return None
    name = left.name
    if name in ("fd.type", "fd.typechar") and node.op in ("=", "==", "in"):
        kinds = _values(node.right)
        if kinds is not None and not OPENED_FD_TYPES & set(kinds):
            return EMPTY   # a socket, pipe ...: never a descriptor an open made
        return None
    is_dir = name == "fd.directory" and "fd.name" in fields
    is_base = name == "fd.filename" and "fd.name" in fields
    if name not in fields and not is_dir and not is_base:
        return None
    values = _values(node.right)
    if values is None:
        return None
    op = node.op
    if is_base:
        if op in ("=", "==", "in"):
            return PathBound(suffixes=frozenset("/" + v for v in values))
        if op == "endswith":
            return PathBound(suffixes=frozenset(values))
        return None
    if op == "endswith" and not is_dir:
        return PathBound(suffixes=frozenset(values))
    if op in ("contains", "glob") and all(_never_plain(v, op == "glob") for v in values):
        return EMPTY   # only a path the kernel forwards anyway can match
    if op in ("=", "==", "in"):
        if is_dir:
            return PathBound(prefixes=frozenset(v.rstrip("/") + "/" for v in values))
        return PathBound(exact=frozenset(values))
    if op == "pmatch" and not all(v.startswith("/") for v in values):
        return None   # a relative pmatch value matches by path components (engine/pathprefix.py)
    if op in ("startswith", "pmatch"):
        return PathBound(prefixes=frozenset(values))
    if op == "glob":
        return PathBound(prefixes=frozenset(_glob_prefix(v) for v in values))
    return None


def _never_plain(value: str, is_glob: bool) -> bool:
    """Whether every path containing `value` (matching the glob) is not plain."""
    if is_glob:
        if "[" in value or "\\" in value:
            return False
        pieces = value.replace("?", "*").split("*")
        return any(_never_plain(p, False) for p in pieces)
    return any(bad in value for bad in _NOT_PLAIN)


def _glob_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in _GLOB_SPECIAL), default=len(pattern))
    return pattern[:cut]


def bound(node: ast.Expr, evt_type: str, fields: frozenset[str]) -> Bound:
    """An over-approximation of the paths (in `fields`) for which `node` can be true on
    an event of type `evt_type`; EMPTY when it cannot be true at all."""
    if not event_types(node).contains(evt_type):
        return EMPTY
    if isinstance(node, ast.And):
        acc: Bound = None
        for child in node.children:
            acc = _intersect(acc, bound(child, evt_type, fields))
        return acc
    if isinstance(node, ast.Or):
        union: Bound = EMPTY
        for child in node.children:
            union = _union(union, bound(child, evt_type, fields))
            if union is None:
                return None
        return union
    if isinstance(node, ast.BinaryCheck):
        return _check_bound(node, fields)
    return None


def _uses_fd_fields(node: ast.Expr) -> bool:
    if isinstance(node, (ast.And, ast.Or)):
        return any(_uses_fd_fields(c) for c in node.children)
    if isinstance(node, ast.Not):
        return _uses_fd_fields(node.child)
    if isinstance(node, (ast.BinaryCheck, ast.UnaryCheck)):
        return _field_reads_fd(node.left) or (
            isinstance(node, ast.BinaryCheck) and _field_reads_fd(node.right))
    return False


def _field_reads_fd(node: ast.Expr) -> bool:
    if isinstance(node, ast.Field):
        return node.name.startswith("fd.")
    if isinstance(node, ast.Transformer):
        return any(_field_reads_fd(a) for a in node.args)
    return False


@dataclass
class KernelFilter:
    """Per open-family syscall, the paths worth forwarding (absent: forward whole)."""

    bounds: dict[str, PathBound] = field(default_factory=dict)
    #: forwarded open-family syscalls no bound could be found for
    unbounded: frozenset[str] = frozenset()

    @classmethod
    def forward_all(cls) -> KernelFilter:
        """No filtering at all."""
        return cls()

    @property
    def filters_opens(self) -> bool:
        """Whether some open can be kept in the kernel (then so can its close)."""
        return bool(self.bounds)

    def groups(self) -> list[PathBound]:
        """The distinct bounds, in a stable order (group i + 1 of a generation)."""
        seen: list[PathBound] = []
        for name in sorted(self.bounds):
            if self.bounds[name] not in seen:
                seen.append(self.bounds[name])
        return seen

    def group_ids(self, generation: int) -> dict[str, int]:
        """Syscall name -> group id in the given generation (0 or 1); the group's
        suffixes live under the id with FILTER_REVERSED, as reversed prefixes."""
        groups = self.groups()
        gen = GENERATION_BIT if generation else 0
        return {name: gen | (1 + groups.index(b)) for name, b in self.bounds.items()}

    def keys(self, generation: int) -> Iterator[record.PathKey]:
        """The LPM trie keys of every group of this generation."""
        gen = GENERATION_BIT if generation else 0
        for i, b in enumerate(self.groups()):
            group = gen | (1 + i)
            for path in b.exact:
                yield _key(group, _raw(path) + b"\0")
            for prefix in b.prefixes:
                yield _key(group, _raw(prefix))
            for suffix in b.suffixes:
                yield _key(group | abi.FILTER_REVERSED, _raw(suffix)[::-1])

    def passes(self, syscall: str, path: str | None) -> bool:
        """The kernel's decision for a non-directory open of raw path `path`."""
        b = self.bounds.get(syscall)
        if b is None or path is None or not plain_absolute(path):
            return True
        return b.matches(path)

    def describe(self) -> str:
        """One line: entries per filtered syscall, and the ones forwarded whole."""
        parts = [f"{n}: {b.size} paths" for n, b in sorted(self.bounds.items())]
        whole = ", ".join(sorted(self.unbounded)) or "none"
        return f"kernel filter: {'; '.join(parts) or 'off'}; open syscalls forwarded whole: {whole}"


def _raw(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _key(group: int, data: bytes) -> record.PathKey:
    data = data[:abi.KEY_PATH]
    k = record.PathKey()
    k.prefixlen = 8 * (1 + len(data))
    k.group = group
    k.path = data
    return k


def plain_absolute(path: str) -> bool:
    """Whether the kernel compares this raw path (see probe.bpf.c `passes_filter`)."""
    raw = path.encode("utf-8", "surrogateescape")
    return (raw[:1] == b"/" and not any(bad.encode() in raw for bad in _NOT_PLAIN)
            and not raw.endswith(b"/") and len(raw) < abi.KEY_PATH)


def _fit(b: PathBound) -> PathBound:
    """Entries the trie can hold: an exact path too long for a key becomes a prefix."""
    limit = abi.KEY_PATH - 1
    exact = frozenset(p for p in b.exact if len(_raw(p)) <= limit)
    long_ones = frozenset(p[:limit] for p in b.exact - exact)
    return PathBound(exact, b.prefixes | long_ones, b.suffixes)


def derive(ruleset: Ruleset, forwarded: Iterable[str]) -> KernelFilter:
    """The filter for the enabled syscall rules of `ruleset`, given the forwarded
    syscall names (only open-family ones among them get a filter)."""
    opens = sorted(OPEN_FAMILY & set(forwarded))
    per_type: dict[str, Bound] = {t: EMPTY for t in opens}
    fd_bound: Bound = EMPTY   # what rules on other fd-reading syscalls need of opens
    for rule in ruleset.enabled:
        if rule.source != "syscall":
            continue
        cond = rule.condition
        for t in opens:
            if rule.evttypes.contains(t) and per_type[t] is not None:
                per_type[t] = _union(per_type[t], bound(cond, t, OPEN_PATH_FIELDS))
        if fd_bound is None:
            continue
        reads_fd = _uses_fd_fields(cond) or any(
            tok.info.name.startswith("fd.") for tok in rule.output.tokens)
        if not reads_fd:
            # The close of a descriptor whose open stayed in the kernel stays there too: a
            # rule on close that can match whatever the descriptor was must see them all.
            if rule.evttypes.contains("close") and bound(cond, "close", FD_PATH_FIELDS) != EMPTY:
                fd_bound = None
            continue
        for t in sorted(FD_FROM_TABLE):
            if not rule.evttypes.contains(t):
                continue
            fd_bound = _union(fd_bound, bound(cond, t, FD_PATH_FIELDS))
    bounds: dict[str, PathBound] = {}
    for t in opens:
        b = _union(per_type[t], fd_bound)
        if b is not None:
            bounds[t] = _fit(b)
    filt = KernelFilter(bounds, frozenset(t for t in opens if t not in bounds))
    if len(filt.groups()) > MAX_GROUPS or sum(b.size for b in filt.groups()) > abi.MAX_PATHS:
        return KernelFilter(unbounded=frozenset(opens))
    return filt

