"""Runners for documented files and formats: TOML configs, LSL configs, JSON examples, layouts.

``json like=NAME`` compares a documented object with a real one made by ``LIKE[NAME]`` (same
keys, same value types; the values are examples); ``json check=NAME`` hands the documented
object to the real consumer in ``CHECKS[NAME]``. Add an entry to document a new format.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doc_blocks import ANY, ANY_LIST, ANY_OBJ, REST, ROOT, Block, _kind, parse_pattern
from doc_sandbox import Mesh

Problems = list[str]


# -- TOML configs ---------------------------------------------------------------------------------
def run_toml(block: Block, mesh: Mesh) -> Problems:
    """``toml config``: control_room.config must accept it (with= prepends a file, env=K=V).

    ``~`` is the sandbox's HOME, which holds the mesh token file the docs have every PC make
    (``~/.mesh-token``, docs/multi-host.md step 5), so ``token_file = "~/.mesh-token"`` loads.
    """
    from control_room.config import ConfigError, parse_config

    if block.args != ["config"]:
        return [f"{block.describe()}: only `toml config` is known"]
    prefix = (ROOT / block.opts["with"]).read_text() + "\n" if "with" in block.opts else ""
    env = dict(kv.split("=", 1) for kv in block.opt_list("env"))
    home = Path(mesh.sandbox.env["HOME"])
    token_file = home / ".mesh-token"
    if not token_file.exists():
        token_file.write_text("doc-test-token\n")
        token_file.chmod(0o600)
    saved = {k: os.environ.get(k) for k in [*env, "MESH_TOKEN", "HOME"]}
    os.environ.pop("MESH_TOKEN", None)  # the result must not depend on the caller's shell
    os.environ["HOME"] = str(home)  # nor on the caller's home folder
    os.environ.update(env)
    try:
        parse_config(prefix + block.text, mesh.sandbox.base / "doc.toml")
    except ConfigError as exc:
        shift = block.line - prefix.count("\n")

        def doc_line(m: re.Match) -> str:
            n = int(m.group(1))
            return f"{block.path}:{n + shift}:" if n > prefix.count("\n") else m.group(0)

        return [
            f"{block.describe()}: not accepted:\n"
            + re.sub(r"\S*doc\.toml:(\d+):", doc_line, str(exc))
        ]
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return []


# -- LSL configs ----------------------------------------------------------------------------------
LSL_KEYS = {
    "ports": {"MulticastPort", "BasePort", "PortRange", "AllowRandomPorts", "IPv6"},
    "multicast": {
        "ResolveScope",
        "ListenAddress",
        "IPv6MulticastGroup",
        "MachineAddresses",
        "LinkAddresses",
        "SiteAddresses",
        "OrganizationAddresses",
        "GlobalAddresses",
        "TTLOverride",
        "AddressesOverride",
        "Interfaces",
    },
    "lab": {"KnownPeers", "SessionID"},
    "tuning": {
        "UseProtocolVersion",
        "WatchdogCheckInterval",
        "WatchdogTimeThreshold",
        "MulticastMinRTT",
        "MulticastMaxRTT",
        "UnicastMinRTT",
        "UnicastMaxRTT",
        "ContinuousResolveInterval",
        "TimerResolution",
        "MaxCachedQueries",
        "TimeUpdateInterval",
        "TimeUpdateMinProbes",
        "TimeProbeCount",
        "TimeProbeInterval",
        "TimeProbeMaxRTT",
        "OutletBufferReserveMs",
        "OutletBufferReserveSamples",
        "InletBufferReserveMs",
        "InletBufferReserveSamples",
        "SmoothingHalftime",
        "ForceDefaultTimestamps",
        "SendSocketBufferSize",
        "ReceiveSocketBufferSize",
    },
    "log": {"level", "file"},
}  # liblsl's api_config.cpp: every key it reads (it ignores any other key silently)


def run_lsl_config(block: Block, mesh: Mesh) -> Problems:
    """liblsl loads the file without an error, and every key is one liblsl reads."""
    problems, section = [], ""
    for no, line in block.lines():
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", text):
            section = m.group(1)
            if section not in LSL_KEYS:
                problems.append(f"{block.path}:{no}: liblsl has no section [{section}]")
        elif "=" in text:
            key, value = (x.strip() for x in text.split("=", 1))
            if key not in LSL_KEYS.get(section, set()):
                problems.append(
                    f"{block.path}:{no}: liblsl ignores {section}.{key}; known: "
                    f"{', '.join(sorted(LSL_KEYS.get(section, [])))}"
                )
            if ";" in value:
                problems.append(
                    f"{block.path}:{no}: liblsl reads the inline ; as part of the value"
                )
        else:
            problems.append(f"{block.path}:{no}: not `key = value`: {text!r}")
    cfg = mesh.sandbox.base / f"lsl_{block.line}.cfg"
    cfg.write_text(block.text)
    # protocol_version() loads the config and opens no socket (the file may name lab hosts).
    res = subprocess.run(
        [sys.executable, "-c", "import pylsl; pylsl.protocol_version()"],
        env={**mesh.sandbox.env, "LSLAPICFG": str(cfg)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [
        ln
        for ln in res.stderr.splitlines()
        if "ERR|" in ln and re.search(r"config file|rolling back|LSLAPICFG", ln)
    ]
    return problems + [f"{block.describe()}: liblsl: {ln}" for ln in errors]


# -- JSON -----------------------------------------------------------------------------------------
def shape(pattern: Any, actual: Any, where: str = "") -> Problems:
    """Same keys and value types (documented values are examples)."""
    if pattern in (ANY, REST) or pattern is None or actual is None:
        return []
    if pattern == ANY_OBJ or pattern == ANY_LIST:
        return (
            []
            if isinstance(actual, dict if pattern == ANY_OBJ else list)
            else [
                f"{where or 'top'}: documented {'an object' if pattern == ANY_OBJ else 'a list'}, "
                f"got {type(actual).__name__}"
            ]
        )
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return [f"{where or 'top'}: documented an object, got {type(actual).__name__}"]
        more = REST in pattern or "..." in pattern
        keys = {k for k in pattern if k not in (REST, "...")}
        errs = [f"{where}.{k}: documented, missing in the real one" for k in keys - set(actual)]
        if not more:
            errs += [f"{where}.{k}: in the real one, not documented" for k in set(actual) - keys]
        return errs + [
            e for k in keys & set(actual) for e in shape(pattern[k], actual[k], f"{where}.{k}")
        ]
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return [f"{where}: documented a list, got {type(actual).__name__}"]
        return shape(pattern[0], actual[0], f"{where}[0]") if pattern and actual else []
    if _kind(pattern) != _kind(actual):
        return [f"{where}: documented a {_kind(pattern)}, got a {_kind(actual)} ({actual!r})"]
    return []


def run_json(block: Block, mesh: Mesh) -> Problems:
    try:
        doc = parse_pattern(block.text, loose="like" in block.opts)
    except ValueError as exc:
        return [f"{block.describe()}: not JSON: {exc}"]
    if name := block.opts.get("like"):
        if name not in LIKE:
            return [f"{block.describe()}: unknown like={name}; known: {', '.join(LIKE)}"]
        return [f"{block.describe()}: {e}" for e in shape(doc, LIKE[name](mesh))]
    name = block.opts["check"]
    if name not in CHECKS:
        return [f"{block.describe()}: unknown check={name}; known: {', '.join(CHECKS)}"]
    return [f"{block.describe()}: {e}" for e in CHECKS[name](doc, mesh)]


def _log_receiver(mesh: Mesh) -> tuple[Any, list[dict]]:
    from shared_utils.log_receiver import LogReceiver

    got: list[dict] = []
    logs = mesh.sandbox.base / "logs"
    return LogReceiver("127.0.0.1", 0, log_dir=logs, on_record=got.append).start(), got


def _wait(got: list, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def real_log_record(mesh: Mesh) -> Any:
    """A record as the receiver stores it, from a module logging with get_logger."""
    rcv, got = _log_receiver(mesh)
    try:
        code = (
            "from shared_utils.logging import configure_logging, get_logger\n"
            f"configure_logging('mockup_streamer', log_server='127.0.0.1:{rcv.port}', console=False)\n"
            "get_logger('services.mockup_streamer.paced').info('chunk pushed', samples=32, stream='mock_eeg')\n"
        )
        subprocess.run([sys.executable, "-c", code], env=mesh.sandbox.env, check=True, timeout=60)
        _wait(got, 1)
        assert got, "the log receiver got no record"
        return got[0]
    finally:
        rcv.close()


def real_decoder_model(mesh: Mesh) -> Any:
    """A model file's content: FIT and SAVE on the calibration recording."""
    port = mesh.module("services.decoder")
    mesh.file("recording:doc_model_rec.xdf")
    for line in (
        'FIT|{"xdf": "doc_model_rec.xdf"}',
        'SAVE|{"file": "doc_model.json", "overwrite": true}',
    ):
        reply = mesh.send(port, line)
        if not reply["ok"] and "overwrite" in reply["error"]:
            reply = mesh.send(port, line.replace(', "overwrite": true', ""))
        assert reply["ok"], reply
    return json.loads(Path(reply["result"]["file"]).read_text())


