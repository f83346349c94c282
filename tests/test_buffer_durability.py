"""What survives a process crash and what survives a power loss, per fsync policy, as
docs/buffer-format.md states it:

| policy        | process crash (kill -9) | power loss                                     |
|---------------|-------------------------|------------------------------------------------|
| `always`      | every acknowledged      | every acknowledged (fsynced before the ack)    |
| `interval_ms` | every acknowledged      | all but the last `fsync_interval_ms` (+ fsync) |
| `never`       | every acknowledged      | what the kernel flushed; sealed segments       |

A process crash leaves the kernel's page cache, so every policy keeps every acknowledged record:
tested by killing a writer. A power loss keeps what was fsynced: `SegmentLog.synced` says how far
that is, and the tests check how it moves (a real power cut is not something a test can do).
"""

import os
import signal
import time

import numpy as np
import pytest

import buffers.log as log_module
from buffers.codec import encode_chunk
from buffers.log import SegmentLog
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk


def wait_for(condition, timeout_s=30.0):
    """Wait on state; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.parametrize("policy", ["always", "interval_ms", "never"])
def test_a_process_crash_keeps_every_acknowledged_record_under_every_policy(tmp_path, policy):
    rng = np.random.default_rng(0)
    recs = [encode_chunk(make_chunk(rng, chunk_seq=i)) for i in range(20)]
    config = BufferConfig(fsync=policy, fsync_interval_ms=10**6, segment_bytes=32768)
    pid = os.fork()
    if pid == 0:
        try:
            buf = ReplayBuffer(tmp_path, config)
            for r in recs:
                buf.insert([r])  # acknowledged on return
        finally:
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush: a crash
    os.waitpid(pid, 0)
    with ReplayBuffer(tmp_path, config) as buf:
        assert buf.read(0, 100)[0] == recs


def test_always_is_durable_when_append_returns(tmp_path):
    log = SegmentLog(tmp_path, fsync="always")
    for i in range(3):
        log.append([bytes([i]) * 100])
        assert log.synced == log.end
    log.close()


def test_interval_ms_syncs_within_the_interval_even_when_no_append_follows(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(log_module.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    log = SegmentLog(tmp_path, fsync="interval_ms", fsync_interval_ms=200)  # appends come sooner
    try:
        for quiet_period in range(2):
            log.append([b"x" * 100, b"y" * 50])  # then nothing more: a quiet robot
            wait_for(lambda: log.synced == log.end)
            assert len(synced) == quiet_period + 1
    finally:
        log.close()


def test_never_leaves_the_active_segment_to_the_kernel_but_seals_durably(tmp_path):
    log = SegmentLog(tmp_path, fsync="never", segment_bytes=400)
    log.append([b"a" * 100])
    assert log.synced == (0, 0) and log.end == (0, 120)
    log.append([b"b" * 300])  # rotates: the sealed segment is fsynced, the new one is not
    assert log.synced == (1, 0) and log.end == (1, 320)
    log.close()
    assert log.synced == log.end


def test_what_a_power_loss_keeps_reopens_cleanly(tmp_path):
    """The worst a power loss may leave under `never`: the sealed segments (fsynced when
    sealed) and the active one cut back to what was fsynced, plus part of a record; it reopens
    with the synced records and the rest as a torn tail."""
    live, after = tmp_path / "live", tmp_path / "after"
    log = SegmentLog(live, fsync="never", segment_bytes=400)
    log.append([b"a" * 300, b"b" * 300, b"c" * 100])
    (segment, synced), end = log.synced, log.end
    after.mkdir()
    for n in range(segment + 1):
        data = (live / f"segment-{n:06d}.log").read_bytes()
        (after / f"segment-{n:06d}.log").write_bytes(data if n < segment else data[:synced + 50])
    log.close()
    reopened = SegmentLog(after)
    assert [p for _, p in reopened] == [b"a" * 300, b"b" * 300]
    assert reopened.recovery.torn_bytes == 50 and end == (2, 120)
    reopened.close()


@pytest.mark.parametrize("policy", ["always", "interval_ms", "never"])
def test_a_robots_spill_log_is_synced_as_the_buffer_is(tmp_path, policy):
    pytest.importorskip("ray")
    from fleet.remote.outbox import BufferOutbox

    outbox = BufferOutbox(None, tmp_path / "spill", max_in_flight=0, fsync=policy)
    outbox.put(b"chunk")  # no room in flight: spilled
    spill = outbox._spill
    assert spill is not None and spill.fsync == policy and outbox.pending_spill == 1
    if policy == "always":
        assert spill.synced == spill.end
    elif policy == "interval_ms":
        wait_for(lambda: spill.synced == spill.end)
    else:
        assert spill.synced == (0, 0)
    spill.close()


def test_close_never_waits_forever_on_the_fsync_thread(tmp_path):
    """close() racing the thread's wake-up (its kick cleared just after close set it) once left
    close() joining a thread that waited for a kick that never came (about 1 in 150 here)."""
    import threading

    for i in range(300):
        log = SegmentLog(tmp_path, fsync="interval_ms", fsync_interval_ms=1)
        log.append([b"x" * 100])
        time.sleep(0.001 * (i % 3))
        closer = threading.Thread(target=log.close)
        closer.start()
        closer.join(30)
        assert not closer.is_alive(), f"close() hung at round {i}"
