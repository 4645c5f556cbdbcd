"""RingBuffer (pure) and StreamWatcher against real loopback LSL outlets in this process."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest
from helpers import poll_until
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_utils.stream_watcher import StreamNotFoundError, StreamWatcher, list_streams
from shared_utils.streams.ring_buffer import RingBuffer


def counter_chunk(k0: int, n: int, n_ch: int, dtype=np.float32) -> np.ndarray:
    """Channel 0 counts samples; the others are multiples, so any mix-up shows."""
    k = np.arange(k0, k0 + n, dtype=np.float64)[:, None]
    return (k * np.arange(1, n_ch + 1)).astype(dtype)


def make_outlet(name: str, n_ch: int = 4, srate: float = 1000.0, fmt=pylsl.cf_float32, labels=None):
    info = pylsl.StreamInfo(name, "EEG", n_ch, srate, fmt, f"{name}-src")
    if labels:
        info.set_channel_labels(labels)
    return pylsl.StreamOutlet(info)


# ------------------------------------------------------------------------------ RingBuffer
def test_ring_window_is_view_until_it_wraps_then_copy():
    rb = RingBuffer(keep=10, n_channels=2, slack=4)
    rb.add(counter_chunk(0, 6, 2), np.arange(6.0))
    d, t = rb.last(4)
    assert np.shares_memory(d, rb.data)
    assert np.shares_memory(t, rb.ts)
    assert d[:, 0].tolist() == [2, 3, 4, 5]
    assert t.tolist() == [2, 3, 4, 5]
    rb.add(counter_chunk(6, 10, 2), np.arange(6.0, 16.0))  # 16 written into 14 rows: wraps
    d, t = rb.last(10)
    assert d[:, 0].tolist() == list(range(6, 16))
    assert t.tolist() == list(range(6, 16))
    assert not np.shares_memory(d, rb.data)
    assert rb.total == 16
    assert rb.fill == 10


def test_ring_mirror_makes_wrapped_windows_views_and_shifts_both_halves():
    rb = RingBuffer(keep=10, n_channels=1, slack=2, mirror=True)
    rb.add(np.arange(16.0)[:, None], np.arange(16.0))  # capacity 12: the newest rows wrap
    d, t = rb.last(10)
    assert d.ravel().tolist() == list(range(6, 16))
    assert np.shares_memory(d, rb._mem)
    rb.shift_timestamps(0.5)
    assert rb.last(10)[1].tolist() == [x + 0.5 for x in range(6, 16)]
    assert rb.last(3)[1].tolist() == [13.5, 14.5, 15.5]
    rb.shift_timestamps(1.0, newest=2)  # only samples since a re-attach get the new offset
    assert rb.last(3)[1].tolist() == [13.5, 15.5, 16.5]
    lazy = RingBuffer(keep=10, n_channels=1, slack=2, mirror=True)
    lazy.add(np.arange(16.0)[:, None], np.arange(16.0))
    lazy.shift_timestamps(0.5)  # before any read has brought the mirror rows up to date
    d, t = lazy.last(10)
    assert d.ravel().tolist() == list(range(6, 16))
    assert t.tolist() == [x + 0.5 for x in range(6, 16)]
    assert np.shares_memory(d, lazy._mem)


def test_ring_fill_never_pads_and_copy_is_independent():
    rb = RingBuffer(keep=100, n_channels=3)
    assert rb.last(50)[0].shape == (0, 3)
    rb.add(counter_chunk(0, 7, 3), np.arange(7.0))
    d, _ = rb.last(50, copy=True)
    assert d.shape == (7, 3)
    assert rb.fill == 7
    d[:] = -1
    assert rb.last(1)[0][0, 0] == 6


def test_ring_pop_new_exact_and_overflow_counted():
    rb = RingBuffer(keep=5, n_channels=1, slack=2)
    rb.add(np.arange(3.0)[:, None], np.arange(3.0))
    assert rb.n_new == 3
    d, _ = rb.pop_new()
    assert d.ravel().tolist() == [0, 1, 2]
    assert rb.n_new == 0
    assert rb.pop_new()[0].shape == (0, 1)
    rb.add(np.arange(3.0, 12.0)[:, None], np.arange(3.0, 12.0))  # 9 new, only 5 kept
    assert rb.n_new == 5
    assert rb.n_unread_lost == 4
    assert rb.pop_new()[0].ravel().tolist() == [7, 8, 9, 10, 11]


def test_ring_mark_read_keeps_newest_and_since_selects_by_time():
    rb = RingBuffer(keep=10, n_channels=1)
    rb.add(np.arange(6.0)[:, None], np.array([0, 1, 2, 5, 5.5, 6.0]))
    rb.mark_read(2)
    assert rb.n_new == 2
    rb.mark_read(0)
    assert rb.n_new == 0
    _, t = rb.since(1.0)
    assert t.tolist() == [5, 5.5, 6.0]


def test_ring_strings_and_write_slot_commit():
    rb = RingBuffer(keep=3, n_channels=1, dtype=object)
    rb.add([["a"], ["bb"], ["c"], ["d"]], [1.0, 2.0, 3.0, 4.0])
    assert rb.last(None)[0].ravel().tolist() == ["bb", "c", "d"]
    num = RingBuffer(keep=8, n_channels=2, slack=4)
    slot = num.write_slot(100)
    assert slot.shape == (4, 2)
    slot[:3] = counter_chunk(0, 3, 2)
    assert num.fill == 0  # nothing visible before commit
    num.commit(3, np.arange(3.0))
    assert num.last(None)[0][:, 0].tolist() == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(
    keep=st.integers(1, 40),
    slack=st.integers(1, 16),
    chunks=st.lists(st.integers(0, 60), min_size=1, max_size=30),
    use_slot=st.booleans(),
    mirror=st.booleans(),
    read_every=st.integers(1, 4),
)
def test_ring_matches_reference_for_any_chunking(keep, slack, chunks, use_slot, mirror, read_every):
    """Whatever the chunk sizes, the window is the tail of everything written, in order; also
    when reads are sparse (the mirror is brought up to date lazily, by the read that needs it)."""
    rb = RingBuffer(keep=keep, n_channels=2, slack=slack, mirror=mirror)
    k = 0
    popped: list[float] = []
    for i, n in enumerate(chunks):
        if use_slot:
            left = n
            while left:
                slot = rb.write_slot(left)
                m = len(slot)
                slot[:] = counter_chunk(k, m, 2)
                rb.commit(m, np.arange(k, k + m, dtype=float))
                k, left = k + m, left - m
        else:
            rb.add(counter_chunk(k, n, 2), np.arange(k, k + n, dtype=float))
            k += n
        if n % 3 == 0:
            popped.extend(rb.pop_new()[0][:, 0].tolist())
        if i % read_every and i != len(chunks) - 1:
            continue
        for want in (keep + 5, keep, keep // 2, 1):
            d, t = rb.last(want)
            exp = list(range(max(0, k - min(want, keep)), k))
            assert d[:, 0].tolist() == exp
            assert t.tolist() == exp
            assert (d[:, 1] == 2 * d[:, 0]).all()
            if mirror and len(d):
                assert np.shares_memory(d, rb._mem)  # always a view with a mirror
    assert rb.total == k
    assert popped == sorted(set(popped))  # no duplicates, in order


# ---------------------------------------------------------------------------- StreamWatcher
@pytest.mark.parametrize("direct", [True, False], ids=["direct_pull", "pylsl_pull_chunk"])
def test_connect_by_name_background_counter_continuity(lsl_name, direct):
    out = make_outlet(lsl_name, n_ch=4, labels=["Fz", "Cz", "Pz", "Oz"])
    with StreamWatcher(lsl_name, buffer_size_s=2.0, background=True, direct_pull=direct) as sw:
        sw.connect_to_stream()
        assert sw.ch_names == ["Fz", "Cz", "Pz", "Oz"]
        assert sw.srate == 1000.0
        assert sw.n_channels == 4
        k, t0 = 0, pylsl.local_clock()
        for _ in range(300):
            out.push_chunk(counter_chunk(k, 10, 4), t0 + (k + 9) / 1000)  # stamps the last sample
            k += 10
        assert sw.wait_for_samples(3000, timeout_s=10)
        d, t = sw.window(seconds=1.0)
        assert d.shape == (1000, 4)
        assert np.array_equal(d[:, 0], np.arange(2000, 3000))
        assert np.array_equal(d[:, 3], 4 * np.arange(2000, 3000))
        assert np.allclose(t, t0 + np.arange(2000, 3000) / 1000, atol=1e-9, rtol=0)
        full = sw.window()
        assert full[0].shape[0] == sw.fill == 2000
        assert sw.total == 3000
        assert sw.window(samples=5)[0][:, 0].tolist() == [2995, 2996, 2997, 2998, 2999]


def test_pop_new_from_reader_thread_sees_every_sample_once(lsl_name):
    out = make_outlet(lsl_name, n_ch=2, srate=5000.0)
    seen: list[np.ndarray] = []
    with StreamWatcher(lsl_name, buffer_size_s=5.0, background=True) as sw:
        sw.connect_to_stream()
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                seen.append(sw.pop_new()[0][:, 0].copy())
                time.sleep(0.0005)

        th = threading.Thread(target=reader)
        th.start()
        k = 0
        for _ in range(200):
            out.push_chunk(counter_chunk(k, 50, 2))
            k += 50
            time.sleep(0.0005)
        assert sw.wait_for_samples(k, timeout_s=10)
        assert poll_until(lambda: sw.n_new == 0, 5)
        stop.set()
        th.join()
        seen.append(sw.pop_new()[0][:, 0])
    got = np.concatenate(seen)
    assert np.array_equal(got, np.arange(k)), "pop_new lost, duplicated or reordered samples"


def test_polling_reader_pulls_what_liblsl_holds_without_the_thread(lsl_name):
    """A read moves what liblsl already holds into the ring itself (no wait for the thread)."""
    out = make_outlet(lsl_name, n_ch=3)
    with StreamWatcher(lsl_name, 2.0, background=True, pull_timeout_s=0.01, read_idle_s=60.0) as sw:
        sw.connect_to_stream()
        assert sw.window(samples=1)[0].shape == (0, 3)  # a read: the thread steps aside
        assert poll_until(lambda: sw._reader_mode, 5)
        t0 = pylsl.local_clock()
        out.push_chunk(counter_chunk(0, 20, 3), [t0 + i / 1000 for i in range(20)])
        assert poll_until(lambda: sw.inlet.samples_available() >= 20, 5)
        assert sw.ring_buffer.total == 0  # in liblsl, not in the ring: nobody has pulled yet
        assert sw.n_new == 20  # this read pulled it
        out.push_chunk(counter_chunk(20, 10, 3), [t0 + (20 + i) / 1000 for i in range(10)])
        assert poll_until(lambda: sw.inlet.samples_available() >= 10, 5)
        d, t = sw.pop_new()
        assert d[:, 0].tolist() == list(range(30))
        assert np.array_equal(d[:, 2], 3 * np.arange(30))
        assert np.all(np.diff(t) > 0)
        assert sw.window(samples=5)[0][:, 0].tolist() == [25, 26, 27, 28, 29]
        assert sw._reader_mode  # the thread never had to wake up for any of it


def test_idle_reader_hands_pulling_back_to_the_thread(lsl_name):
    out = make_outlet(lsl_name, n_ch=2)
    with StreamWatcher(lsl_name, 2.0, background=True, read_idle_s=0.05) as sw:
        sw.connect_to_stream()
        sw.window(samples=1)  # one read, then the reader goes idle
        out.push_chunk(counter_chunk(0, 50, 2))
        # ring_buffer.total never pulls: only the thread can have moved these samples.
        assert poll_until(lambda: sw.ring_buffer.total == 50, 5)
        assert poll_until(lambda: not sw._reader_mode, 5)
        out.push_chunk(counter_chunk(50, 50, 2))
        assert poll_until(lambda: sw.ring_buffer.total == 100, 5)
        assert sw.ring_buffer.last()[0][:, 0].tolist() == list(range(100))


def test_pull_on_read_off_leaves_pulling_to_the_thread(lsl_name):
    out = make_outlet(lsl_name, n_ch=1)
    with StreamWatcher(lsl_name, 2.0, background=True, pull_on_read=False) as sw:
        sw.connect_to_stream()
        assert sw.update() == 0
        out.push_chunk(counter_chunk(0, 40, 1))
        assert sw.wait_for_samples(40, 5)
        assert sw.pop_new()[0][:, 0].tolist() == list(range(40))
        assert not sw._reader_mode


def test_readers_and_thread_pulling_together_keep_order(lsl_name):
    """Several reading threads and the acquisition thread all pull: no sample is lost, doubled or
    reordered, and every window is consecutive with increasing timestamps."""
    out = make_outlet(lsl_name, n_ch=2, srate=5000.0)
    popped: list[np.ndarray] = []
    bad: list[str] = []
    with StreamWatcher(lsl_name, 5.0, background=True, read_idle_s=0.002) as sw:
        sw.connect_to_stream()
        stop = threading.Event()

        def popper() -> None:
            while not stop.is_set():
                popped.append(sw.pop_new()[0][:, 0].copy())
                time.sleep(0.001)

        def windower() -> None:
            while not stop.is_set():
                d, t = sw.window(samples=200, copy=True)
                if len(t) > 1 and (np.any(np.diff(d[:, 0]) != 1) or np.any(np.diff(t) <= 0)):
                    bad.append(f"window {d[:, 0].tolist()[:5]}...")
                sw.n_new  # noqa: B018  (a pulling read too)
                time.sleep(0.0003)

        ths = [threading.Thread(target=popper), threading.Thread(target=windower)]
        for th in ths:
            th.start()
        k, t0 = 0, pylsl.local_clock()
        for i in range(300):
            out.push_chunk(counter_chunk(k, 25, 2), [t0 + (k + j) / 5000 for j in range(25)])
            k += 25
            if i % 3 == 0:
                time.sleep(0.004)  # pauses: the thread takes over, then the readers again
        assert sw.wait_for_samples(k, timeout_s=10)
        stop.set()
        for th in ths:
            th.join()
        popped.append(sw.pop_new()[0][:, 0])
    assert not bad, bad[:3]
    assert np.array_equal(np.concatenate(popped), np.arange(k))


def test_connect_by_predicate_and_list_streams(lsl_name):
    out = make_outlet(lsl_name, n_ch=3, srate=250.0, fmt=pylsl.cf_int16)
    with StreamWatcher(predicate=f"name='{lsl_name}' and type='EEG'", timeout_s=5) as sw:
        sw.connect_to_stream()
        assert sw.name == lsl_name
        assert sw.ch_names == ["ch1", "ch2", "ch3"]
        out.push_chunk(counter_chunk(0, 20, 3, np.int16))
        assert sw.wait_for_samples(20, timeout_s=5)  # manual mode: pulls while waiting
        d, _ = sw.window()
        assert d.dtype == np.int16
        assert d[:, 0].tolist() == list(range(20))
    mine = [s for s in list_streams(1.0) if s["name"] == lsl_name]
    assert mine
    assert mine[0]["format"] == "int16"
    assert mine[0]["channels"] == 3
    assert mine[0]["srate"] == 250.0
    assert mine[0]["type"] == "EEG"


def test_missing_stream_times_out_and_lists_visible(lsl_name):
    _other = make_outlet(lsl_name + "_present")
    sw = StreamWatcher(lsl_name + "_absent", timeout_s=0.5)
    with pytest.raises(StreamNotFoundError) as ei:
        sw.connect_to_stream()
    assert lsl_name + "_absent" in str(ei.value)
    assert lsl_name + "_present" in ei.value.visible
    sw.close()


def test_dareplane_names_manual_update(lsl_name):
    out = make_outlet(lsl_name, n_ch=2, srate=100.0)
    sw = StreamWatcher(lsl_name, 1.0)  # Dareplane signature: (name, buffer_size_s)
    sw.connect_to_stream()
    out.push_chunk(counter_chunk(0, 30, 2))
    assert poll_until(lambda: sw.update() > 0 or sw.total >= 30, 5)
    assert poll_until(lambda: (sw.update(), sw.total)[1] >= 30, 5)
    assert sw.n_new == 30
    assert sw.curr_i == 30
    assert sw.unfold_buffer()[-sw.n_new :, 0].tolist() == list(range(30))
    assert len(sw.unfold_buffer_t()) == 30
    sw.n_new = 0
    assert sw.n_new == 0
    assert sw.buffer.shape[1] == 2
    assert len(sw.buffer_t) == sw.buffer.shape[0]
    out.push_chunk(counter_chunk(30, 5, 2))
    assert poll_until(lambda: (sw.update(), sw.n_new)[1] == 5, 5)
    assert sw.pop_new()[0][:, 0].tolist() == [30, 31, 32, 33, 34]
    sw.close()
    sw.close()  # idempotent


def test_gap_detection_counts_holes_in_timestamps(lsl_name):
    out = make_outlet(lsl_name, n_ch=1, srate=100.0)
    with StreamWatcher(lsl_name, 5.0, background=True) as sw:
        sw.connect_to_stream()
        t0 = pylsl.local_clock()
        ts = [t0 + i / 100 for i in range(50)] + [t0 + (i + 30) / 100 for i in range(50, 80)]
        out.push_chunk(counter_chunk(0, 80, 1), ts)
        assert sw.wait_for_samples(80, 5)
        assert sw.gaps == 1
        assert sw.last_gap["missing_est"] == 30
        out.push_chunk(counter_chunk(80, 10, 1), [t0 + (i + 30) / 100 for i in range(80, 90)])
        assert sw.wait_for_samples(90, 5)
        assert sw.gaps == 1


def test_string_marker_stream_irregular_by_count(lsl_name):
    info = pylsl.StreamInfo(lsl_name, "Markers", 1, 0.0, pylsl.cf_string, "m")
    out = pylsl.StreamOutlet(info)
    with StreamWatcher(lsl_name, irregular_size=3, background=True) as sw:
        sw.connect_to_stream()
        for w in ["high", "low", "high", "low"]:
            out.push_sample([w])
        assert sw.wait_for_samples(4, 5)
        d, t = sw.window()
        assert d.ravel().tolist() == ["low", "high", "low"]
        assert len(t) == 3
        assert sw.pop_new()[0].ravel().tolist() == ["low", "high", "low"]


def test_clock_sync_offset_arrives_and_dejitter_smooths(lsl_name):
    out = make_outlet(lsl_name, n_ch=1, srate=500.0)
    with StreamWatcher(lsl_name, 5.0, background=True, clock_sync=True, dejitter=True) as sw:
        sw.connect_to_stream()
        assert sw.clock_offset is None or abs(sw.clock_offset) < 0.01
        k = 0
        while not poll_until(lambda: sw.clock_offset is not None, 0.05, every=0.01) and k < 5000:
            out.push_chunk(counter_chunk(k, 10, 1))
            k += 10
        assert sw.clock_offset is not None
        assert abs(sw.clock_offset) < 0.005
        assert sw.stats()["clock_offset"] == sw.clock_offset


def test_lost_stream_is_flagged_without_recover(lsl_name):
    out = make_outlet(lsl_name, n_ch=1, srate=100.0)
    with StreamWatcher(lsl_name, 1.0, background=True, recover=False) as sw:
        sw.connect_to_stream()
        out.push_chunk(counter_chunk(0, 10, 1))
        assert sw.wait_for_samples(10, 5)
        del out
        assert poll_until(lambda: sw.lost, 10)
        assert sw.stats()["lost"]
        assert not sw.stats()["connected"]
    assert all(not t.is_alive() for t in sw._threads)


def test_stats_fields_and_effective_rate(lsl_name):
    out = make_outlet(lsl_name, n_ch=2, srate=200.0)
    with StreamWatcher(lsl_name, 2.0, background=True) as sw:
        sw.connect_to_stream()
        t0 = pylsl.local_clock()
        out.push_chunk(counter_chunk(0, 200, 2), [t0 + i / 200 for i in range(200)])
        assert sw.wait_for_samples(200, 5)
        s = sw.stats()
        assert s["samples"] == 200
        assert s["nominal_srate"] == 200.0
        assert s["gaps"] == 0
        assert s["effective_srate"] == pytest.approx(200.0, rel=1e-6)
        assert s["last_timestamp"] == pytest.approx(t0 + 199 / 200)
        assert s["lag_s"] is not None
        assert s["lag_s"] > -1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="buffer_size_s"):
        StreamWatcher("x", buffer_size_s=0)
    with pytest.raises(RuntimeError, match="not connected"):
        StreamWatcher("x").window(seconds=1)
