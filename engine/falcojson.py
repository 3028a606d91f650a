"""Load results in the JSON shape of `falco -V <files> -o json_output=true`.

Falco prints `{"falco_load_results": [<one result per rules file>]}`, each result being
`{"name", "successful", "errors": [...], "warnings": [...]}` and each diagnostic
`{"context": {"locations": [{"item_type", "item_name", "position": {"name", "line",
"column", "offset"}}], "snippet"}, "code", "codedesc", "message"}` (falco
userspace/engine/rule_loader.cpp result::as_json, context::as_json).

Positions follow Falco's conventions: locations read from YAML nodes carry yaml-cpp's
0-based line and column; a `condition expression` location adds the parser's 1-based
position to the condition's, so it is 1-based (for a condition written on one line)
and named by the condition's first characters. Offsets are 0-based into the file.
The `codedesc` texts are Falconer's own wording of what each code means.
"""

from __future__ import annotations

from collections.abc import Sequence

from falconer.engine.diagnostics import Code, Diagnostic, LoadResult, Location

#: What each code means (Falconer's wording; Falco's `codedesc` serves the same purpose).
CODE_DESCRIPTIONS: dict[Code, str] = {
    Code.LOAD_ERR_FILE_READ: "The rules file could not be read (missing file, permissions, "
                             "not UTF-8).",
    Code.LOAD_ERR_YAML_PARSE: "The rules content is not valid YAML.",
    Code.LOAD_ERR_YAML_VALIDATE: "The YAML is valid but its structure is not that of a rules "
                                 "file: wrong item shape, missing key, value of the wrong type.",
    Code.LOAD_ERR_COMPILE_CONDITION: "A condition could not be compiled into a filter: syntax, "
                                     "unknown field, operator or value not fit for the field.",
    Code.LOAD_ERR_COMPILE_OUTPUT: "A rule output could not be compiled into a format.",
    Code.LOAD_ERR_VALIDATE: "An item is well formed but invalid: undefined macro, version "
                            "mismatch, append to a missing item, inconsistent exception.",
    Code.LOAD_UNKNOWN_SOURCE: "The rule's event source is not known; the rule is skipped.",
    Code.LOAD_UNSAFE_NA_CHECK: "Comparing a field with <NA> does not tell a missing value from "
                               "a present one; use 'exists'.",
    Code.LOAD_NO_EVTTYPE: "The condition does not restrict the event type, so the rule runs on "
                          "almost every event, at a high cost.",
    Code.LOAD_UNKNOWN_FILTER: "A field or event type is unknown; with skip-if-unknown-filter the "
                              "rule is dropped instead of failing the load.",
    Code.LOAD_UNUSED_MACRO: "The macro is not used by any rule or macro.",
    Code.LOAD_UNUSED_LIST: "The list is not used by any rule, macro or list.",
    Code.LOAD_UNKNOWN_ITEM: "A top-level item of an unknown kind; it is ignored.",
    Code.LOAD_DEPRECATED_ITEM: "A deprecated form or field is used.",
    Code.LOAD_APPEND_NO_VALUES: "An exception is appended or overridden without values.",
    Code.LOAD_EXCEPTION_NAME_NOT_UNIQUE: "A rule defines two exceptions with the same name.",
    Code.LOAD_UNKNOWN_PLUGIN: "A required plugin is not provided by Falconer.",
    Code.LOAD_COMPILE_CONDITION: "The condition compiles, but a value looks like a mistake or a "
                                 "check could be written more cheaply.",
    Code.LOAD_UNKNOWN_KEY: "An item has a key that is not part of its kind; it is ignored.",
    Code.LOAD_UNANSWERED_FIELD: "The rule uses a field the event source does not provide: it "
                                "always reads as missing (Falconer's own code).",
}

#: Location types whose position Falco computes from the condition parser (1-based).
_PARSER_TYPES = frozenset({"condition expression"})


def _position(loc: Location) -> dict[str, object]:
    """A location's position in Falco's convention (see the module docstring)."""
    zero_based = loc.item_type not in _PARSER_TYPES and loc.line > 0
    return {
        "name": loc.name,
        "line": loc.line - 1 if zero_based else loc.line,
        "column": loc.column - 1 if zero_based else loc.column,
        "offset": max(loc.offset, 0),
    }


def diagnostic_json(diag: Diagnostic) -> dict[str, object]:
    """One error or warning as Falco's JSON object."""
    locations = diag.locations or (Location("rules content", "", diag.file, 0, 0, 0),)
    return {
        "context": {
            "locations": [{"item_type": loc.item_type, "item_name": loc.item_name,
                           "position": _position(loc)} for loc in locations],
            "snippet": diag.snippet + "\n" if diag.snippet else "<No context available>\n",
        },
        "code": diag.code,
        "codedesc": CODE_DESCRIPTIONS.get(diag.code, ""),
        "message": diag.message,
    }


def file_result(name: str, result: LoadResult) -> dict[str, object]:
    """Falco's result for rules file `name`: the diagnostics of `result` that point into
    it (one without a file belongs to it too), successful when it has no error."""
    def mine(diag: Diagnostic) -> bool:
        return diag.file in (name, "")
    errors = [diagnostic_json(d) for d in result.errors if mine(d)]
    warnings = [diagnostic_json(d) for d in result.warnings if mine(d)]
    return {"name": name, "successful": not errors, "errors": errors, "warnings": warnings}


def load_results(results: Sequence[tuple[str, LoadResult]]) -> dict[str, object]:
    """`{"falco_load_results": [...]}` from each file's name and the result of loading
    the files up to it, as Falco loads them one after the other (so a file's compile
    diagnostics do not depend on the files after it)."""
    return {"falco_load_results": [file_result(name, result) for name, result in results]}
