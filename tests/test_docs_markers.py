"""Every fenced block in README.md, docs/ and examples/**/README.md is tested or skipped with a
reason, and the harness that compares documented replies, excerpts, edits and configs can tell
right from wrong (tests/doc_blocks.py)."""

from __future__ import annotations

import re
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
from doc_edits import apply_edit
from doc_rooms import ported, up_config
from doc_runners import RUNNERS, shell_steps
from doc_sandbox import Mesh, Sandbox
from doc_static import STATIC_RUNNERS, run_excerpt, run_tree, shape


def test_every_documented_block_is_tested_or_skipped_with_a_reason() -> None:
    blocks = all_blocks()
    assert len(blocks) > 40, "the docs lost their examples, or the parser lost the docs"
    read = {b.path for b in blocks}
    assert {"README.md", "docs/protocol.md", "examples/modules/node/README.md"} <= read
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


NODE_MINIMAL = "examples/modules/node/minimal.js"


def test_an_excerpt_must_be_the_files_lines_in_order() -> None:
    def excerpt(text: str) -> list[str]:
        return run_excerpt(Block("x.md", 1, "js", text, kind="excerpt", args=[NODE_MINIMAL]), None)

    assert (
        excerpt("'use strict';\nconst net = require('node:net');\n...\n  UP: () => true,\n") == []
    )
    assert excerpt("const net = require('node:net');\n'use strict';\n")  # out of order
    assert excerpt("'use strict';\n...\n  STATUS: () => ({}),\n")  # not in the file


def test_an_edit_goes_to_its_anchors_or_says_why_not(tmp_path: Path) -> None:
    def edit(text: str, at: str) -> tuple[list[str], str]:
        dest = tmp_path / str(len(list(tmp_path.iterdir())))
        block = Block("x.md", 1, "js", text, kind="edit", args=[NODE_MINIMAL], opts={"at": at})
        problems = apply_edit(block, dest)
        return problems, (dest / "minimal.js").read_text() if not problems else ""

    problems, code = edit("const COMMANDS = {\n  HI: () => 'hi',\n};\n", "replace:const COMMANDS")
    assert problems == []
    assert "HI: () => 'hi'," in code
    assert "ECHO:" not in code  # the whole table was replaced, up to its closing bracket
    assert "function reply(line) {" in code
    problems, code = edit("// one\n...\n// two\n", "after:'use strict';;before:function reply")
    assert problems == []
    assert code.index("'use strict';\n// one\n") < code.index("// two\nfunction reply(line) {")
    assert "2 fragments, 1 anchors" in edit("a\n...\nb\n", "after:'use strict'")[0][0]
    assert "it matches 0" in edit("a\n", "after:no such line")[0][0]
    assert re.search(r"it matches [2-9]", edit("a\n", "after:COMMANDS")[0][0])  # several do


def test_a_documented_up_runs_on_this_runs_ports(tmp_path: Path) -> None:
    assert up_config("control-room up config/default.toml") == "config/default.toml"
    assert up_config(".venv/bin/control-room up mesh.toml --attach") == "mesh.toml"
    assert up_config("python -m control_room up x.toml") == "x.toml"
    assert up_config("control-room status") is None
    mesh, mapping = Mesh(Sandbox(tmp_path)), {}
    src = tmp_path / "in.toml"
    src.write_text('[modules.a]\nmodule = "x"\nport = 8101\n')
    port = ported(src, tmp_path / "out.toml", mesh, mapping)
    out = (tmp_path / "out.toml").read_text()
    assert "8101" not in out
    assert f"port = {mapping[8101]}" in out
    assert port == mapping[9010]
    assert f"log_port = {mapping[9020]}" in out
    src.write_text(
        "[control_room]  # ours\nport = 9010\nweb_port = 9030\n[modules.a]\nmodule = 'x'\n"
    )
    assert ported(src, tmp_path / "out2.toml", mesh, mapping) == mapping[9010]
    out = (tmp_path / "out2.toml").read_text()
    assert out.count("[control_room]") == 1
    assert f"pub_port = {mapping[9021]}" in out
