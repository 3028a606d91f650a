"""Host names of socket addresses: Falco's `fd.sip.name`, `fd.cip.name`, `fd.lip.name`
and `fd.rip.name`.

As in libsinsp's DNS manager (`dns_manager.cpp`), a name is known only if a loaded rule
compares one of these fields with it: `rule_names(ruleset)` walks the enabled rules'
expanded conditions (`CompiledRule.condition`) for the values of `=`, `!=`, `in`,
`intersects`, `pmatch`, `startswith` (and their `anyof`/`allof`/`oneof` forms);
`NameResolver` resolves them with the host resolver (`getaddrinfo`) in a background
thread, again every REFRESH_S (libsinsp's base refresh period), and publishes an
address -> names map. Names in the cluster's DNS zone (`*.<cluster domain>`) are not
sent to the host resolver (`host_names`): a node's resolver does not serve that zone,
and a hostNetwork sensor may not use the cluster's DNS; the Service watch answers them.
`AddressNames` is what the event fields read: the resolver's map
plus the Service ClusterIPs (`sensor/servicenames.py`), so that
`kubernetes.default.svc.cluster.local` is answered without the cluster's DNS.

An address may carry several names; a field then returns them all as a list, and the
engine's string checks hold when any element matches (`engine/checks.py`).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from falconer.engine import ast
from falconer.engine.ruleset import Ruleset

#: The fields answered from an address's names.
NAME_FIELDS = frozenset({"fd.sip.name", "fd.cip.name", "fd.lip.name", "fd.rip.name"})
#: Operators whose values are names (a glob or regex is no name to resolve).
NAME_OPS = frozenset({"=", "==", "!=", "in", "intersects", "pmatch", "startswith"})
#: Seconds between two resolutions of the names (libsinsp: base refresh timeout, 10 s).
REFRESH_S = 10.0
#: At most this many names are resolved; the others are counted in `skipped`.
MAX_NAMES = 256

#: An address's names: one name, or several (any of them matches a comparison).
Names = str | list[str]
#: `socket.getaddrinfo`'s shape, replaceable for tests of failure accounting.
Resolve = Callable[[str], list[str]]


def _values(right: ast.Expr) -> list[str]:
    if isinstance(right, ast.Value):
        return [right.text]
    if isinstance(right, ast.ListValue):
        return [v.text for v in right.values]
    return []


def _walk(node: ast.Expr, out: set[str]) -> None:
    if isinstance(node, ast.BOOLEAN):
        for child in ast.operands(node):
            _walk(child, out)
    elif (isinstance(node, ast.BinaryCheck) and isinstance(node.left, ast.Field)
          and node.left.name in NAME_FIELDS and node.op.split(" ")[0] in NAME_OPS):
        out.update(v for v in _values(node.right) if v)


def condition_names(condition: ast.Expr) -> set[str]:
    """The names one expanded condition compares the NAME_FIELDS with."""
    out: set[str] = set()
    _walk(condition, out)
    return out


def rule_names(ruleset: Ruleset | None) -> frozenset[str]:
    """The names the enabled rules of `ruleset` compare the NAME_FIELDS with."""
    out: set[str] = set()
    for rule in ruleset.enabled if ruleset is not None else ():
        out |= condition_names(rule.condition)
    return frozenset(out)


def host_names(names: Iterable[str], cluster_domain: str) -> frozenset[str]:
    """The names to ask the host resolver: those outside the cluster's DNS zone
    (`<cluster_domain>` and below, e.g. `kubernetes.default.svc.cluster.local`)."""
    zone = cluster_domain.lower().rstrip(".")
    return frozenset(n for n in names if not _in_zone(n.lower().rstrip("."), zone))


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def getaddrinfo_addresses(name: str) -> list[str]:
    """The addresses the host resolver gives `name` (IPv4 and IPv6, canonical text as
    `inet_ntop` writes it, scope ids dropped); raises socket.gaierror."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        if addr not in out:
            out.append(addr)
    return out


@dataclass
class ResolverStats:
    """What the resolver did (for the sensor's summary)."""

    rounds: int = 0        # passes over every name
    lookups: int = 0       # getaddrinfo calls
    failures: int = 0      # calls that raised (no such name, resolver unreachable, ...)
    skipped: int = 0       # names beyond MAX_NAMES, per round


