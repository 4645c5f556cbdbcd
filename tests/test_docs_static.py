"""Documented configs, formats and layouts are what the code accepts and produces: TOML configs
load, LSL configs load in liblsl, JSON examples match real objects, file layouts exist."""

from __future__ import annotations

import pytest
from doc_blocks import Block, blocks_of
from doc_sandbox import Mesh, doc_mesh  # noqa: F401
from doc_static import STATIC_RUNNERS


@pytest.mark.parametrize("block", blocks_of(*STATIC_RUNNERS), ids=lambda b: b.where)
def test_documented_file_is_accepted(block: Block, doc_mesh: Mesh) -> None:  # noqa: F811
    problems = STATIC_RUNNERS[block.kind](block, doc_mesh)
    assert not problems, "\n".join(problems)