def real_callback_event(mesh: Mesh) -> Any:
    """The event line a subscribed connection gets when a module asks for a callback."""
    from shared_utils.server import DefaultServer

    server = DefaultServer(0, pcommand_map={}, name="decoder")
    server.init_server()
    server.start_in_thread()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            f = s.makefile("rb")
            s.sendall(b"SUBSCRIBE\n")
            f.readline()
            server.send_callback("bpod", "SOFT_CODE", code=1)
            return json.loads(f.readline())
    finally:
        server.request_stop()
        server.wait_closed(10)


def real_control_room_status(mesh: Mesh) -> Any:
    """The control room's STATUS result, for a mesh of one module named decoder."""
    from conftest import free_port, stop_process_group, wait_until_up

    cfg = mesh.sandbox.base / "doc_room.toml"
    cfg.write_text(
        "[control_room]\npub_port = 0\nlog_port = 0\n\n"
        '[modules.decoder]\nmodule = "services.decoder"\n\n'
        "[macros.noop]\n[[macros.noop.steps]]\nwait_s = 0\n"
    )
    port = free_port()
    proc = mesh.spawn([sys.executable, "-m", "control_room", "up", str(cfg), "--port", str(port)])
    try:
        wait_until_up(port, proc, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            status = mesh.send(port, "STATUS")["result"]
            # Right after UP the modules table can still be empty: poll until the entry exists.
            decoder = (status.get("modules") or {}).get("decoder") or {}
            if decoder.get("state") == "ready" or time.monotonic() > deadline:
                return status
            time.sleep(0.1)
    finally:
        stop_process_group(proc, timeout=15)
        proc.stdout.close()


def check_bpod_load(doc: Any, mesh: Mesh) -> Problems:
    """The state machine loads into the Bpod service (emulated Bpod 2.x, firmware 23)."""
    port = mesh.module("services.bpod", "--emulator")
    reply = mesh.send(port, "LOAD|" + json.dumps({"state_machine": doc}))
    return [] if reply["ok"] else [f"LOAD refused it: {reply['error']}"]


def check_log_frame(doc: Any, mesh: Mesh) -> Problems:
    """The frame, sent as a foreign module sends it, is stored with its fields."""
    rcv, got = _log_receiver(mesh)
    try:
        body = json.dumps(doc).encode()
        with socket.create_connection(("127.0.0.1", rcv.port), timeout=10) as s:
            s.sendall(struct.pack(">I", len(body)) + body)
        _wait(got, 1)
    finally:
        rcv.close()
    if not got:
        return ["the log receiver stored nothing"]
    rec = got[0]
    return [
        f"stored {k}={rec.get(k)!r}, sent {doc[k]!r} ({rec})"
        for k in ("module", "event", "level", "kv")
        if rec.get(k) != doc[k]
    ]


LIKE: dict[str, Callable[[Mesh], Any]] = {
    "log-record": real_log_record,
    "decoder-model": real_decoder_model,
    "callback-event": real_callback_event,
    "control-room-status": real_control_room_status,
}
CHECKS: dict[str, Callable[[Any, Mesh], Problems]] = {
    "bpod-load": check_bpod_load,
    "log-frame": check_log_frame,
}


# -- layouts --------------------------------------------------------------------------------------
NAME_RE = re.compile(r"^[\w.<>/-]+(/|\.\w+)$")


def tree_paths(block: Block) -> list[tuple[int, Path]]:
    """(line, path) of every file and folder a layout names.

    A line starts with one or more names (a folder ends in /) indented two spaces per level
    under the folder above; what follows two spaces is a description.
    """
    named: list[tuple[int, Path]] = []
    stack: list[tuple[int, Path]] = []
    for no, line in block.lines():
        indent = len(line) - len(line.lstrip())
        head = re.split(r"\s{2,}", line.strip())[0]
        names = head.split()
        if not names or not all(NAME_RE.match(n) for n in names):
            continue  # a description's continuation line
        while stack and stack[-1][0] >= indent:
            stack.pop()
        base = stack[-1][1] if stack else ROOT
        named += [(no, base / name) for name in names]
        if names[-1].endswith("/"):
            stack.append((indent, base / names[-1]))
    return named


def run_tree(block: Block, mesh: Mesh) -> Problems:
    """Every file and folder a layout names exists (names with <placeholders> are skipped)."""
    return [
        f"{block.path}:{no}: {path.relative_to(ROOT)} does not exist"
        for no, path in tree_paths(block)
        if "<" not in str(path) and not path.exists()
    ]


def run_excerpt(block: Block, mesh: Mesh) -> Problems:
    """The block is FILE's text, or runs of its lines in order with a `...` line between them."""
    path = ROOT / block.args[0]
    if not path.is_file():
        return [f"{block.describe()}: {block.args[0]} does not exist"]
    have = [ln.rstrip() for ln in path.read_text().splitlines()]
    runs: list[list[str]] = [[]]
    for line in block.text.splitlines():
        if line.strip() == "...":
            runs.append([])
        else:
            runs[-1].append(line.rstrip())
    at = 0
    for run in filter(None, runs):
        found = next(
            (i for i in range(at, len(have) - len(run) + 1) if have[i : i + len(run)] == run), None
        )
        if found is None:
            first = next((x for x in run if x.strip()), "")
            return [
                f"{block.describe()}: the lines from {first[:60]!r} on are not in "
                f"{block.args[0]} (in this order, after the ones before): copy them from the file"
            ]
        at = found + len(run)
    return []


STATIC_RUNNERS = {
    "toml": run_toml,
    "lsl-config": run_lsl_config,
    "json": run_json,
    "tree": run_tree,
    "excerpt": run_excerpt,
}
