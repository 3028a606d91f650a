"""fd.sip.name / fd.cip.name / fd.lip.name / fd.rip.name (issues 8 and 11).

Which names the loaded rules compare these fields with (read from the expanded
conditions), the host resolver's answer for `localhost` (getaddrinfo through
/etc/hosts: no network), failure accounting, several names on one address as the
engine compares them, and the real sensor alerting on `fd.sip.name=localhost`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import upstream

from falconer.engine import Engine, EngineOptions, RulesSource
from falconer.engine.events import MappingEvent
from falconer.sensor import names
from falconer.sensor.names import AddressNames, NameResolver, host_names, invert, rule_names

RULES = """
- list: api_names
  items: [kubernetes.default.svc.cluster.local, kubernetes.default]
- macro: to_api
  condition: fd.sip.name in (api_names) or fd.rip.name = "api.example"
- rule: Names through macros and lists
  desc: t
  condition: evt.type = connect and (to_api or fd.cip.name pmatch (/x, cache.local))
  output: "%fd.sip.name"
  priority: WARNING
- rule: Other operators
  desc: t
  condition: >
    evt.type = connect and fd.lip.name startswith db. and fd.sip.name != mirror.local
    and fd.rip.name glob "*.evil" and fd.rip.name contains bad and fd.name = not.a.name
    and fd.sip.name = anyof (any1.local, any2.local)
  output: "%fd.sip.name"
  priority: WARNING
- rule: Disabled
  desc: t
  condition: evt.type = connect and fd.sip.name = disabled.local
  output: "%fd.sip.name"
  priority: WARNING
  enabled: false
"""


def _ruleset(text: str):
    engine = Engine(EngineOptions(rule_matching="all"))
    result = engine.load([RulesSource("names.yaml", text)])
    assert not result.errors, result.errors
    return engine.ruleset


def test_names_come_from_the_enabled_rules_expanded_conditions() -> None:
    assert rule_names(_ruleset(RULES)) == {
        "kubernetes.default.svc.cluster.local", "kubernetes.default", "api.example",
        "/x", "cache.local", "db.", "mirror.local", "any1.local", "any2.local"}
    assert rule_names(None) == frozenset()


def test_the_stable_api_server_rule_asks_for_the_service_name() -> None:
    (stable,) = [p for p in upstream.upstream_files() if p.name == "falco_rules.yaml"]
    engine = Engine()
    result = engine.load([RulesSource(stable.name, stable.read_text(encoding="utf-8"))])
    assert not result.errors
    wanted = set()
    for rule in engine.ruleset.rules:   # disabled by default upstream: read every rule
        wanted |= names.condition_names(rule.condition)
    assert "kubernetes.default.svc.cluster.local" in wanted


def test_names_in_the_cluster_zone_are_not_sent_to_the_host_resolver() -> None:
    wanted = {"kubernetes.default.svc.cluster.local", "Web.Shop.svc.Cluster.Local.", "cluster.local",
              "localhost", "notcluster.local", "db.svc.corp.example"}
    assert host_names(wanted, "cluster.local") == {"localhost", "notcluster.local", "db.svc.corp.example"}
    assert host_names(wanted, "corp.example") == wanted - {"db.svc.corp.example"}


def test_localhost_resolves_through_the_host_resolver() -> None:
    expected = {a[4][0] for a in socket.getaddrinfo("localhost", None)}
    assert "127.0.0.1" in names.getaddrinfo_addresses("localhost")
    assert set(names.getaddrinfo_addresses("localhost")) == expected
    resolver = NameResolver()
    resolver.want({"localhost"})
    resolver.start()
    try:
        assert resolver.wait_round(0, 10.0)
    finally:
        resolver.stop()
    assert resolver.stats.lookups == 1 and resolver.stats.failures == 0
    assert resolver.addresses["127.0.0.1"] == "localhost"


def test_failures_are_counted_a_missing_name_loses_its_addresses_a_timeout_does_not() -> None:
    answers: dict[str, object] = {"a.test": ["10.0.0.1"], "b.test": ["10.0.0.2"]}

    def resolve(name: str) -> list[str]:
        answer = answers[name]
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)  # type: ignore[call-overload]

    resolver = NameResolver(resolve)
    resolver.want({"a.test", "b.test"})
    resolver.resolve_once()
    assert resolver.addresses == {"10.0.0.1": "a.test", "10.0.0.2": "b.test"}
    answers["a.test"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    answers["b.test"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    resolver.resolve_once()
    assert resolver.addresses == {"10.0.0.2": "b.test"}
    assert (resolver.stats.rounds, resolver.stats.lookups, resolver.stats.failures) == (2, 4, 2)


def test_names_beyond_the_limit_are_counted_not_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "MAX_NAMES", 2)
    asked: list[str] = []
    resolver = NameResolver(lambda n: asked.append(n) or [])
    resolver.want({"a", "b", "c"})
    resolver.resolve_once()
    assert asked == ["a", "b"] and resolver.stats.skipped == 1


class _Services:
    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses


def test_an_address_with_several_names_matches_any_of_them() -> None:
    resolver = NameResolver(lambda n: ["10.96.0.1"])
    resolver.want({"kubernetes.default", "api.local"})
    resolver.resolve_once()
    assert invert({"b": ["1.1.1.1"], "a": ["1.1.1.1", "2.2.2.2"]}) == {
        "1.1.1.1": ["a", "b"], "2.2.2.2": "a"}
    table = AddressNames()
    table.resolver = resolver
    table.services = _Services({"10.96.0.1": "kubernetes.default.svc.cluster.local",
                                "10.96.0.10": "kube-dns.kube-system.svc.cluster.local"})
    value = table.names("10.96.0.1")
    assert value == ["api.local", "kubernetes.default", "kubernetes.default.svc.cluster.local"]
    assert table.names("10.96.0.10") == "kube-dns.kube-system.svc.cluster.local"
    assert table.names("10.0.0.9") is None and table.names(None) is None
    ruleset = _ruleset("""