def invert(by_name: Mapping[str, Iterable[str]]) -> dict[str, Names]:
    """name -> addresses turned into address -> names (names in sorted order)."""
    acc: dict[str, list[str]] = {}
    for name in sorted(by_name):
        for addr in by_name[name]:
            acc.setdefault(addr, []).append(name)
    return {a: ns[0] if len(ns) == 1 else ns for a, ns in acc.items()}


class NameResolver:
    """Resolves the wanted names in a daemon thread; `addresses` is the latest
    address -> names map (replaced whole, so readers need no lock).

    `want(names)` sets the names (the runner calls it at each rules load) and wakes the
    thread. A name that does not exist (EAI_NONAME) loses its addresses; any other
    failure (EAI_AGAIN: the resolver did not answer) keeps the last answer. Every
    failure is counted in `stats.failures`.
    """

    def __init__(self, resolve: Resolve = getaddrinfo_addresses,
                 refresh_s: float = REFRESH_S) -> None:
        self.stats = ResolverStats()
        self.addresses: dict[str, Names] = {}
        self.refresh_s = refresh_s
        self._resolve = resolve
        self._wanted: frozenset[str] = frozenset()
        self._by_name: dict[str, list[str]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._resolved = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def wanted(self) -> frozenset[str]:
        """The names being resolved."""
        return self._wanted

    def want(self, names: Iterable[str]) -> None:
        """Resolve exactly `names` from now on (sorted; the first MAX_NAMES)."""
        self._wanted = frozenset(names)
        self._wake.set()

    def start(self) -> None:
        """Start the resolving thread."""
        self._thread = threading.Thread(target=self.run, name="falconer-names", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (a getaddrinfo under way finishes first)."""
        self._stop.set()
        self._wake.set()

    def wait_round(self, after: int, timeout_s: float) -> bool:
        """Whether a round numbered above `after` completed within the timeout."""
        with self._resolved:
            return self._resolved.wait_for(lambda: self.stats.rounds > after, timeout_s)

    def run(self) -> None:
        """Resolve, then sleep REFRESH_S or until `want` changes the names."""
        while not self._stop.is_set():
            self._wake.clear()
            self.resolve_once()
            self._wake.wait(self.refresh_s)

    def resolve_once(self) -> None:
        """One pass over the wanted names; publishes the new map."""
        names = sorted(self._wanted)
        self.stats.skipped += max(0, len(names) - MAX_NAMES)
        by_name: dict[str, list[str]] = {}
        for name in names[:MAX_NAMES]:
            if self._stop.is_set():
                return
            self.stats.lookups += 1
            try:
                by_name[name] = self._resolve(name)
            except (OSError, UnicodeError, ValueError) as exc:
                self.stats.failures += 1
                if not _no_such_name(exc) and name in self._by_name:
                    by_name[name] = self._by_name[name]
        self._by_name = by_name
        self.addresses = invert(by_name)
        with self._resolved:
            self.stats.rounds += 1
            self._resolved.notify_all()


def _no_such_name(exc: BaseException) -> bool:
    return isinstance(exc, socket.gaierror) and exc.errno in (socket.EAI_NONAME,
                                                              getattr(socket, "EAI_NODATA", None))


class ServiceSource(Protocol):
    """Where Service names come from (`servicenames.ServiceNames`)."""

    @property
    def addresses(self) -> Mapping[str, str]:
        """ClusterIP -> `<name>.<namespace>.svc.<domain>` (replaced whole on change)."""
        ...


class AddressNames:
    """address -> names for the event fields: the resolver's names, then the Service
    name, duplicates dropped. Both sources are optional."""

    def __init__(self) -> None:
        self.resolver: NameResolver | None = None
        self.services: ServiceSource | None = None

    def names(self, addr: str | None) -> Names | None:
        """The names of `addr` (text as the fd table keeps it); None when it has none."""
        if addr is None:
            return None
        resolved = self.resolver.addresses.get(addr) if self.resolver is not None else None
        service = self.services.addresses.get(addr) if self.services is not None else None
        if service is None:
            return resolved
        if resolved is None:
            return service
        out = [resolved] if isinstance(resolved, str) else list(resolved)
        return out if service in out else [*out, service]
