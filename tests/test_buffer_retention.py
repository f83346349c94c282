"""Retention under a byte cap, with pinned demonstrations; reward side columns."""

from collections import Counter

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.log import FRAME
from buffers.records import EpisodeEnd
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk

CAPPED = BufferConfig(fsync="never", segment_bytes=8192, max_bytes=32768)


def records(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [encode_chunk(make_chunk(rng, chunk_seq=i, intervened=False, **kw)) for i in range(n)]


def segment_bytes(root):
    return sum(p.stat().st_size for p in root.glob("segment-*.log"))


def test_oldest_segments_go_first_and_cursors_stay(tmp_path):
    recs = records(200)
    with ReplayBuffer(tmp_path, CAPPED) as buf:
        for r in recs:
            buf.insert([r])
            assert segment_bytes(tmp_path) <= CAPPED.max_bytes
        kept, cursor = buf.read(0, 1000)
        first = len(recs) - len(kept)
        assert first > 100 and kept == recs[first:] and cursor == 200
        mid = first + len(kept) // 2
        assert buf.read(mid, 1)[0] == [recs[mid]]  # a cursor still names the same record
    assert not (tmp_path / "segment-000000.log").exists()
    assert not (tmp_path / "segment-000000.idx").exists()
    with ReplayBuffer(tmp_path, CAPPED) as buf:  # and so after reopening
        assert buf.read(mid, 1)[0] == [recs[mid]] and buf.read(0, 1000)[0] == kept
        assert buf.info()["corrupt_records"] == 0


def test_segments_with_interventions_are_pinned(tmp_path):
    rng = np.random.default_rng(1)
    demo = encode_chunk(make_chunk(rng, episode_id="demo", intervened=True))
    with ReplayBuffer(tmp_path, CAPPED) as buf:
        buf.insert([demo])
        for r in records(200):
            buf.insert([r])
        got = buf.read(0, 1000)[0]
        assert got[0] == demo and len(got) < 150
        assert segment_bytes(tmp_path) <= CAPPED.max_bytes + 8192  # the pinned one on top


def test_cap_smaller_than_two_segments_is_refused():
    with pytest.raises(ValueError, match="two segments"):
        BufferConfig(segment_bytes=8192, max_bytes=10000)


def test_reward_labels_live_beside_the_segments_and_survive_reopen(tmp_path):
    recs = records(3, T=5)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
        keys = [m.key for m in buf.records()]
        before = {p: p.read_bytes() for p in tmp_path.glob("segment-*")}
        buf.set_rewards(keys[0], "judge", 1, np.ones(5))
        buf.set_rewards(keys[0], "judge", 2, np.full(5, 2.0))
        buf.set_rewards(keys[0], "judge", 2, np.full(5, 3.0))  # a later label wins
        assert {p: p.read_bytes() for p in tmp_path.glob("segment-*")} == before
        with pytest.raises(KeyError):
            buf.set_rewards(("r9", "e9", 0), "judge", 1, np.ones(5))
        with pytest.raises(ValueError, match="name"):
            buf.set_rewards(keys[0], "../etc", 1, np.ones(5))
        with pytest.raises(ValueError, match="finite"):
            buf.set_rewards(keys[0], "judge", 1, np.array([np.nan] * 5))
    with ReplayBuffer(tmp_path) as buf:
        assert (buf.get_rewards(keys[0], "judge", 1) == 1).all()
        assert (buf.get_rewards(keys[0], "judge", "2") == 3).all()
        assert buf.get_rewards(keys[1], "judge", 1) is None
        assert buf.get_rewards(keys[0], "other", 1) is None
        assert buf.info()["reward_labels"] == ["judge@1", "judge@2"]


def test_a_torn_reward_label_is_dropped_on_reopen(tmp_path):
    recs = records(2, T=5)
    with ReplayBuffer(tmp_path) as buf:
        buf.insert(recs)
        keys = [m.key for m in buf.records()]
        buf.set_rewards(keys[0], "judge", 1, np.ones(5))
        buf.set_rewards(keys[1], "judge", 1, np.ones(5))
    (seg,) = (tmp_path / "rewards" / "judge@1").glob("segment-*.log")
    seg.write_bytes(seg.read_bytes()[:-FRAME.size])
    with ReplayBuffer(tmp_path) as buf:
        assert buf.get_rewards(keys[0], "judge", 1) is not None
        assert buf.get_rewards(keys[1], "judge", 1) is None


def brute_counts(buf):
    metas = buf.records()
    episodes = {m.episode: m.task for m in metas}
    versions = [m.policy_version for m in metas]
    return {"records": len(metas), "steps": sum(m.num_steps for m in metas),
            "episodes": len(episodes), "episodes_per_task": dict(Counter(episodes.values())),
            "tasks": dict(Counter(m.task for m in metas)),
            "episodes_ended": sum(m.outcome is not None for m in metas),
            "intervened_records": sum(m.intervened > 0 for m in metas),
            "policy_version_min": min(versions, default=None),
            "policy_version_max": max(versions, default=None)}


def test_info_counts_follow_inserts_deletions_and_reopen(tmp_path):
    rng = np.random.default_rng(4)
    recs = [encode_chunk(make_chunk(rng, episode_id=f"e{i // 3}", chunk_seq=i % 3,
                                    task=f"t{i // 3 % 2}", policy_version=i // 10,
                                    end=EpisodeEnd("success") if i % 3 == 2 else None,
                                    intervened=i % 50 == 0))
            for i in range(150)]
    with ReplayBuffer(tmp_path, CAPPED) as buf:
        for i in range(0, 150, 5):
            buf.insert(recs[i:i + 5])
            info = buf.info()
            assert {k: info[k] for k in brute_counts(buf)} == brute_counts(buf)
        assert info["records"] < 150  # retention did delete
    with ReplayBuffer(tmp_path, CAPPED) as buf:
        info = buf.info()
        assert {k: info[k] for k in brute_counts(buf)} == brute_counts(buf)
