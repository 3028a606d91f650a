"""`append_output`: text and fields added to rule outputs, as Falco's falco.yaml sets it.

Source of truth: falco.yaml `append_output` (Falco 0.44), userspace/falco/configuration.h
(the YAML decoding), userspace/falco/app/actions/init_falco_engine.cpp (suggested output)
and userspace/engine/rule_loader_compiler.cpp / formats.cpp (how entries apply):

- an entry applies to a rule when every `match` key given holds: `source` equals the
  rule's source, `tags` are all among the rule's tags, `rule` equals its name;
- `extra_output` is appended to the rule's output as `output + " " + extra_output`, so
  its fields print in the text and land in `output_fields` like any output field;
- `suggested_output: true` appends, for each field its source suggests, in the source's
  field order, one more `" <name with _ for .>=%<name>"` (for the syscall source: the
  container plugin's container and k8s fields, `SUGGESTED_FIELDS`); a missing value
  prints `<NA>` in the text and is null in `output_fields`;
- `extra_fields` only add keys to `output_fields` (never to the text): a bare field
  name gives that field's typed value under its own name; `{key: format}` gives the
  format's text (missing values as `<NA>`) under `key`. A later entry's key replaces an
  earlier one's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Fields a source suggests for outputs, in order: the container plugin's
#: `addOutput` fields (Falco 0.44 ships the container plugin for the syscall source).
SUGGESTED_FIELDS: dict[str, tuple[str, ...]] = {
    "syscall": ("container.id", "container.name", "container.image.repository",
                "container.image.tag", "k8s.pod.name", "k8s.ns.name"),
}


@dataclass(frozen=True)
class ExtraField:
    """One `extra_fields` entry: `raw` for a bare field name (`format` is `%<key>`)."""

    key: str
    format: str
    raw: bool


@dataclass(frozen=True)
class AppendOutput:
    """One `append_output` entry; empty match values match every rule."""

    source: str = ""
    tags: frozenset[str] = frozenset()
    rule: str = ""
    extra_output: str = ""
    extra_fields: tuple[ExtraField, ...] = ()
    suggested_output: bool = False

    def matches(self, rule: str, source: str, tags: Iterable[str]) -> bool:
        """Whether the entry applies to a rule of this name, source and tags."""
        return ((not self.source or self.source == source)
                and self.tags <= set(tags)
                and (not self.rule or self.rule == rule))

    def formats(self, source: str) -> list[str]:
        """The texts appended (each after a blank) to a matching rule's output."""
        out = [self.extra_output] if self.extra_output else []
        if self.suggested_output:
            out += [suggested_format(name) for name in SUGGESTED_FIELDS.get(source, ())]
        return out


def suggested_format(field: str) -> str:
    """`container.id` -> `container_id=%container.id`."""
    return f"{field.replace('.', '_')}=%{field}"


class AppendOutputError(ValueError):
    """An `append_output` setting that does not decode; the message names the entry."""


def _string(value: object, where: str) -> str:
    """A YAML scalar as Falco reads it (`as<std::string>`): any scalar's text."""
    if isinstance(value, (dict, list)) or value is None:
        raise AppendOutputError(f"{where} must be a string")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _extra_fields(raw: object, where: str) -> tuple[ExtraField, ...]:
    """`extra_fields`: field names and one-key `{key: format}` maps; a key given twice
    is an error, as in Falco."""
    if not isinstance(raw, list):
        raise AppendOutputError(f"{where}.extra_fields must be a sequence")
    out: list[ExtraField] = []
    for i, item in enumerate(raw):
        at = f"{where}.extra_fields[{i}]"
        if isinstance(item, dict) and len(item) == 1:
            ((key, fmt),) = item.items()
            field = ExtraField(_string(key, at), _string(fmt, at), raw=False)
        elif isinstance(item, dict) or isinstance(item, list) or item is None:
            raise AppendOutputError(f"{at} must be a field name or a one-key mapping")
        else:
            name = _string(item, at)
            field = ExtraField(name, f"%{name}", raw=True)
        if any(f.key == field.key for f in out):
            raise AppendOutputError(f"{at}: key '{field.key}' is defined twice")
        out.append(field)
    return tuple(out)


def parse_append_output(raw: object) -> tuple[AppendOutput, ...]:
    """The entries of falco.yaml's `append_output` (a list of mappings); raises
    AppendOutputError naming the bad entry (`append_output[i].key`)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise AppendOutputError("append_output must be a sequence of mappings")
    entries: list[AppendOutput] = []
    for i, item in enumerate(raw):
        where = f"append_output[{i}]"
        if not isinstance(item, dict):
            raise AppendOutputError(f"{where} must be a mapping")
        unknown = set(item) - {"match", "extra_output", "extra_fields", "suggested_output"}
        if unknown:
            raise AppendOutputError(f"{where}: unknown keys {sorted(map(str, unknown))}")
        match = item.get("match") or {}
        if not isinstance(match, dict) or set(match) - {"source", "tags", "rule"}:
            raise AppendOutputError(f"{where}.match must map source, tags and/or rule")
        tags = match.get("tags") or []
        if not isinstance(tags, list):
            raise AppendOutputError(f"{where}.match.tags must be a sequence")
        suggested = item.get("suggested_output", False)
        if not isinstance(suggested, bool):
            raise AppendOutputError(f"{where}.suggested_output must be true or false")
        entries.append(AppendOutput(
            source=_string(match["source"], f"{where}.match.source") if "source" in match
            else "",
            tags=frozenset(_string(t, f"{where}.match.tags") for t in tags),
            rule=_string(match["rule"], f"{where}.match.rule") if "rule" in match else "",
            extra_output=_string(item["extra_output"], f"{where}.extra_output")
            if "extra_output" in item else "",
            extra_fields=_extra_fields(item["extra_fields"], where)
            if "extra_fields" in item else (),
            suggested_output=suggested,
        ))
    return tuple(entries)


#: What Falco's shipped falco.yaml sets (`append_output: [{suggested_output: true}]`): the
#: default of `falconer sensor` and of a FalcoInstance's `spec.appendOutput`.
FALCO_DEFAULT: tuple[AppendOutput, ...] = (AppendOutput(suggested_output=True),)
