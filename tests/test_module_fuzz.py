"""Issue 12, items 3 and 5: every command and argument of the data modules (mockup streamer,
stream watcher, recorder, decoder), each given wrong types, huge, negative, zero and tiny
numbers, long strings, path traversal and nested junk, one at a time, over a real connection.

Every line gets exactly one reply; no reply says the module raised (an exception is a bug: bad
input deserves a message); values that can never be right (a wrong type, a number past its
documented range, a 100 kB name, a path leading out of the data folder) are refused; nothing is
written outside the data folder; and the module still answers afterwards. The arguments come
from HELP, so a command or argument added later is fuzzed too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pylsl
import pytest
from conftest import ROOT
from test_decoder_core import SETTINGS, as_recording, synth_eeg
from wire_helpers import Wire

from services.decoder import model_io
from services.decoder.arguments import RANGES as DECODER_RANGES
from services.decoder.training import fit_recording
from services.mockup_streamer.core import RANGES as MOCKUP_RANGES
from services.recorder.core import RANGES as RECORDER_RANGES
from services.stream_watcher.core import RANGES as WATCHER_RANGES
from shared_utils.checks import Range

HUGE_OK = {"seed", "task"}  # a 62-bit seed is a seed; a huge task id is just unknown
TRAVERSAL = ["../../../../etc/passwd", "/etc/passwd", "a/../../../x.xdf", "sub/../../x.json"]
PATH_ARGS = {"file", "xdf", "out"}
SKIP = {"CLOSE", "AUTH", "SUBSCRIBE", "HELP", "UP", "GET_PCOMMS"}  # built-ins: tests elsewhere
SESSION = {"EXPINFO", "EXPINIT", "EXPSTART", "EXPSTATUS", "EXPEND", "EXPINTERRUPT", "EXPCLEANUP"}


def _values(arg: str, type_name: str) -> list[tuple[Any, bool]]:
    """(value, must be refused) pairs for one argument, from its HELP type."""
    types = set(type_name.replace(" or ", " ").split())
    numeric = bool(types & {"int", "float"})
    out: list[tuple[Any, bool]] = []
    wrong = {"int": "1", "float": "1.5", "str": 12345, "list": "x", "dict": [1], "bool": "yes"}
    for t, v in wrong.items():
        if t in types and not (types & _json_types(v)):
            out.append((v, True))
            break
    out += [(0, False), (-1, numeric), (-(10**6), numeric), (1e-300, False)]
    out += [(10**18, numeric and arg not in HUGE_OK), (1e300, numeric and "int" not in types)]
    out += [(-1e300, numeric), (True, "bool" not in types and "any" not in types)]
    out += [("x" * 100_000, "str" in types), ("", False), ("\u202e\ud7ff\t", False)]
    out += [("a\ud800b.xdf", True), ({"\udfff": 1}, True)]  # lone surrogates: never text
    out += [(p, "str" in types and arg in PATH_ARGS) for p in TRAVERSAL]
    out += [([None, 1e300, "../x", [[{}]]], False), ({"a": [1, {"b": -1e300}]}, False)]
    return out


def _raw_classes(commands: list[dict[str, Any]]) -> list[bytes]:
    """The line classes that once escaped the parser or exploded later (issue 12, items 4-5),
    aimed at each command's first argument: 1,000-deep nesting, a 5,000-digit integer, 1e400,
    NaN, a NUL and a lone surrogate in a string, and the reserved name ``self``."""
    lines = []
    for entry in commands:
        cmd = entry["name"].encode()
        arg = (entry["kwargs"][0]["name"] if entry["kwargs"] else "x").encode()
        lines += [
            cmd + b"|" + b"[" * 1000 + b"]" * 1000,
            cmd + b'|{"' + arg + b'": ' + b"9" * 5000 + b"}",
            cmd + b'|{"' + arg + b'": 1e400}',
            cmd + b'|{"' + arg + b'": [NaN]}',
            cmd + b'|{"' + arg + b'": "a\\u0000b"}',
            cmd + b'|{"' + arg + b'": "a\\ud800b"}',
            cmd + b'|{"self": 1}',
        ]
    return lines


def _json_types(v: Any) -> set[str]:
    return {
        str: {"str"},
        int: {"int", "float"},
        float: {"float"},
        list: {"list"},
        dict: {"dict"},
        bool: {"bool"},
    }[type(v)]


# Arguments that make each command fail fast (nothing to resolve, no stream to wait for)
# unless the fuzzed argument changes them; work a command starts is stopped by its task id.
BASES: dict[str, dict[str, dict[str, Any]]] = {
    "services.mockup_streamer": {
        "START": {"stream": "fuzz_mock", "markers": False},
        "REPLAY": {"xdf": "missing.xdf"},
    },
    "services.recorder": {
        "START": {"file": "fuzz.xdf", "streams": ["fuzz_none"], "overwrite": True},
        "EXPORT": {"file": "missing.xdf"},
    },
    "services.decoder": {
        "FIT": {"xdf": "missing.xdf"},
        "SAVE": {"file": "saved.json"},
        "LOAD": {"file": "model.json"},
        "START": {"input": "fuzz_in", "output": "fuzz_out"},  # no model yet: refused early
        "SET": {"on_threshold": 0.7},
    },
    "services.stream_watcher": {
        "WATCH": {"stream": "{live}", "timeout_s": 0.5},
        "UNWATCH": {"stream": "{live}"},
        "STATS": {"stream": "{live}"},
        "GET_WINDOW": {"stream": "{live}"},
    },
}


RANGES: dict[str, dict[str, Range]] = {
    "services.mockup_streamer": MOCKUP_RANGES,
    "services.recorder": RECORDER_RANGES,
    "services.decoder": DECODER_RANGES,
    "services.stream_watcher": WATCHER_RANGES,
}


def _out_of_range(ranges: dict[str, Range], arg: str, type_name: str, value: Any) -> bool:
    """A number of an accepted type outside the argument's documented range."""
    rng = ranges.get(arg)
    if rng is None or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and "float" not in type_name:
        return False  # a type error, not a range error
    return not rng.contains(value)


