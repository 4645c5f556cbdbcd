"""Export benchmark (issue 16): an hour of 64 ch at 1 kHz plus markers, to BIDS and to NWB.

The session is made here with our XdfWriter (float32 EEG in µV with labels, a marker every
second, Bpod trials every 10 s, a decoder output at 10 Hz), then each arm runs in its own process
so its peak memory (``ru_maxrss``) and wall time are its own:

- ``bids``, ``nwb``: ``shared_utils.export.export_session`` (what ``control-room export`` runs);
- peers, the recipe people copy today (same file, same machine, same run): ``pyxdf.load_xdf`` ->
  ``mne.io.RawArray`` -> ``mne_bids.write_raw_bids(format="BrainVision")``, and
  ``pyxdf.load_xdf`` -> in-memory ``pynwb`` ElectricalSeries (gzip). ``--no-peers`` skips them.

Each export is checked: the BrainVision data file and the NWB dataset must hold every sample.
Targets: under 60 s and under 2 GB per format. Run: ``.venv/bin/python bench/export_bench.py``
(``--minutes 5`` for a quick look). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from _common import ROOT

TARGET_S = 60.0
TARGET_MB = 2048.0


def make_session(path: Path, minutes: float, n_ch: int, srate: float) -> dict:
    """Write the benchmark XDF; returns what it holds."""
    from shared_utils.streams.xdf_format import stream_info_xml
    from shared_utils.streams.xdf_writer import XdfWriter

    n = int(minutes * 60 * srate)
    labels = [f"E{i + 1}" for i in range(n_ch)]
    chans = "".join(
        f"<channel><label>{lab}</label><type>EEG</type><unit>microvolts</unit></channel>"
        for lab in labels
    )
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((int(srate), n_ch)) * 10).astype(np.float32)
    t0 = 5000.0
    with XdfWriter(path, overwrite=True) as w:
        w.add_stream(
            1,
            stream_info_xml(
                "eeg", "EEG", n_ch, srate, "float32", desc_xml=f"<channels>{chans}</channels>"
            ),
        )
        w.add_stream(2, {"name": "eeg_markers", "type": "Markers", "channel_format": "string"})
        w.add_stream(3, {"name": "bpod_events", "type": "Markers", "channel_format": "string"})
        w.add_stream(4, stream_info_xml("decoder_output", "Control", 2, 0.0, "float32"))
        for sid in (1, 2, 3, 4):
            w.write_clock_offset(sid, t0, 0.0)
        step = int(srate)  # one second per chunk, as a recorder flushing every second would
        for k in range(0, n, step):
            m = min(step, n - k)
            ts = t0 + (k + np.arange(m)) / srate
            block = noise[:m] + np.float32(k % 97)
            w.write_samples(1, ts, block)
            sec = k // step
            w.write_samples(2, ts[:1] + 0.0005, [["high" if sec % 8 < 4 else "low"]])
            if sec % 10 == 0:
                w.write_samples(3, ts[:1], [[f"trial_start:{sec // 10 + 1}"]])
                w.write_samples(3, ts[:1] + 2.0, [["state:ITI"]])
                w.write_samples(3, ts[:1] + 3.0, [["state:exit"]])
                w.write_samples(3, ts[:1] + 3.0, [[f"trial_end:{sec // 10 + 1}"]])
            dts = ts[0] + np.arange(10) * 0.1
            w.write_samples(4, dts, np.column_stack([np.full(10, sec % 2), rng.random(10)]))
            if sec % 60 == 0:
                for sid in (1, 2, 3, 4):
                    w.write_clock_offset(sid, ts[0], 0.0)
                w.write_boundary()
    return {"samples": n, "channels": n_ch, "srate": srate, "bytes": path.stat().st_size}


# -- arms (each runs in a child process) -------------------------------------------------------


def arm_export(fmt: str, xdf: Path, out: Path) -> dict:
    from shared_utils.export import export_session

    res = export_session(xdf, to=fmt, out=out)
    return {"files": len(res.files), "skipped": len(res.skipped)}


def arm_peer_bids(xdf: Path, out: Path) -> dict:
    import mne
    import mne_bids
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(xdf))
    eeg = next(s for s in streams if s["info"]["name"][0] == "eeg")
    labels = [c["label"][0] for c in eeg["info"]["desc"][0]["channels"][0]["channel"]]
    info = mne.create_info(labels, float(eeg["info"]["nominal_srate"][0]), "eeg")
    raw = mne.io.RawArray(eeg["time_series"].T * 1e-6, info, verbose=False)
    path = mne_bids.BIDSPath(subject="01", task="bench", root=out)
    mne_bids.write_raw_bids(raw, path, allow_preload=True, format="BrainVision", verbose=False)
    return {}


def arm_peer_nwb(xdf: Path, out: Path) -> dict:
    import datetime as dt
    import uuid

    import pyxdf
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    streams, _ = pyxdf.load_xdf(str(xdf))
    eeg = next(s for s in streams if s["info"]["name"][0] == "eeg")
    nwb = NWBFile(
        session_description="bench",
        identifier=str(uuid.uuid4()),
        session_start_time=dt.datetime.now(dt.UTC),
    )
    dev = nwb.create_device(name="amp")
    group = nwb.create_electrode_group(name="eeg", description="", location="unknown", device=dev)
    for _ in range(eeg["time_series"].shape[1]):
        nwb.add_electrode(group=group, location="unknown")
    region = nwb.create_electrode_table_region(list(range(eeg["time_series"].shape[1])), "all")
    nwb.add_acquisition(
        ElectricalSeries(
            name="eeg",
            data=H5DataIO(
                eeg["time_series"],
                compression="gzip",
                compression_opts=4,
                shuffle=True,
                chunks=True,
            ),
            electrodes=region,
            rate=float(eeg["info"]["nominal_srate"][0]),
            conversion=1e-6,
        )
    )
    out.mkdir(parents=True)
    with NWBHDF5IO(str(out / "peer.nwb"), "w") as io:
        io.write(nwb)
    return {}


ARMS = {
    "bids": lambda x, o: arm_export("bids", x, o),
    "nwb": lambda x, o: arm_export("nwb", x, o),
    "peer_bids": arm_peer_bids,
    "peer_nwb": arm_peer_nwb,
}


def child(arm: str, xdf: Path, out: Path) -> None:
    t = time.perf_counter()
    extra = ARMS[arm](xdf, out)
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_mb": round(peak_mb), **extra}))


def run_arm(arm: str, xdf: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", arm, "--xdf", str(xdf), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def samples_written(arm: str, out: Path, n_ch: int) -> int | None:
    """Samples in the exported data file (the whole recording must be there)."""
    if "bids" in arm:
        eeg = next(out.rglob("*.eeg"), None)
        return eeg.stat().st_size // (4 * n_ch) if eeg else None
    import h5py

    nwb = next(out.rglob("*.nwb"), None)
    if nwb is None:
        return None
    with h5py.File(nwb, "r") as f:
        return int(f["acquisition"]["eeg"]["data"].shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--srate", type=float, default=1000.0)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--xdf", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, Path(a.xdf), Path(a.out))
        return
    work = Path(a.dir or tempfile.mkdtemp(prefix="export-bench-", dir=ROOT))
    work.mkdir(parents=True, exist_ok=True)
    try:
        xdf = work / "session.xdf"
        t = time.perf_counter()
        made = make_session(xdf, a.minutes, a.channels, a.srate)
        print(
            f"session: {a.minutes:g} min, {a.channels} ch @ {a.srate:g} Hz, "
            f"{made['bytes'] / 1e6:.0f} MB XDF, written in {time.perf_counter() - t:.1f} s"
        )
        arms = ["bids", "nwb"] + ([] if a.no_peers else ["peer_bids", "peer_nwb"])
        res: dict[str, dict] = {}
        for arm in arms:
            out = work / f"out_{arm}"
            r = run_arm(arm, xdf, out)
            if "error" not in r:
                r["complete"] = samples_written(arm, out, a.channels) == made["samples"]
            res[arm] = r
            print(f"  {arm:<10} {r}")
            shutil.rmtree(out, ignore_errors=True)
        ok = all(
            res[f].get("complete")
            and res[f]["seconds"] < TARGET_S
            and res[f]["peak_mb"] < TARGET_MB
            for f in ("bids", "nwb")
        )
        for f in ("bids", "nwb"):
            peer = res.get(f"peer_{f}", {})
            if "seconds" in res[f] and "seconds" in peer:
                print(
                    f"  {f}: {peer['seconds'] / res[f]['seconds']:.2f}x the peer's speed, "
                    f"{peer['peak_mb'] / res[f]['peak_mb']:.2f}x less memory"
                )
        print(
            json.dumps(
                {
                    "bench": "export",
                    "session": {
                        "minutes": a.minutes,
                        "channels": a.channels,
                        "srate": a.srate,
                        "xdf_mb": round(made["bytes"] / 1e6),
                    },
                    "target": {"seconds": TARGET_S, "peak_mb": TARGET_MB},
                    **res,
                    "ok": ok,
                },
                separators=(",", ":"),
            )
        )
    finally:
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
