"""The engine: load rules files as one set, keep the last good ruleset, evaluate.

A load runs the three stages (read, collect, compile) over all files in order. If
any error is found the previous ruleset stays in place, so a sensor or the operator
never drops to "no rules" because of a bad edit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from falconer.engine.appendoutput import AppendOutput
from falconer.engine.collector import Collector
from falconer.engine.compiler import Compiled, Compiler
from falconer.engine.diagnostics import Code, ItemRef, LoadError, LoadResult, Position, Reporter
from falconer.engine.reader import SourceFile, read_items
from falconer.engine.ruleset import Ruleset, Selection
from falconer.engine.scope import (
    CLUSTER, DEFAULT_TENANT_MAX_PRIORITY, TenantCollector, check_max_priority, check_namespace,
    compile_tenant,
)


@dataclass(frozen=True)
class EngineOptions:
    """How the loaded rules are compiled, selected and matched.

    - `answered_fields`: base names of the fields the event source answers (e.g.
      `proc.aname` for `proc.aname[2]`, `evt.arg` for `evt.arg.flags`); a rule using
      another known field loads with a `LOAD_UNANSWERED_FIELD` warning at the field.
      None: no check.
    - `append_output`: falco.yaml's `append_output` entries (see
      `falconer.engine.appendoutput.parse_append_output`), applied to every rule.
    - `tenant_max_priority`: the highest priority a tenant's rule may have (see
      falconer.engine.scope).
    """

    min_priority: str = "debug"
    rule_matching: str = "first"
    selection: Selection = field(default_factory=tuple)
    answered_fields: frozenset[str] | None = None
    append_output: tuple[AppendOutput, ...] = ()
    tenant_max_priority: str = DEFAULT_TENANT_MAX_PRIORITY


@dataclass(frozen=True)
class RulesSource:
    """A rules file given by name and text (e.g. from a ConfigMap or a CR); `namespace`
    names the tenant whose scope it belongs to ("": the cluster's, see
    falconer.engine.scope)."""

    name: str
    text: str
    namespace: str = CLUSTER


class Engine:
    """Loads rules and holds the current Ruleset."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        Ruleset([], self.options.min_priority, self.options.rule_matching,
                self.options.selection)  # validate the options now, not at first load
        check_max_priority(self.options.tenant_max_priority)
        self.ruleset: Ruleset | None = None

    @staticmethod
    def _read(source: SourceFile, collector: Collector, reporter: Reporter) -> None:
        """Read and collect one file's items; as in Falco (rule_loader_reader.cpp read),
        the first error ends the file: its later items are not read."""
        for item in read_items(source):
            if isinstance(item, LoadError):
                reporter.current = None
                reporter.add_error(item)
                return
            reporter.note_item(ItemRef(item.kind, item.label, item.position, item.index))
            try:
                collector.collect(item)
            except LoadError as err:
                reporter.add_error(err)
                return

    def load(self, sources: Iterable[RulesSource | Path | str]) -> LoadResult:
        """Load files in order as one set: the cluster's files first, then each tenant's
        (falconer.engine.scope); on error keep the previous ruleset."""
        files: list[SourceFile] = []
        tenants: dict[str, list[SourceFile]] = {}
        read_errors: list[LoadError] = []
        for src in sources:
            if isinstance(src, RulesSource):
                scope = tenants.setdefault(check_namespace(src.namespace), []) \
                    if src.namespace != CLUSTER else files
                scope.append(SourceFile(src.name, src.text))
                continue
            path = Path(src)
            try:
                files.append(SourceFile(str(path), path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                read_errors.append(LoadError(Code.LOAD_ERR_FILE_READ,
                                             f"Could not read file: {exc}",
                                             Position(str(path), 1, 1)))
        reporter = Reporter({f.name: f.text for f in files} |
                            {f.name: f.text for fs in tenants.values() for f in fs})
        for err in read_errors:
            reporter.add_error(err)
        collector = Collector(reporter)
        for source in files:
            self._read(source, collector, reporter)
        reporter.current = None
        result = reporter.result
        if result.errors:
            result.counts = {"rules": len(collector.rules), "macros": len(collector.macros),
                             "lists": len(collector.lists)}
            return result
        compiler = Compiler(collector, reporter, self.options.answered_fields,
                            self.options.append_output)
        parts = [compiler.run()]
        if not result.errors:
            parts += [self._load_tenant(compiler, collector, namespace, tenant_files, reporter)
                      for namespace, tenant_files in tenants.items()]
        result.counts = {"rules": sum(len(p.rules) for p in parts),
                         "macros": sum(p.macros for p in parts),
                         "lists": sum(p.lists for p in parts)}
        if not result.errors:
            self.ruleset = Ruleset([r for p in parts for r in p.rules],
                                   self.options.min_priority, self.options.rule_matching,
                                   self.options.selection)
        return result

    def _load_tenant(self, cluster: Compiler, collector: Collector, namespace: str,
                     files: list[SourceFile], reporter: Reporter) -> Compiled:
        """Collect and compile one tenant's files on the compiled cluster scope; a tenant
        with errors compiles nothing (the others are still checked and reported)."""
        reporter.new_scope()
        tenant = TenantCollector(collector, namespace, self.options.tenant_max_priority)
        errors = len(reporter.result.errors)
        for source in files:
            self._read(source, tenant, reporter)
        reporter.current = None
        if len(reporter.result.errors) > errors:
            return Compiled([], 0, 0)
        return compile_tenant(cluster, tenant)