def _commands(w: Wire) -> list[dict[str, Any]]:
    help_ = w.cmd("HELP")["result"]["commands"]
    return [c for c in help_ if c["name"] not in SKIP and c["name"] not in SESSION]


def _fuzz(w: Wire, module: str, live: str, only: set[str] | None = None) -> dict[str, int]:
    """Send every (command, argument, value) line; check each reply; returns counts."""
    counts = {"lines": 0, "refused": 0, "range": 0}
    for entry in _commands(w):
        cmd = entry["name"]
        if only is not None and cmd not in only:
            continue
        base = {
            k: (v.replace("{live}", live) if isinstance(v, str) else v)
            for k, v in BASES[module].get(cmd, {}).items()
        }
        for arg in entry["kwargs"]:
            for value, must_refuse in _values(arg["name"], arg["type"]):
                must_refuse |= _out_of_range(RANGES[module], arg["name"], arg["type"], value)
                line = f"{cmd}|{json.dumps({**base, arg['name']: value})}\n"
                w.send(line.encode())
                reply = w.reply()
                counts["lines"] += 1
                where = f"{module} {line[:160]!r}"
                assert reply.get("cmd") == cmd, (where, reply)
                if reply["ok"]:
                    assert not must_refuse, f"accepted: {where} -> {str(reply)[:300]}"
                    result = reply["result"]
                    if cmd != "STOP" and isinstance(result, dict) and "task" in result:
                        stopped = w.cmd("STOP", task=result["task"])  # started work: undo it
                        assert stopped["ok"] or "no task" in stopped["error"], (where, stopped)
                else:
                    counts["refused"] += 1
                    error = reply["error"]
                    assert " raised " not in error, (where, error[:500])
                    assert len(error) < 5000, where
                    if _out_of_range(RANGES[module], arg["name"], arg["type"], value):
                        want = f"{arg['name']}: {value!r} is out of range; use "
                        assert want in error, (where, error[:300])  # the documented range
                        counts["range"] += 1
    for line in _raw_classes(_commands(w)):  # what json.dumps cannot write: raw lines
        w.send(line + b"\n")
        reply = w.reply()
        counts["lines"] += 1
        assert reply["ok"] is False, (module, line[:80], reply)
        assert " raised " not in reply["error"], (module, line[:80], reply["error"][:300])
    w.send(b'{"id": "end", "cmd": "UP"}\n')  # exactly one reply per line: UP comes next
    assert w.reply() == {"ok": True, "cmd": "UP", "id": "end", "result": True}
    return counts


@pytest.mark.parametrize(
    "module",
    [
        "services.mockup_streamer",
        "services.stream_watcher",
        "services.recorder",
        "services.decoder",
    ],
)
def test_every_argument_of_every_command_survives_bad_values(
    module: str, module_process, tmp_path: Path, lsl_name: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    root_before = sorted(p.name for p in ROOT.iterdir())
    live = pylsl.StreamOutlet(pylsl.StreamInfo(lsl_name, "EEG", 2, 100.0, "float32", ""))
    _, port = module_process(module, "--data-dir", str(data))
    with Wire(port) as w:
        if module == "services.decoder":
            counts = _fuzz(w, module, lsl_name, only={"FIT", "START", "SET", "STOP", "STATUS"})
            dataset, _, switches = synth_eeg(seed=1, dur_s=20.0)
            model, _ = fit_recording(as_recording(dataset, switches), SETTINGS)
            model_io.save(model, data / "model.json")
            assert w.cmd("LOAD", file="model.json")["ok"]  # SAVE and LOAD check paths with a model
            more = _fuzz(w, module, lsl_name, only={"SAVE", "LOAD"})
            counts = {k: counts[k] + more[k] for k in counts}
        else:
            counts = _fuzz(w, module, lsl_name)
        assert w.cmd("UP")["result"] is True
        status = w.cmd("STATUS")["result"]
        assert status["tasks"] == [], status["tasks"]  # everything started was stopped
    print(f"{module}: {counts}")
    assert counts["lines"] > 100
    assert counts["range"] >= 3 * len(RANGES[module]) // 2, counts  # ranges really checked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written beside it
    assert sorted(p.name for p in ROOT.iterdir()) == root_before  # nor in the working directory
    del live
