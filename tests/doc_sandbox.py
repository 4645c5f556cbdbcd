"""Where documented examples run: a scratch folder that looks like the repository, the modules
they talk to (started once per test file), and the streams and files they expect.

Why a sandbox: the docs use paths relative to the repository (`config/default.toml`,
`.venv/bin/python`, `data/rec.xdf`) and write files (`data/`, `~/.mesh-token`, `/tmp/now.png`).
The sandbox links the repository's folders in, and gives the examples their own `data/`, HOME
and `/tmp`, so nothing they write lands in the checkout or the user's home.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, stop_process_group, wait_until_up
from doc_blocks import MESH_PORTS, ROOT, Block, parse_file

LINKED = (
    ".venv",
    "config",
    "examples",
    "services",
    "shared_utils",
    "control_room",
    "tools",
    "tests",
    "bench",
    "Makefile",
    "pyproject.toml",
    "compose.yaml",
)
AMP_LABELS = ["Fz", "Cz", "Pz", "Oz", "C3", "C4", "P3", "P4"]  # an amplifier's 10-20 labels
NEEDS_DISPLAY = {"services.presenter"}  # started with $DISPLAY, or an Xvfb of the test file's
PORT_RE = re.compile(r"(?<![\d.])(" + "|".join(map(str, MESH_PORTS)) + r")(?!\d)")


class Sandbox:
    """A scratch copy of the repository's layout (symlinks) with its own data/, HOME and /tmp."""

    def __init__(self, base: Path) -> None:
        self.base = base
        for name in LINKED:
            if (ROOT / name).exists() and not (base / name).exists():
                (base / name).symlink_to(ROOT / name)
        for sub in ("data", "home", "tmp"):
            (base / sub).mkdir(exist_ok=True)
        bindir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "HOME": str(base / "home"),
            "MESH_DATA_DIR": str(base),  # relative names resolve here, with or without data/
            "MESH_LOG_SERVER": "none",
            "MPLBACKEND": "Agg",
            "LSLAPICFG": str(ROOT / "config" / "lsl_loopback.cfg"),
            "MESH_SHM_SESSION": f"doc{os.getpid()}",  # shared-memory rings of this run only
        }

    def rewrite(self, text: str) -> str:
        """Documented /tmp paths go to the sandbox's tmp/ (examples never write outside)."""
        return re.sub(r"(?<![\w.])/tmp/", f"{self.base}/tmp/", text)


