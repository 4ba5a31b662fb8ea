"""`documents.parse`: YAML with the line of every value, and what it refuses."""

from __future__ import annotations

import time

import pytest

from gitops_orchestrator import documents

NODES = 100_000


def parse(text: str | bytes, max_nodes: int = NODES) -> documents.Document:
    return documents.parse(text.encode() if isinstance(text, str) else text, max_nodes=max_nodes)


def refused(text: str | bytes, max_nodes: int = NODES) -> documents.DocumentError:
    with pytest.raises(documents.DocumentError) as caught:
        parse(text, max_nodes)
    return caught.value


NESTED = """\
# a comment first
name: demo
functions:
  run:
    params: [integer, integer]
    mounts:
      - path: a.bin
        stage: deployment

      - {path: b.bin, stage: output}
labels:
  zone: north
"""


def test_data_is_plain_python() -> None:
    doc = parse(NESTED)
    assert doc.data == {
        "name": "demo",
        "functions": {
            "run": {
                "params": ["integer", "integer"],
                "mounts": [
                    {"path": "a.bin", "stage": "deployment"},
                    {"path": "b.bin", "stage": "output"},
                ],
            }
        },
        "labels": {"zone": "north"},
    }


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 2),
        (("name",), 2),
        (("functions",), 3),
        (("functions", "run"), 4),
        (("functions", "run", "params"), 5),
        (("functions", "run", "params", 0), 5),
        (("functions", "run", "params", 1), 5),
        (("functions", "run", "mounts"), 6),
        (("functions", "run", "mounts", 0), 7),
        (("functions", "run", "mounts", 0, "stage"), 8),
        (("functions", "run", "mounts", 1), 10),
        (("functions", "run", "mounts", 1, "path"), 10),
        (("labels", "zone"), 12),
    ],
)
def test_line_numbers(path: documents.Path, line: int) -> None:
    assert parse(NESTED).lines[path] == line
    assert parse(NESTED).line_of(path) == line


def test_line_of_a_missing_value_is_its_closest_parent() -> None:
    doc = parse(NESTED)
    assert doc.line_of(("functions", "run", "output")) == 4
    assert doc.line_of(("functions", "run", "mounts", 1, "media_type")) == 10
    assert doc.line_of(("nowhere", "at", "all")) == 2


def test_empty_document() -> None:
    assert parse("").data is None
    assert parse("# only a comment\n").data is None
    assert parse("").line_of(("name",)) is None


def test_a_list_document() -> None:
    doc = parse("- a\n- b\n")
    assert doc.data == ["a", "b"]
    assert doc.line_of((1,)) == 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: a\nwasm: x\nname: b\n", 3, "repeats the key 'name'"),
        ("top:\n  inner:\n    a: 1\n    b: 2\n    a: 3\n", 5, "repeats the key 'a'"),
        ("items:\n  - {x: 1, x: 2}\n", 2, "repeats the key 'x'"),
        ("1: a\n2: b\n1: c\n", 3, "repeats the key 1"),
    ],
    ids=["top-level", "nested", "flow-in-list", "integer-key"],
)
def test_duplicate_keys(text: str, line: int, message: str) -> None:
    error = refused(text)
    assert (error.line, error.message) == (line, message)


def test_merge_key_with_override() -> None:
    text = """\
base: &base
  method: get
  output: integer
f:
  <<: *base
  output: image/png
g:
  <<: *base
"""
    doc = parse(text)
    assert doc.data["f"] == {"method": "get", "output": "image/png"}
    assert doc.data["g"] == {"method": "get", "output": "integer"}
    assert doc.line_of(("f", "output")) == 6
    assert doc.line_of(("g",)) == 7


def test_merge_key_does_not_allow_repeating_an_own_key() -> None:
    error = refused("base: &b {a: 1}\nx:\n  <<: *b\n  c: 2\n  c: 3\n")
    assert (error.line, error.message) == (5, "repeats the key 'c'")


def test_merge_key_in_an_aliased_mapping() -> None:
    doc = parse("base: &base {a: 1}\nx: &x\n  <<: *base\n  a: 2\ny: *x\n")
    assert doc.data == {"base": {"a": 1}, "x": {"a": 2}, "y": {"a": 2}}


def test_aliases_within_budget() -> None:
    doc = parse("a: &a [1, 2]\nb: *a\nc: *a\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def billion_laughs(levels: int = 9) -> str:
    lines = ["lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.perf_counter()
    error = refused(billion_laughs())
    assert time.perf_counter() - started < 2
    assert error.message == "expands to too many values (aliases repeated too often?)"
    assert error.line == 1  # the anchored list whose copies ran over the budget


def test_node_budget_is_exact() -> None:
    text = "a: [1, 2, 3]\n"  # root mapping, the list and its three items
    assert parse(text, max_nodes=5).data == {"a": [1, 2, 3]}
    assert refused(text, max_nodes=4).line == 1


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\xff: 1\n", 1),
        (b"name: ok\nother: caf\xe9\n", 2),
        (b"a: 1\nb: 2\n\n# \xc3\x28 broken\n", 4),
    ],
)
def test_invalid_utf8(data: bytes, line: int) -> None:
    error = refused(data)
    assert (error.line, error.message) == (line, "is not valid UTF-8")


def test_valid_utf8_is_kept() -> None:
    assert parse("greeting: héllo wörld ✓\n".encode()).data == {"greeting": "héllo wörld ✓"}


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/name:os.system ''\n",
        "x: !!python/object/new:os.system ''\n",
        "x: !!python/str hi\n",
        "x: !custom value\n",
    ],
    ids=["python-name", "python-object-new", "python-str", "local-tag"],
)
def test_tags_on_scalars_are_refused(text: str) -> None:
    error = refused(text)
    assert error.line == 1
    assert error.message.startswith("uses the tag ")
    assert error.message.endswith("which is not allowed here")


@pytest.mark.parametrize(
    "text",
    ["x: !!python/object/apply:os.system [ls]\n", "x: !!python/object:os.system {a: 1}\n"],
    ids=["python-apply-sequence", "python-object-mapping"],
)
def test_python_tags_on_collections_are_refused(text: str) -> None:
    error = refused(text)
    assert error.line == 1


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: [1, 2\n", 1, "is not valid YAML: expected ',' or ']'"),
        ("a: 1\n  b: 2\n", 2, "is not valid YAML: mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", 2, "is not valid YAML: but found another document"),
        ("a: *missing\n", 1, "is not valid YAML: found undefined alias 'missing'"),
        ("? [a, b]\n: c\n", 1, "has a key that is not a plain value"),
        ("a: b\n\tc: d\n", 2, "found character '\\t' that cannot start any token"),
    ],
    ids=["unclosed-flow", "bad-indent", "two-documents", "undefined-alias", "list-key", "tab"],
)
def test_malformed(text: str, line: int, fragment: str) -> None:
    error = refused(text)
    assert error.line == line
    assert fragment in error.message


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, "{a: " * 100_000 + "1" + "}" * 100_000],
    ids=["sequences", "mappings"],
)
def test_deep_nesting_is_a_document_error(text: str) -> None:
    error = refused(text)
    assert error.message == "is nested too deeply"


def test_deep_block_nesting_is_a_document_error() -> None:
    text = "".join("  " * depth + "a:\n" for depth in range(5000)) + "  " * 5000 + "b\n"
    assert refused(text).message == "is nested too deeply"


def test_moderate_nesting_is_fine() -> None:
    depth = 100
    doc = parse("[" * depth + "1" + "]" * depth)
    value = doc.data
    for _ in range(depth):
        assert isinstance(value, list)
        value = value[0]
    assert value == 1
