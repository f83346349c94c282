"""Shards keyed by robot: routing, merged reads with one int cursor, recovery per shard."""

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.shards import ShardedBuffer, open_buffer, shard_dir, shard_of
from buffers.store import BufferConfig, ReplayBuffer
from tests.chunks import make_chunk

CONFIG = BufferConfig(fsync="always", shards=3)


def records(robots=6, per_robot=5, seed=0):
    rng = np.random.default_rng(seed)
    return [encode_chunk(make_chunk(rng, robot_id=f"r{r}", chunk_seq=i))
            for i in range(per_robot) for r in range(robots)]


def read_all(buf, cursor=0, limit=4):
    out = []
    while True:
        got, cursor = buf.read(cursor, limit)
        if not got:
            return out, cursor
        out += got


def test_robots_stay_in_their_shard_and_reads_merge_every_shard(tmp_path):
    recs = records()
    with ShardedBuffer(tmp_path, CONFIG) as buf:
        result = buf.insert(recs)
        assert (result.stored, result.duplicates) == (30, 0)
        assert buf.insert(recs[:7]).duplicates == 7  # idempotent across the router too
        for k, shard in enumerate(buf.shards):
            assert {m.key[0] for m in shard.records()} == \
                {f"r{r}" for r in range(6) if shard_of(f"r{r}", 3) == k}
        assert sum(len(s) for s in buf.shards) == len(buf) == 30
        assert len({shard_of(f"r{r}", 3) for r in range(6)}) > 1  # the test spreads at all
        got, end = read_all(buf)
        assert sorted(got) == sorted(recs) and end == buf.end
        info = buf.info()
        assert info["records"] == 30 and info["shards"] == 3 and info["episodes"] == 6
        assert info["corrupt_records"] == 0 and len(info["per_shard"]) == 3


def test_a_merged_cursor_resumes_after_reopen_without_repeats(tmp_path):
    recs = records()
    with ShardedBuffer(tmp_path, CONFIG) as buf:
        buf.insert(recs[:18])
        first, cursor = read_all(buf, limit=5)
    with ShardedBuffer(tmp_path, CONFIG) as buf:
        assert len(buf) == 18
        buf.insert(recs[18:])
        rest, _ = read_all(buf, cursor, limit=5)
    assert sorted(first + rest) == sorted(recs) and len(first) == 18


def test_one_shard_is_the_plain_buffer_and_shard_counts_cannot_change(tmp_path):
    recs = records(robots=2, per_robot=3)
    with ReplayBuffer(tmp_path / "plain", BufferConfig(fsync="never")) as plain:
        plain.insert(recs)
        plain_read = plain.read(0, 100)
    with ShardedBuffer(tmp_path / "one", BufferConfig(fsync="never")) as one:
        one.insert(recs)
        assert one.read(0, 100) == plain_read  # same records, same cursor
    with ShardedBuffer(tmp_path / "three", CONFIG) as buf:
        buf.insert(recs)
    with pytest.raises(ValueError, match="3 shards"):
        ShardedBuffer(tmp_path / "three", BufferConfig(shards=2))
    with pytest.raises(ValueError, match="unsharded"):
        ShardedBuffer(tmp_path / "plain", CONFIG)
    assert isinstance(open_buffer(tmp_path / "three", read_only=True), ShardedBuffer)
    assert isinstance(open_buffer(tmp_path / "plain", read_only=True), ReplayBuffer)


def test_recovery_works_per_shard(tmp_path):
    recs = records()
    with ShardedBuffer(tmp_path, CONFIG) as buf:
        buf.insert(recs)
        sizes = [len(s) for s in buf.shards]
    victim = next(k for k, n in enumerate(sizes) if n)
    segment = sorted(shard_dir(tmp_path, victim).glob("segment-*.log"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a torn tail in one shard: its last record is lost
    with ShardedBuffer(tmp_path, CONFIG) as buf:
        assert [len(s) for s in buf.shards] == [n - (k == victim) for k, n in enumerate(sizes)]
        info = buf.info()
        assert info["torn_bytes"] > 0 and info["per_shard"][victim]["torn_bytes"] > 0
        assert sum(p["torn_bytes"] for p in info["per_shard"]) == info["torn_bytes"]
        got, _ = read_all(buf)
        assert len(got) == 29 and set(got) <= set(recs)
        assert buf.insert(recs).stored == 1  # the robot resends: the lost record comes back


def test_cli_info_verify_export_cover_every_shard(tmp_path, capsys):
    import json

    from fleet.cli import main

    recs = records()
    with ShardedBuffer(tmp_path / "buf", CONFIG) as buf:
        buf.insert(recs)
    victim = shard_of("r0", 3)
    segment = sorted(shard_dir(tmp_path / "buf", victim).glob("segment-*.log"))[-1]
    segment.write_bytes(segment.read_bytes()[:-3])  # a torn tail in r0's shard
    before = segment.read_bytes()
    assert main(["buffer", "verify", str(tmp_path / "buf")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["shards"] == 3 and report["records"] == 29 and report["torn_bytes"] > 0
    assert report["episodes_per_task"] == {"push-v3": 6} and report["corrupt_records"] == 0
    assert main(["buffer", "info", str(tmp_path / "buf")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 29 and info["episodes_per_task"] == {"push-v3": 6}
    assert main(["buffer", "export", str(tmp_path / "buf"), "--out", str(tmp_path / "npz")]) == 0
    assert len(list((tmp_path / "npz").glob("*.npz"))) == 6  # one episode per robot
    assert segment.read_bytes() == before  # inspecting never truncates