class Mesh:
    """Modules, LSL streams and files the examples of one test file need; reused, then stopped."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.procs: dict[str, tuple[subprocess.Popen, int]] = {}
        self.outlets: dict[str, Any] = {}
        self.xvfb: tuple[str, Any] | None = None

    # -- modules ----------------------------------------------------------------------------------
    def module(self, module: str, *args: str, owner: str = "") -> int:
        """The port of a running ``python -m module args``; started (again) when not running.
        With an ``owner`` (a transcript: it changes the module's state), an instance of its own
        that :meth:`release` stops."""
        key = f"{owner}|" * bool(owner) + " ".join((module, *args))
        if key in self.procs and self.procs[key][0].poll() is None:
            return self.procs[key][1]
        port, env = free_port(), self.sandbox.env
        if module in NEEDS_DISPLAY:
            env = {**env, "DISPLAY": self.display()}
        proc = self.spawn([sys.executable, "-m", module, "--port", str(port), *args], env)
        self.procs[key] = (proc, port)
        wait_until_up(port, proc, timeout=60)
        return port

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """A process in the sandbox, in a process group of its own, its output in a pipe."""
        return subprocess.Popen(
            argv,
            cwd=self.sandbox.base,
            env=env or self.sandbox.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def display(self) -> str:
        """$DISPLAY, or an Xvfb started for this test file."""
        if self.xvfb is None:
            from shared_utils.platform.xvfb import display_or_xvfb

            self.xvfb = display_or_xvfb()
        return self.xvfb[0]

    def release(self, owner: str) -> None:
        """Stop the modules started for ``owner``."""
        for key in [k for k in self.procs if k.startswith(f"{owner}|")]:
            proc, _ = self.procs.pop(key)
            stop_process_group(proc)
            if proc.stdout:
                proc.stdout.close()

    def send(self, port: int, line: str, timeout: float = 60.0) -> dict:
        """One request on a fresh connection; the reply as a dict."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            return json.loads(s.makefile("rb").readline())

    # -- streams -----------------------------------------------------------------------------------
    def stream(self, spec: str) -> None:
        """Make an LSL stream live. ``NAME`` or ``NAME@RATE``: a regular 8-channel float32 stream
        from a mockup streamer of its own (500 Hz unless RATE), labelled ch1..ch8 when the name
        starts with mock_eeg (with markers on ``<name>_markers``), else Fz Cz Pz Oz C3 C4 P3 P4
        like an amplifier; a name ending in ``_output``: an irregular float outlet in this process
        with one sample (a decoder's output)."""
        name, _, rate = spec.partition("@")
        if name in self.outlets:
            return
        if name.endswith("_output"):
            import pylsl

            info = pylsl.StreamInfo(name, "Control", 1, 0.0, "float32", f"doc-test-{name}")
            outlet = pylsl.StreamOutlet(info)
            outlet.push_sample([0.5])
            self.outlets[name] = outlet
            return
        kwargs: dict[str, Any] = {"stream": name, "srate": float(rate or 500)}
        if not name.startswith("mock_eeg"):
            kwargs.update(channel_names=AMP_LABELS, markers=False)
        # An instance of its own: the examples' mockup streamer keeps its stream names free.
        port = self.module("services.mockup_streamer", "--name", "doc_streams")
        reply = self.send(port, "START|" + json.dumps(kwargs))
        assert reply["ok"], f"could not start the stream {spec}: {reply}"
        self.outlets[name] = port

    # -- files -------------------------------------------------------------------------------------
    def file(self, spec: str, doc: str = "", home: Path | None = None) -> Path:
        """At PATH inside the sandbox: ``recording:PATH`` (mock_eeg + mock_eeg_markers, 24 s, 8 ch
        at 500 Hz, labelled ch1..ch8 like the mockup streamer: enough to FIT), ``cued:PATH`` (an
        amplifier's calibration: MyAmp-EEG at 250 Hz, AMP_LABELS, with the presenter's cue
        markers), ``session:FOLDER`` (a session folder as tests/export_data.py writes it), or
        from the documentation file ``doc``: ``block:LINE:PATH`` (the text of its block at LINE;
        /home/me/, the docs' example home, is ``home``) and ``edit:LINE:FOLDER`` (the example
        its ``edit`` block at LINE changes, edited). A PATH starting with ~/ is in ``home``."""
        what, _, rel = spec.partition(":")
        line = 0
        if what in ("block", "edit"):
            number, _, rel = rel.partition(":")
            line = int(number)
        path = home / rel[2:] if home and rel.startswith("~/") else self.sandbox.base / rel
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        if line:
            source = self.doc_block(doc, line)
            if what == "edit":
                from doc_edits import apply_edit

                problems = apply_edit(source, path)
                assert not problems, "\n".join(problems)
            else:
                text = self.sandbox.rewrite(source.text)
                path.write_text(text.replace("/home/me/", f"{home or self.sandbox.base}/"))
        elif what == "recording":
            write_recording(path)
        elif what == "cued":
            write_cued_recording(path)
        elif what == "session":
            from export_data import make_session

            make_session(path)
        else:
            raise AssertionError(
                f"unknown file fixture {spec!r}: recording:, cued:, session:, block:, edit:"
            )
        return path

    @staticmethod
    def doc_block(doc: str, line: int) -> Block:
        """The block whose fence opens at ``line`` of the documentation file ``doc``."""
        found = [b for b in parse_file(ROOT / doc) if b.line == line]
        assert found, f"{doc}:{line}: no fenced block opens there (a file fixture names it)"
        return found[0]

    def ports(self, text: str, mapping: dict[int, int]) -> tuple[str, dict[int, int]]:
        """Replace every mesh port in ``text``: those in ``mapping`` by theirs, others by a port
        nothing listens on (an example never reaches a real mesh running on this machine)."""
        mapping = dict(mapping)

        def sub(m: re.Match) -> str:
            doc = int(m.group(1))
            if doc not in mapping:
                mapping[doc] = free_port()
            return str(mapping[doc])

        return PORT_RE.sub(sub, text), mapping

    def close(self) -> None:
        for proc, _ in self.procs.values():
            stop_process_group(proc)
            if proc.stdout:
                proc.stdout.close()
        self.procs.clear()
        self.outlets.clear()
        if self.xvfb is not None and self.xvfb[1] is not None:
            self.xvfb[1].stop()
        self.xvfb = None

    def output_of(self, module: str) -> str:
        """The console output of a module that has exited (for failure messages)."""
        for key, (proc, _) in self.procs.items():
            if module in key and proc.poll() is not None and proc.stdout:
                return proc.stdout.read()[-3000:]
        return ""


def write_cued_recording(path: Path) -> None:
    """An amplifier's calibration run: 10 presenter trials (cue 1 s, stimulus 4 s, iti 2 s),
    "relax" (high alpha) and "focus" (low alpha) in turn, marked as the presenter marks them."""
    t0, per = 100.0, 7.0
    cues = []
    for k in range(10):
        cue = "relax" if k % 2 == 0 else "focus"
        cues += [(t0 + per * k, f"cue:{cue}"), (t0 + per * k + 1, f"stimulus:{cue}")]
        cues.append((t0 + per * k + 5, "iti"))
    write_recording(
        path, 10 * per, 250.0, "MyAmp-EEG", per, AMP_LABELS, ("presenter_markers", cues)
    )


def write_recording(
    path: Path,
    seconds: float = 24.0,
    srate: float = 500.0,
    name: str = "mock_eeg",
    period_s: float = 4.0,
    labels: list[str] | None = None,
    markers: tuple[str, list[tuple[float, str]]] | None = None,
) -> None:
    """A calibration recording like the mockup streamer's: alpha high/low every ``period_s``
    from t=100 s, with the state markers on ``<name>_markers`` unless ``markers`` are given."""
    import numpy as np

    from services.mockup_streamer.synth import StateSchedule, SyntheticEEG
    from shared_utils.streams.xdf_writer import XdfWriter

    n = int(seconds * srate)
    schedule = StateSchedule(srate=srate, period_s=period_s)
    eeg = SyntheticEEG(8, srate, schedule, seed=1).generate(0, n)
    t0 = 100.0
    ts = t0 + np.arange(n) / srate
    if markers is None:  # the state switches: (first sample, state), sample 0 included
        markers = (f"{name}_markers", [(ts[k], s) for k, s in schedule.switches(0, n)])
    eeg_header = {
        "name": name,
        "type": "EEG",
        "channel_count": 8,
        "nominal_srate": srate,
        "channel_format": "float32",
        "channel_labels": labels or [f"ch{i + 1}" for i in range(8)],
    }
    marker_header = {
        "name": markers[0],
        "type": "Markers",
        "channel_count": 1,
        "nominal_srate": 0.0,
        "channel_format": "string",
    }
    with XdfWriter(str(path)) as w:
        w.add_stream(1, eeg_header)
        w.add_stream(2, marker_header)
        for sid in (1, 2):
            w.write_clock_offset(sid, collection_time=t0, offset_value=0.0)
        for i in range(0, n, 500):
            w.write_samples(1, ts[i : i + 500], eeg[i : i + 500])
        w.write_samples(2, [t for t, _ in markers[1]], [[m] for _, m in markers[1]])


@pytest.fixture(scope="module")
def doc_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One sandbox and one set of modules per test file (import it into the test file)."""
    mesh = Mesh(Sandbox(tmp_path_factory.mktemp("docs")))
    yield mesh
    mesh.close()