- rule: API by its Service name
  desc: t
  condition: evt.type = connect and fd.sip.name = kubernetes.default.svc.cluster.local
  output: "%fd.sip.name"
  priority: WARNING
- rule: API by its short name
  desc: t
  condition: evt.type = connect and fd.sip.name in (kubernetes.default)
  output: "%fd.sip.name"
  priority: WARNING
- rule: Never
  desc: t
  condition: evt.type = connect and fd.sip.name = other.local
  output: "%fd.sip.name"
  priority: WARNING
""")
    fired = ruleset.evaluate(MappingEvent({"evt.type": "connect", "fd.sip.name": value}))
    assert sorted(a.rule for a in fired) == ["API by its Service name", "API by its short name"]


# -- the real sensor ----------------------------------------------------------------------

SENSOR_RULES = """
- rule: Connect to localhost by name
  desc: fd.sip.name from the host resolver
  condition: evt.type = connect and fd.sip.name = localhost and proc.cmdline contains fm
  output: "byname %proc.cmdline sip=%fd.sip %fd.sip.name rip=%fd.rip.name"
  priority: WARNING
- rule: Connect to another name
  desc: a name that resolves (without DNS) to another loopback address
  condition: evt.type = connect and fd.sip.name = "127.0.0.2" and proc.cmdline contains fm
  output: "othername %proc.cmdline sip=%fd.sip %fd.sip.name"
  priority: WARNING
"""

CONNECT = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()"


@pytest.fixture(scope="module")
def sensor(start_sensor, tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "rules.yaml"
    path.write_text(SENSOR_RULES, encoding="utf-8")
    return start_sensor("--rules", str(path))


def test_the_sensor_names_the_server_address_of_a_connect(sensor, marker) -> None:
    assert sensor.wait_stderr("fd.*ip.name: 2 names for the host resolver, 0 under cluster.local")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = str(server.getsockname()[1])
        deadline = time.monotonic() + 15.0
        # the first resolution runs beside the probe's start: connect until it is in
        while not sensor.matching(marker) and time.monotonic() < deadline:
            subprocess.run([sys.executable, "-c", CONNECT, port, marker], check=True)
            time.sleep(0.5)
        rules = sensor.rules_for(marker)
    assert rules == {"Connect to localhost by name"}
    (alert,) = sensor.matching(marker)[-1:]
    fields = alert["output_fields"]
    assert fields["fd.sip"] == "127.0.0.1" and fields["fd.sip.name"] == "localhost"
    assert fields["fd.rip.name"] == "localhost"   # a connect: the remote end is the server
    out = sensor.stop()
    assert "address names (fd.*ip.name): 2 names for the host resolver" in out
