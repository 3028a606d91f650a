"""`pmatch`: does a path lie under one of a set of directories? (libsinsp semantics)

Paths are compared component by component (empty components ignored, so `/usr//bin/`
is `/usr/bin`): a filter path matches itself and everything below it, never its own
parents. A component containing `?`, `*` or `[` is a glob for that one component
(`/home/*/.ssh`). `/` matches every path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from falconer.engine.fnglob import glob_regex
from falconer.engine.posixregex import Pattern

_GLOB_CHARS = re.compile(r"[?*\[]")


def _components(path: str) -> list[str]:
    """The non-empty components (`/usr//bin/` is `usr`, `bin`)."""
    return [c for c in path.split("/") if c]


class _Node:
    """One directory level: literal children, glob children, and whether a filter
    path ends here (then everything below matches)."""

    __slots__ = ("children", "globs", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.globs: list[tuple[str, Pattern, _Node]] = []
        self.terminal = False

    def child(self, comp: str) -> _Node:
        """The node for one filter component, shared by paths that share it."""
        if _GLOB_CHARS.search(comp):
            for known, _, node in self.globs:
                if known == comp:
                    return node
            node = _Node()
            self.globs.append((comp, glob_regex(comp), node))
            return node
        return self.children.setdefault(comp, _Node())


class PathPrefixes:
    """A compiled `pmatch` list."""

    def __init__(self, paths: Iterable[str]) -> None:
        self._root = _Node()
        for path in paths:
            node = self._root
            for comp in _components(path):
                node = node.child(comp)
            node.terminal = True

    def match(self, path: str) -> bool:
        """Whether `path` equals or lies below one of the filter paths."""
        return _match(self._root, _components(path), 0)


def _match(node: _Node, comps: list[str], i: int) -> bool:
    """Whether `comps[i:]` reaches a terminal node from `node` (globs may branch)."""
    if node.terminal:
        return True
    if i == len(comps):
        return False
    nxt = node.children.get(comps[i])
    if nxt is not None and _match(nxt, comps, i + 1):
        return True
    return any(rx.fullmatch(comps[i]) is not None and _match(sub, comps, i + 1)
               for _, rx, sub in node.globs)
