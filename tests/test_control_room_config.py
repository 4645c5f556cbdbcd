"""Config loading: every error names the key and the line; Dareplane's formats load unchanged."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from control_room.config import ConfigError, load_config, parse_config
from control_room.macros import MacroError, check_expect, render


def errors_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "mesh.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    for no, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return no
    raise AssertionError(needle)


OURS = """\
[control_room]
port = 9123
log_port = 0

[modules.streamer]
module = "services.mockup_streamer"
port = 8101

[modules.recorder]
module = "services.recorder"
port = 0
after = ["streamer"]
ready = { stream = "mock_eeg", timeout_s = 5 }
restart = "always"
env = { REC_DEBUG = 1 }

[modules.native]
cmd = ["./native_module", "--listen", "{host}:{port}"]
after = ["streamer"]

[modules.external]
attach = true
host = "127.0.0.1"
port = 8200

[macros.start]
description = "start"
[macros.start.default_json]
name = "mock_eeg"
[[macros.start.steps]]
send = "streamer"
cmd = "START"
kwargs = { stream = "$name" }
[[macros.start.steps]]
wait_stream = "$name"
timeout_s = 3
"""


def test_our_format_loads_with_defaults_and_order(tmp_path: Path) -> None:
    p = tmp_path / "mesh.toml"
    p.write_text(OURS)
    cfg = load_config(p)
    assert cfg.control.port == 9123
    assert cfg.control.log_port == 0
    rec = cfg.modules["recorder"]
    assert rec.argv[:3] == [sys.executable, "-m", "services.recorder"]
    assert "{port}" in rec.argv
    assert rec.protocol == "json"
    assert rec.ready.stream == "mock_eeg"
    assert rec.ready.timeout_s == 5
    assert rec.restart == "always"
    assert rec.env == {"REC_DEBUG": "1"}
    assert cfg.modules["native"].kind == "exec"
    assert cfg.modules["native"].protocol == "auto"
    assert cfg.modules["external"].kind == "attach"
    assert cfg.modules["external"].restart == "no"
    assert cfg.start_order() == [["streamer", "external"], ["recorder", "native"]]
    steps = cfg.macros["start"].steps
    assert [s.kind for s in steps] == ["send", "wait_stream"]
    assert steps[0].line == line_of(OURS, "[[macros.start.steps]]")


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    text = OURS.replace('restart = "always"', 'restart = "always"\nretsart_delay = 2')
    (problem,) = errors_of(text, tmp_path)
    assert f"mesh.toml:{line_of(text, 'retsart_delay')}: modules.recorder.retsart_delay" in problem
    assert "unknown key (did you mean 'restart_delay_s'?); allowed here:" in problem


def test_wrong_types_and_values_each_reported_with_line(tmp_path: Path) -> None:
    text = (
        OURS.replace("port = 8101", 'port = "8101"')
        .replace('restart = "always"', 'restart = "sometimes"')
        .replace("log_port = 0", "log_port = 70000")
    )
    problems = errors_of(text, tmp_path)
    assert len(problems) == 3
    joined = "\n".join(problems)
    quoted = line_of(text, 'port = "8101"')
    assert f":{quoted}: modules.streamer.port: must be int" in joined
    assert f":{line_of(text, 'sometimes')}: modules.recorder.restart: must be one of" in joined
    assert "got 'sometimes'" in joined
    assert f":{line_of(text, 'log_port')}: control_room.log_port: must be a port number" in joined


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    text = OURS.replace('cmd = "START"', 'cmd = "START')
    (problem,) = errors_of(text, tmp_path)
    broken = line_of(text, 'cmd = "START')
    assert "not valid TOML" in problem
    assert f"line {broken}" in problem


def test_unknown_dependency_and_cycle(tmp_path: Path) -> None:
    text = OURS.replace(
        'after = ["streamer"]\nready', 'after = ["native", "ghost"]\nready'
    ).replace(
        'after = ["streamer"]\n\n[modules.external]', 'after = ["recorder"]\n\n[modules.external]'
    )
    joined = "\n".join(errors_of(text, tmp_path))
    assert (
        f":{line_of(text, '[modules.recorder]')}: modules.recorder.after: unknown module 'ghost'"
        in joined
    )
    assert "dependency cycle" in joined
    assert "recorder" in joined
    assert "native" in joined


def test_macro_with_unknown_module_names_step_line(tmp_path: Path) -> None:
    text = OURS.replace('send = "streamer"', 'send = "streamr"')
    (problem,) = errors_of(text, tmp_path)
    assert (
        f":{line_of(text, 'streamr')}: macros.start.steps[0].send: unknown module 'streamr'"
        in problem
    )


def test_module_needs_a_way_to_start(tmp_path: Path) -> None:
    text = OURS.replace("attach = true\n", "")
    (problem,) = errors_of(text, tmp_path)
    assert f":{line_of(text, '[modules.external]')}: modules.external: say how to start" in problem


def test_two_start_methods_and_duplicate_ports(tmp_path: Path) -> None:
    text = OURS.replace(
        'cmd = ["./native_module"', 'module = "x"\ncmd = ["./native_module"'
    ).replace("port = 8200", "port = 8101")
    joined = "\n".join(errors_of(text, tmp_path))
    assert "give only one of module / cmd / attach" in joined
    assert "port 8101 is also used by streamer" in joined


# Dareplane's current format, as in dp-control-room's configs/example_cfg.toml
DAREPLANE_CURRENT = """\
[modules]
modules_root = '../'

