"""The robots' outbox on a real local Ray and a real buffer actor: several chunks per insert
call, a held chunk sent without a further put, spills resent in batches, nothing lost or
duplicated."""

import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from buffers.codec import decode_chunk, encode_chunk  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.outbox import BufferOutbox  # noqa: E402
from tests.chunks import make_chunk  # noqa: E402


def records(n, episode="e0"):
    rng = np.random.default_rng(0)
    return [encode_chunk(make_chunk(rng, episode_id=episode, chunk_seq=i)) for i in range(n)]


def stored_keys(buffer):
    got, _ = ray.get(buffer.read.remote(0, 10**6))
    return [decode_chunk(r).key for r in got]


def wait_for(condition, timeout_s=60.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s"
        time.sleep(0.01)


def test_chunks_put_close_together_share_calls_and_a_held_one_goes_unasked(local_ray, tmp_path):
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    outbox = BufferOutbox(buffer, tmp_path / "spill", linger_s=0.5)
    recs = records(12)
    for r in recs:  # far faster than linger_s: the first goes alone, the rest in batches
        outbox.put(r)
    assert outbox.calls < len(recs) // 2 and outbox.sent + len(outbox._held) == len(recs)
    # no flush, no further put: what is held goes once linger_s has passed (the thread)
    wait_for(lambda: len(stored_keys(buffer)) == len(recs), what="every held chunk stored")
    assert outbox._held == [] and outbox.sent == len(recs)
    keys = stored_keys(buffer)
    assert len(keys) == len(set(keys)) == len(recs)
    outbox.flush()  # acknowledgements counted
    assert outbox.stored == len(recs) and outbox.duplicates == 0 and outbox.refusals == []


def test_a_record_put_after_a_quiet_spell_goes_at_once(local_ray, tmp_path):
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    outbox = BufferOutbox(buffer, tmp_path / "spill", linger_s=3600.0)
    first, second = records(2)
    outbox.put(first)  # nothing sent for longer than linger_s: sent, not held
    assert outbox.calls == 1 and outbox._held == []
    outbox.put(second)  # within linger_s of that call: held until flush
    assert outbox.calls == 1 and len(outbox._held) == 1
    outbox.flush()
    assert outbox.stored == 2 and len(stored_keys(buffer)) == 2


def test_batches_stay_under_the_byte_limit(local_ray, tmp_path):
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    recs = records(9)
    outbox = BufferOutbox(buffer, tmp_path / "spill", linger_s=3600.0,
                          batch_bytes=3 * len(recs[0]) + 10)  # three records per call
    for r in recs:
        outbox.put(r)
    outbox.flush()
    assert outbox.calls == 4  # the first alone, then 3 + 3, then the last 2 at flush
    assert outbox.stored == 9 and len(set(stored_keys(buffer))) == 9


def test_settle_sends_what_is_held_and_leaves_the_spill_log(local_ray, tmp_path):
    """Spilled records stay spilled through settle (what a crash would leave), and the held
    ones go out first; a flush then resends the spill log in batches, each chunk once."""
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    outbox = BufferOutbox(buffer, tmp_path / "spill", max_in_flight=1, linger_s=3600.0)
    recs = records(8)
    outbox.put(recs[0])  # sent: the one call allowed in flight
    outbox.put(recs[1])  # held
    outbox.settle()  # the held one goes out (or to the spill log), all sent acknowledged
    assert not outbox.in_flight and outbox._held == []
    assert outbox.sent + outbox.spilled == 2
    outbox.max_in_flight = 0  # no room: every batch from here is spilled
    for r in recs[2:]:
        outbox.put(r)
    outbox.settle()
    assert outbox.pending_spill == outbox.spilled >= 6  # held ones went to the spill log
    outbox.max_in_flight = 8
    outbox.flush()
    assert outbox.pending_spill == 0 and not (tmp_path / "spill").exists()
    keys = stored_keys(buffer)
    assert len(keys) == len(set(keys)) == 8 and outbox.stored == 8
    assert outbox.calls < outbox.sent  # the spill log went back in batches



def test_the_sending_thread_spills_a_held_record_and_never_resends_the_spill_log(local_ray,
                                                                                tmp_path):
    """A robot held still (no puts) keeps its spill log as a crash would leave it: the sending
    thread spills a held record it has no room for, and only a put or a flush resends it; a
    put behind a spill log is never held."""
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    outbox = BufferOutbox(buffer, tmp_path / "spill", max_in_flight=0, linger_s=0.2)
    recs = records(4)
    outbox._last_call = time.monotonic()  # as if a call had just gone: the put is held
    outbox.put(recs[0])
    assert outbox._held == [recs[0]]
    # no further put: the sending thread ships the held record, to the spill log (no room)
    wait_for(lambda: outbox.spilled == 1, what="the held record spilled")
    with outbox._lock:
        assert outbox._held == [] and outbox.pending_spill == 1 and outbox.calls == 0
    for r in recs[1:]:
        outbox.put(r)  # behind the spill log, and still no room: spilled at once, in order
    assert outbox._held == [] and outbox.pending_spill == 4 and outbox.calls == 0
    outbox.max_in_flight = 8  # room again
    outbox.flush()  # the spill log resent
    assert outbox.pending_spill == 0 and outbox.stored == 4
    assert stored_keys(buffer) == [decode_chunk(r).key for r in recs]


def test_puts_drain_a_spill_log_without_waiting_for_linger(local_ray, tmp_path):
    """Once there is room again, each put resends what fits, however recent the last call:
    a robot that spilled once does not keep sending every chunk through its disk (before,
    resends waited for `linger_s`, at most `max_in_flight` records each time)."""
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    outbox = BufferOutbox(buffer, tmp_path / "spill", max_in_flight=0, linger_s=3600.0)
    recs = records(25)
    for r in recs[:20]:
        outbox.put(r)  # no room in flight: spilled
    assert outbox.pending_spill == 20 and outbox.calls == 0
    outbox.max_in_flight = 8
    outbox._last_call = time.monotonic()  # a call just went: a put would otherwise be held
    for r in recs[20:]:
        outbox.put(r)
        ray.wait(list(outbox.in_flight), num_returns=len(outbox.in_flight), timeout=60)
    assert outbox.pending_spill == 0 and not (tmp_path / "spill").exists()  # drained by puts
    outbox.flush()  # the last puts, held again once the log was gone
    keys = stored_keys(buffer)
    assert len(keys) == len(set(keys)) == 25 and outbox.stored == 25
