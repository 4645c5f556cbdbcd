"""The examples of README.md and docs/ run as written: nc transcripts against the real modules,
Python snippets, shell commands and servers (markers: tests/doc_blocks.py).

One sandbox and one set of modules serve the whole file; a failure names the file and line of
the documentation and says what differs.
"""

from __future__ import annotations

import pytest
from doc_blocks import Block, blocks_of
from doc_runners import RUNNERS
from doc_sandbox import Mesh, doc_mesh  # noqa: F401


@pytest.mark.parametrize("block", blocks_of(*RUNNERS), ids=lambda b: b.where)
def test_documented_example_runs(block: Block, doc_mesh: Mesh) -> None:  # noqa: F811
    problems = RUNNERS[block.kind](block, doc_mesh)
    assert not problems, "\n".join(problems)