[modules.dp-mockup-streamer]
kind = 'python'
ip = '127.0.0.1'
port = 8080
retry_after_s = 1
max_connect_retries = 5
[modules.dp-mockup-streamer.kwargs]
stream_name = 'mockup_EEG_stream'
random_data = true

[modules.dp-passthrough]
kind = 'python'
ip = '127.0.0.1'
port = 8081
custom_entry_point = 'api.server'

[modules.dp-exe]
kind = 'exe'
path = '/opt/dp/my_module'
args = ['--port', '8082']
ip = '127.0.0.1'
port = 8082

[macros.globals]
sleep_s = 0.5

[macros.start_streaming]
name = 'START_STREAMING'
description = 'start streaming'
[macros.start_streaming.default_json]
stream_name = 'mockup_stream'
data_root = '../'
[macros.start_streaming.cmds]
com1 = ['dp-mockup-streamer', 'START']
com2 = ['dp-passthrough', 'START', 'stream=stream_name', 'root=data_root']
"""


def test_dareplane_current_format_loads(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    p = tmp_path / "cfg" / "example_cfg.toml"
    p.write_text(DAREPLANE_CURRENT)
    cfg = load_config(p)
    assert list(cfg.modules) == ["dp-mockup-streamer", "dp-passthrough", "dp-exe"]
    ms = cfg.modules["dp-mockup-streamer"]
    assert ms.kind == "python"
    assert ms.port == 8080
    assert ms.protocol == "auto"
    assert ms.argv[1:3] == ["-m", "api.server"]
    assert "--ip={host}" in ms.argv
    assert "--port={port}" in ms.argv
    assert "--stream_name=mockup_EEG_stream" in ms.argv
    assert "--random_data=True" in ms.argv
    assert ms.cwd is not None
    assert ms.cwd.endswith("dp-mockup-streamer")
    assert cfg.modules["dp-exe"].kind == "exec"
    assert cfg.modules["dp-exe"].argv[0] == "/opt/dp/my_module"
    assert cfg.step_sleep_s == 0.5
    m = cfg.macros["start_streaming"]
    assert m.label == "START_STREAMING"
    assert m.defaults["stream_name"] == "mockup_stream"
    assert [(s.module, s.cmd, s.mapping) for s in m.steps] == [
        ("dp-mockup-streamer", "START", []),
        ("dp-passthrough", "START", [("stream", "stream_name"), ("root", "data_root")]),
    ]


DAREPLANE_LEGACY = """\
[python]
modules_root = '../'
[python.modules.dp-mi-paradigm]
type = 'paradigm'
port = 8081
ip = '127.0.0.1'
loglevel = 10
[python.modules.dp-mi-paradigm.kwargs]
n_trials = 10

[exe.modules.dp-ao-communication]
path = '../dp-ao-communication/build/ao_comm.exe'
ip = '127.0.0.1'
port = 8082
[exe.modules.dp-ao-communication.pcomms]
STARTSTIM = '{"StimChannel": 10273, "Freq_hZ": 130}'

