"""Property test: any mix of inserts (with resends and bad records) and reopens leaves the
buffer equal to a plain list of the unique records in arrival order, cursors included."""

import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from buffers.codec import encode_chunk
from buffers.index import RecordMeta
from buffers.log import Position
from buffers.stats import Counts
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk

_RNG = np.random.default_rng(7)
POOL = [encode_chunk(make_chunk(_RNG, T=int(_RNG.integers(1, 40)), episode_id=f"e{i % 4}",
                                chunk_seq=i)) for i in range(24)]
CONFIG = BufferConfig(fsync="never", segment_bytes=4096)  # rotates every few records

ops = st.lists(st.one_of(
    st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=6).map(lambda b: ("insert", b)),
    st.just(("reopen", [])),
    st.just(("garbage", [])),
), min_size=1, max_size=12)


@settings(max_examples=30, deadline=None)
@given(ops=ops, probe=st.integers(0, len(POOL)))
def test_buffer_equals_a_list_of_unique_records(ops, probe):
    with tempfile.TemporaryDirectory() as root:
        model: list[bytes] = []
        buf = ReplayBuffer(root, CONFIG)
        try:
            for op, batch in ops:
                if op == "reopen":
                    buf.close()
                    buf = ReplayBuffer(root, CONFIG)
                elif op == "garbage":
                    assert buf.insert([b"\x00" * 40]).refused
                else:
                    fresh = [POOL[i] for i in dict.fromkeys(batch) if POOL[i] not in model]
                    result = buf.insert([POOL[i] for i in batch])
                    assert result.stored == len(fresh)
                    assert result.duplicates == len(batch) - len(fresh)
                    model += fresh
                got, cursor = buf.read(0, 10**6)
                assert got == model and cursor == len(model) == len(buf)
                assert buf.read(probe, 1)[0] == model[probe:probe + 1]
            buf.close()
            with ReplayBuffer(root, CONFIG) as again:
                assert again.read(0, 10**6)[0] == model
                assert again.info()["corrupt_records"] == 0
        finally:
            buf.close()


metas = st.builds(
    lambda robot, episode, task, version, steps, acted, outcome, length: RecordMeta(
        (robot, episode, 0), task, "", version, steps, acted, outcome, Position(0, 0, length)),
    st.sampled_from(["r0", "r1"]), st.sampled_from(["e0", "e1", "e2"]),
    st.sampled_from(["push", "pick"]), st.integers(0, 3), st.integers(1, 9),
    st.sampled_from([0, 0, 4]), st.sampled_from([None, "success", "failure"]),
    st.integers(1, 100))


@settings(max_examples=100, deadline=None)
@given(st.lists(metas, max_size=8), st.lists(metas, max_size=20))
def test_counts_of_a_batch_equal_counts_record_by_record(before, batch):
    """`Counts.add` (ingest's batches, a step per batch) counts as `update` one by one."""
    one, each = Counts(), Counts()
    for m in before:
        one.update(m, +1)
        each.update(m, +1)
    one.add(batch)
    for m in batch:
        each.update(m, +1)
    assert one.summary() == each.summary() and one.episodes == each.episodes
