"""The EXP* session messages every module answers (issue 14): iblutil's vocabulary and status
numbers, refusals that say what to send first, repeats that change nothing, and module handlers
that extend a step or refuse it without corrupting the state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from wire_helpers import Wire

from shared_utils.errors import CommandError
from shared_utils.server import DefaultServer

REF = "2026-12-04_1_mouse01"


def test_lifecycle_with_no_module_handlers(make_server: Callable[..., DefaultServer]) -> None:
    """CONNECTED -> INITIALIZED -> RUNNING -> STOPPED -> CONNECTED, with iblutil's numbers."""
    s = make_server({})
    with Wire(s.port) as w:
        info = w.cmd("EXPINFO", subject="mouse01")["result"]
        assert info["status"] == 0
        assert info["main_sync"] is False
        assert info["module"] == "test_module"
        assert {"version", "host", "revision", "needs"} <= set(info)
        assert w.cmd("EXPINIT", exp_ref=REF)["result"]["status"] == 10
        started = w.cmd("EXPSTART", exp_ref=REF)["result"]
        assert started["status"] == 20
        assert started["started"]["wall"] > 0
        assert w.cmd("EXPSTATUS")["result"]["status_name"] == "running"
        assert w.cmd("STATUS")["result"]["session"]["exp_ref"] == REF
        assert w.cmd("EXPEND")["result"]["status"] == 30
        assert w.cmd("EXPCLEANUP")["result"]["status"] == 0


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ([("EXPSTART", {"exp_ref": REF})], "send EXPINIT first"),
        ([("EXPEND", {})], "no session to end"),
        ([("EXPINIT", {"exp_ref": "mouse01"})], "yyyy-mm-dd_N_subject"),
        (
            [("EXPINIT", {"exp_ref": REF}), ("EXPSTART", {"exp_ref": REF}), ("EXPCLEANUP", {})],
            "send EXPEND or EXPINTERRUPT first",
        ),
        (
            [
                ("EXPINIT", {"exp_ref": REF}),
                ("EXPSTART", {"exp_ref": REF}),
                ("EXPINIT", {"exp_ref": "2026-12-04_2_mouse01"}),
            ],
            "is running",
        ),
    ],
)
def test_out_of_order_messages_are_refused_with_the_way_out(
    make_server: Callable[..., DefaultServer], steps: list[tuple[str, dict]], error: str
) -> None:
    s = make_server({})
    with Wire(s.port) as w:
        replies = [w.cmd(cmd, **kw) for cmd, kw in steps]
        assert all(r["ok"] for r in replies[:-1]), replies
        assert replies[-1]["ok"] is False
        assert error in replies[-1]["error"]


def test_repeats_for_the_same_exp_ref_do_not_run_the_module_twice(
    make_server: Callable[..., DefaultServer],
) -> None:
    """A control room that retries after a timeout must not start a recording twice."""
    calls: list[str] = []

    def expstart(exp_ref: str, **kwargs: Any) -> dict:
        """Start recording for the session."""
        calls.append(exp_ref)
        return {"file": f"{exp_ref}.xdf"}

    s = make_server({"EXPSTART": expstart})
    with Wire(s.port) as w:
        w.cmd("EXPINIT", exp_ref=REF)
        first = w.cmd("EXPSTART", exp_ref=REF)["result"]
        again = w.cmd("EXPSTART", exp_ref=REF)["result"]
        assert first["file"] == f"{REF}.xdf"
        assert again.get("repeat") is True
        assert calls == [REF]
        interrupted = w.cmd("EXPINTERRUPT", error="Bpod lost")["result"]
        assert interrupted["interrupted"] == {"error": "Bpod lost"}
        assert w.cmd("EXPINTERRUPT")["result"]["repeat"] is True


def test_a_module_that_refuses_a_step_keeps_its_state(
    make_server: Callable[..., DefaultServer],
) -> None:
    def expinit(exp_ref: str, **kwargs: Any) -> None:
        """Refuse: the disk is full."""
        raise CommandError("no space left in data/")

    def expinfo(**kwargs: Any) -> dict:
        """Say this module is the main sync and proposes the reference."""
        return {"main_sync": True, "exp_ref": REF, "needs": ["mock_eeg"]}

    s = make_server({"EXPINIT": expinit, "EXPINFO": expinfo})
    with Wire(s.port) as w:
        info = w.cmd("EXPINFO", subject="mouse01")["result"]
        assert info["main_sync"] is True
        assert info["needs"] == ["mock_eeg"]
        refused = w.cmd("EXPINIT", exp_ref=REF)
        assert refused["ok"] is False
        assert "no space left" in refused["error"]
        assert w.cmd("EXPSTATUS")["result"]["status"] == 0
