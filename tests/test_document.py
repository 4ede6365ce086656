"""The position-aware YAML reader: positions, duplicates, alias bombs, YAML 1.2 scalars."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kfops.project import document
from kfops.project.document import Mark


def test_positions_of_keys_and_values() -> None:
    doc = document.parse("version: 1\npipeline:\n  python: p.py:f\n", "m.yaml")
    assert doc.problems == []
    assert doc.data == {"version": 1, "pipeline": {"python": "p.py:f"}}
    assert doc.keys[("pipeline", "python")] == Mark(3, 3)
    assert doc.values[("pipeline", "python")] == Mark(3, 11)
    assert doc.mark_of(("pipeline", "python", "missing")) == Mark(3, 11)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("on", "on"),
        ("yes", "yes"),
        ("no", "no"),
        ("2024-01-01", "2024-01-01"),
        ("true", True),
        ("False", False),
        ("~", None),
        ("", None),
        ("12", 12),
        ("-3", -3),
        ("0x1f", 31),
        ("0o17", 15),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("'12'", "12"),
        ('"true"', "true"),
        ("500m", "500m"),
    ],
)
def test_scalars_follow_yaml_1_2(text: str, value: object) -> None:
    doc = document.parse(f"key: {text}\n", "m.yaml")
    assert doc.problems == []
    assert doc.data["key"] == value
    assert type(doc.data["key"]) is type(value)


def test_special_floats() -> None:
    doc = document.parse("a: .inf\nb: -.Inf\nc: .nan\n", "m.yaml")
    assert doc.data["a"] == math.inf
    assert doc.data["b"] == -math.inf
    assert math.isnan(doc.data["c"])


def test_on_is_a_key_not_true() -> None:
    doc = document.parse("on:\n  push: {}\n", "m.yaml")
    assert doc.data == {"on": {"push": {}}}


def test_duplicate_key_reported_at_second() -> None:
    doc = document.parse("a: 1\nb:\n  c: 1\n  c: 2\n", "m.yaml")
    [problem] = doc.problems
    assert (problem.line, problem.column) == (4, 3)
    assert problem.message == "duplicate key `c` (first defined at line 3)"


def test_merge_keys_do_not_count_as_duplicates() -> None:
    doc = document.parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert doc.problems == []
    assert doc.data["use"] == {"y": 3, "x": 1}


def test_alias_bomb_is_bounded() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    doc = document.parse("\n".join(lines) + "\n", "m.yaml")
    assert doc.data is None
    [problem] = doc.problems
    assert problem.message.startswith("aliases expand to more than 100,000 values")


def test_recursive_alias() -> None:
    doc = document.parse("a: &x\n  b: *x\n", "m.yaml")
    assert [p.message for p in doc.problems] == ["recursive alias: a value contains itself"]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    doc = document.parse("a: " + "[" * 5000 + "]" * 5000 + "\n", "m.yaml")
    assert doc.problems
    assert doc.data is None


@pytest.mark.parametrize(
    ("raw", "message", "where"),
    [
        (b"", "file is empty", (0, 0)),
        (b"# only a comment\n\n", "file has only comments", (0, 0)),
        (b"name: caf\xe9\n", "not valid UTF-8 (byte 0xe9)", (1, 10)),
        (b"a: 1\nb: \x00\x01\n", "binary file (contains a NUL byte), not YAML text", (2, 4)),
        ("a: 1\n".encode("utf-16"), "file is UTF-16 encoded", (0, 0)),
    ],
)
def test_unreadable_files(tmp_path: Path, raw: bytes, message: str, where: tuple[int, int]) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_bytes(raw)
    doc = document.load(path, "mlops.yaml")
    [problem] = doc.problems
    assert problem.message == message
    assert (problem.line, problem.column) == where


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\n")
    assert document.load(path, "mlops.yaml").data == {"version": 1}


def test_huge_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_bytes(b"a: 1\n" * 300_000)
    [problem] = document.load(path, "mlops.yaml").problems
    assert problem.message == "file is 1,500,000 bytes; an mlops.yaml is at most 1,048,576"


def test_syntax_error_position_and_tab_hint() -> None:
    doc = document.parse("a:\n\tb: 1\n", "m.yaml")
    [problem] = doc.problems
    assert problem.line == 2
    assert problem.message.startswith("YAML syntax:")
    assert "tabs" in problem.hint


def test_unknown_tag() -> None:
    doc = document.parse("a: !Ref x\n", "m.yaml")
    assert [p.message for p in doc.problems] == ["unsupported YAML tag `!Ref`"]
