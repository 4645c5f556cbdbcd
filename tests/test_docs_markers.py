"""Every fenced block in README.md and docs/ is tested or skipped with a reason, and the harness
that compares documented replies can tell right from wrong (tests/doc_blocks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_blocks import (
    MARKER_HINT,
    Block,
    all_blocks,
    marker_problems,
    match,
    match_output,
    parse_file,
    parse_pattern,
)
from doc_runners import RUNNERS, shell_steps
from doc_static import STATIC_RUNNERS, run_tree, shape


def test_every_documented_block_is_tested_or_skipped_with_a_reason() -> None:
    blocks = all_blocks()
    assert len(blocks) > 40, "the docs lost their examples, or the parser lost the docs"
    problems = [p for b in blocks for p in marker_problems(b)]
    assert not problems, "\n".join([*problems, MARKER_HINT])


def test_every_kind_has_a_runner() -> None:
    from doc_blocks import KINDS

    assert set(KINDS) == {"skip", *RUNNERS, *STATIC_RUNNERS}


def test_an_unmarked_block_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    doc = tmp_path / "new.md"
    doc.write_text(
        '# New\n\n<!-- doc-test: skip reason="shown only" -->\n```\nx\n```\n\n'
        "text\n\n```python\nprint(1)\n```\n<!-- doc-test: nc -->\n```\nUP\n```\n"
        "<!-- doc-test: shel -->\n```\nls\n```\n"
    )
    blocks = parse_file(doc)
    assert [b.line for b in blocks] == [4, 10, 14, 18]
    assert marker_problems(blocks[0]) == []
    [unmarked] = marker_problems(blocks[1])
    assert f"{doc}:10" in unmarked
    assert "no doc-test marker" in unmarked
    assert "needs an argument" in marker_problems(blocks[2])[0]
    assert "unknown kind 'shel'" in marker_problems(blocks[3])[0]


def test_documented_replies_are_compared_field_by_field() -> None:
    doc = parse_pattern('{"ok": true, "cmd": "START", "result": {"stream": "x", "pid": 1, ...}}')
    good = {"ok": True, "cmd": "START", "result": {"stream": "x", "pid": 4242, "more": 1}}
    assert match(doc, good) == []
    assert match(doc, {**good, "cmd": "STOP"})  # a different value
    assert match(doc, {**good, "result": {"pid": 1}})  # a documented key missing
    assert match(doc, {**good, "id": 7})  # a key the doc does not show (no `...` there)
    assert match(doc, {**good, "result": {"stream": "x", "pid": "1"}})  # volatile: type counts
    assert match(parse_pattern('{"r": [...]}'), {"r": {}})
    assert match(parse_pattern('{"r": [1, ...]}'), {"r": [1, 2]}) == []
    assert match(parse_pattern('{"r": [1, ...]}'), {"r": [2, 1]})
    err = parse_pattern('{"error": "unknown command \'X\'. Did you mean ...? ..."}')
    assert match(err, {"error": "unknown command 'X'. Did you mean UP? Valid: UP"}) == []
    assert match(err, {"error": "unknown argument 'X'"})


def test_output_and_shapes_can_fail() -> None:
    assert match_output(["a", "...", "z: 3/3 pass"], "a\nb\nc\nz: 3/3 pass\n") == []
    assert match_output(["a", "z: 3/3 pass"], "a\nb\nz: 3/3 pass\n")
    assert match_output(["/home/lab/mesh/data/x.html"], "/tmp/abc/data/x.html\n") == []
    assert match_output(["/home/lab/mesh/data/x.html"], "/tmp/abc/data/y.html\n")
    assert shape(parse_pattern('{"a": 1, "b": [{"c": "x"}]}'), {"a": 2, "b": [{"c": "y"}]}) == []
    assert shape(parse_pattern('{"a": 1}'), {"a": "1"})
    assert shape(parse_pattern('{"a": 1}'), {"a": 1, "b": 2})
    assert (
        shape(
            parse_pattern('{"a": [b0, ...], // note\n "...": 0}', loose=True), {"a": [1.5], "z": 0}
        )
        == []
    )


def test_shell_steps_split_commands_and_output() -> None:
    steps = shell_steps("$ make x   # why\nout 1\n\n$ nc host 1\n")
    assert steps == [(0, "make x", ["out 1"]), (3, "nc host 1", [])]
    assert shell_steps("a  # c\n   # only a comment\nb\n") == [(0, "a", []), (2, "b", [])]


@pytest.mark.parametrize(("name", "exists"), [("errors.py", True), ("no_such_file.py", False)])
def test_a_layout_naming_a_missing_file_fails(name: str, exists: bool) -> None:
    block = Block("x.md", 1, "", f"shared_utils/     what\n  {name}   it\n")
    assert (
        run_tree(block, None) == []
        if exists
        else ["x.md:3: shared_utils/no_such_file.py does not exist"]
    )
