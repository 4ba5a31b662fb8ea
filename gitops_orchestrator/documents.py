"""YAML documents with the line of every value, so problems can point at a line.

PyYAML's safe loader drops positions, so we compose the node graph ourselves and build plain
Python data from it, recording `path -> line` on the way. Building it here also lets us refuse
what the safe loader would accept silently: duplicate keys, and alias expansion past a budget
(a "billion laughs" file is a problem, not an outage). Nothing here knows the repository format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]
# Plain data only: a tag such as !!binary, !!set or !!python/... is refused, not interpreted.
ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map", "merge")
)


class DocumentError(ValueError):
    """The text is not one well-formed YAML document; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Document:
    data: Any
    lines: Mapping[Path, int]

    def line_of(self, path: Path) -> int | None:
        """The line of the value at `path`, or of its closest parent that exists."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def parse(text: bytes, *, max_nodes: int) -> Document:
    """Parse one YAML document; raise DocumentError with a line when it is malformed."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text[: exc.start].count(b"\n") + 1
        raise DocumentError("is not valid UTF-8", line) from exc
    loader = yaml.SafeLoader(decoded)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(data=None, lines={})
        builder = _Builder(loader, max_nodes)
        data = builder.build(root, ())
        return Document(data=data, lines=builder.lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        # At the end of the text PyYAML points one line past the last one.
        where = min(mark.line + 1, max(decoded.count("\n"), 1)) if mark else None
        raise DocumentError(f"is not valid YAML: {problem}", where) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(f"is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise DocumentError("is nested too deeply") from exc
    finally:
        loader.dispose()


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, max_nodes: int) -> None:
        self.loader = loader
        self.budget = max_nodes
        self.lines: dict[Path, int] = {}
        self.own_keys: dict[int, set[int]] = {}

    def build(self, node: Node, path: Path) -> Any:
        self.budget -= 1
        line = node.start_mark.line + 1
        if self.budget < 0:
            raise DocumentError("expands to too many values (aliases repeated too often?)", line)
        if node.tag not in ALLOWED_TAGS:
            raise DocumentError(f"uses the tag {node.tag!r}, which is not allowed here", line)
        self.lines.setdefault(path, line)
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        raise DocumentError("holds an unsupported YAML node", line)

    def _mapping(self, node: MappingNode, path: Path) -> dict[Any, Any]:
        # flatten_mapping rewrites the node in place, and an alias may bring the same node back:
        # remember which keys the node itself wrote the first time it is seen.
        own_keys = self.own_keys.setdefault(id(node), {id(key) for key, _ in node.value})
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor`; merged pairs come first
        result: dict[Any, Any] = {}
        seen_own: set[Any] = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = (
                self.loader.construct_object(key_node, deep=True)
                if isinstance(key_node, ScalarNode)
                else None
            )
            if not isinstance(key, str | int | float | bool):
                raise DocumentError("has a key that is not a plain value", line)
            if id(key_node) in own_keys:
                if key in seen_own:
                    raise DocumentError(f"repeats the key {key!r}", line)
                seen_own.add(key)
            child = key if isinstance(key, str) else str(key)
            self.lines[(*path, child)] = line  # a problem with a value points at its key
            result[key] = self.build(value_node, (*path, child))
        return result