[macros.start_test]
name = 'START_TEST'
delay_s = 1
[macros.start_test.default_json]
nrep = 6
[macros.start_test.cmds]
com1 = ['dp-mi-paradigm', 'RUN', 'nrepetitions=nrep']
"""


def test_dareplane_legacy_format_loads(tmp_path: Path) -> None:
    p = tmp_path / "legacy.toml"
    p.write_text(DAREPLANE_LEGACY)
    cfg = load_config(p)
    mi = cfg.modules["dp-mi-paradigm"]
    assert mi.kind == "python"
    assert "--n_trials=10" in mi.argv
    assert mi.port == 8081
    ao = cfg.modules["dp-ao-communication"]
    assert ao.kind == "attach"
    assert ao.port == 8082
    assert "STARTSTIM" in ao.pcomms
    assert cfg.macros["start_test"].delay_s == 1
    assert cfg.macros["start_test"].steps[0].mapping == [("nrepetitions", "nrep")]
    assert any("legacy Dareplane format" in w for w in cfg.warnings)


def test_legacy_unknown_key_still_reported(tmp_path: Path) -> None:
    text = DAREPLANE_LEGACY.replace("loglevel = 10", "loglevel = 10\nprot = 1")
    (problem,) = errors_of(text, tmp_path)
    assert (
        f":{line_of(text, 'prot = 1')}: python.modules.dp-mi-paradigm.prot: unknown key" in problem
    )


def test_step_needs_exactly_one_action(tmp_path: Path) -> None:
    text = OURS.replace('wait_stream = "$name"', 'wait_stream = "$name"\nwait_s = 1')
    (problem,) = errors_of(text, tmp_path)
    assert f":{line_of(text, 'wait_stream =')}" not in problem  # points at the step header
    assert re.search(r"macros\.start\.steps\[1\]: a step needs exactly one of", problem)


def test_run_macro_must_exist() -> None:
    with pytest.raises(ConfigError, match="run_macro: unknown macro 'experiment'"):
        parse_config(OURS.replace("log_port = 0", 'log_port = 0\nrun_macro = "experiment"'))


def test_templates_keep_types_and_name_missing_values() -> None:
    ctx = {"file": "a.xdf", "streams": None, "fit": {"accuracy": 0.9}, "n": 3}
    assert render({"f": "$file", "s": "$streams", "a": "${fit.accuracy}"}, ctx) == {
        "f": "a.xdf",
        "s": None,
        "a": 0.9,
    }
    assert render("run_$n.xdf", ctx) == "run_3.xdf"
    with pytest.raises(MacroError, match="no value for 'nope'.*known names: file, fit, n, streams"):
        render("$nope", ctx)


def test_expect_operators() -> None:
    assert check_expect({"state": "idle", "n": 5}, {"state": "idle", "n": {">=": 5}}) is None
    assert check_expect({"n": 4}, {"n": {">=": 5}}) == "n is 4, want >= 5"
    assert check_expect({}, {"x.y": 1}) == "x.y missing in reply"


# -- tokens (issue 12 item 2) ---------------------------------------------------------------------

REMOTE = """\
[control_room]
port = 0

[modules.far]
attach = true
host = "10.1.2.3"
port = 8200
"""


def test_module_beyond_loopback_without_a_token_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    (problem,) = errors_of(REMOTE, tmp_path)
    assert f"mesh.toml:{line_of(REMOTE, '[modules.far]')}: modules.far.host: 10.1.2.3" in problem
    assert 'set $MESH_TOKEN or [control_room] token_file = "path"' in problem
    monkeypatch.setenv("MESH_TOKEN", "t0ken")
    p = tmp_path / "ok.toml"
    p.write_text(REMOTE)
    assert load_config(p).tokens.for_module("far") == "t0ken"


def test_token_sources_are_checked_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TOKEN", "from-env")
    missing = REMOTE.replace("port = 0\n", 'port = 0\ntoken_file = "nope.token"\n', 1)
    (problem,) = errors_of(missing, tmp_path)
    assert "control_room.token_file: cannot read token file" in problem
    (tmp_path / "mesh.token").write_text("from-file\nsecond line ignored\n")
    text = REMOTE.replace("port = 0\n", 'port = 0\ntoken_file = "mesh.token"\n', 1)
    p = tmp_path / "file.toml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.tokens.mesh == "from-file"  # the file wins over the environment
    assert "from-file" not in repr(cfg)
    unset = REMOTE + 'token_env = "LAB_FAR_TOKEN"\n'
    monkeypatch.delenv("LAB_FAR_TOKEN", raising=False)
    (problem,) = errors_of(unset, tmp_path)
    assert "modules.far.token_env: $LAB_FAR_TOKEN is not set" in problem
    monkeypatch.setenv("LAB_FAR_TOKEN", "far-only")
    p.write_text(unset)
    assert load_config(p).tokens.for_module("far") == "far-only"


def test_a_token_written_into_the_config_is_refused(tmp_path: Path) -> None:
    text = (
        OURS.replace("log_port = 0", 'log_port = 0\ntoken = "abc"')
        .replace("env = { REC_DEBUG = 1 }", 'env = { REC_DEBUG = 1, MESH_TOKEN = "abc" }')
        .replace('cmd = ["./native_module"', 'args = ["--token", "abc"]\ncmd = ["./native_module"')
    )
    joined = "\n".join(errors_of(text, tmp_path))
    assert "control_room.token: a token never goes in the config file" in joined
    assert "modules.recorder.env.MESH_TOKEN: the token is not set through env" in joined
    assert "modules.native.args: --token on a command line shows in `ps`" in joined
    assert "abc" not in joined
