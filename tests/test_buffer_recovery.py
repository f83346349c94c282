"""Durability: kill -9 mid-write, a deleted or doubtful index, damage found after opening."""

import json
import os
import signal
import time

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.index import index_path
from buffers.log import FRAME, CorruptLogError, SegmentLog, verify_log
from buffers.store import BufferConfig, ReplayBuffer
from buffers.verify import verify_buffer
from tests.chunks import make_chunk

SMALL = BufferConfig(fsync="always", segment_bytes=16384)


def _writer(root, name: str, ack_fd: int) -> None:
    """In a forked child: append forever, acknowledging each insert once it returned."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    buf = ReplayBuffer(root, SMALL)
    for i in range(10**6):
        buf.insert([encode_chunk(make_chunk(rng, T=8, episode_id=name, chunk_seq=i))])
        os.write(ack_fd, f"{name} {i}\n".encode())


def _run_and_kill(root, name: str, delay: float) -> set[tuple[str, int]]:
    r, w = os.pipe()
    pid = os.fork()  # a fork, not a new interpreter: 50 kills in seconds, not a minute
    if pid == 0:
        os.close(r)
        try:
            _writer(root, name, w)
        finally:
            os._exit(1)
    os.close(w)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        lines = f.read().splitlines()
    return {(n, int(i)) for n, i in (line.split() for line in lines if line.count(" ") == 1)}


def test_kill_9_never_loses_acknowledged_records(tmp_path):
    """SIGKILL a writer at random moments, FLEET_KILL_TESTS times (50 by default); each time
    it reopens what the last one left. Every insert it acknowledged must be there, once."""
    rng = np.random.default_rng(0)
    root = tmp_path / "buf"
    acked: set[tuple[str, int]] = set()
    kills = int(os.environ.get("FLEET_KILL_TESTS", "50"))
    for k in range(kills):
        acked |= _run_and_kill(root, f"w{k}", float(rng.uniform(0.02, 0.25)))
    assert len(acked) > kills  # the writers did get to write
    with ReplayBuffer(root, SMALL) as buf:
        stored = {(m.key[1], m.key[2]) for m in buf.records()}
        assert acked <= stored
        assert len(stored) == len(buf.records())  # no duplicates
        assert buf.info()["corrupt_records"] == 0
        assert buf.info()["segments"] > 3  # rotation (and index writes) were killed too
    assert verify_log(root)["corrupt_records"] == 0


def _filled(root, n=60):
    rng = np.random.default_rng(3)
    recs = [encode_chunk(make_chunk(rng, chunk_seq=i)) for i in range(n)]
    with ReplayBuffer(root, SMALL) as buf:
        buf.insert(recs)
        metas = buf.records()
    return recs, metas


@pytest.mark.parametrize("damage", ["delete", "garbage", "flip", "stale", "tmp_left"])
def test_index_is_rebuilt_when_missing_or_doubtful(tmp_path, damage):
    recs, metas = _filled(tmp_path)
    idx = index_path(tmp_path, 1)
    assert idx.exists() and len({m.position.segment for m in metas}) > 3
    data = idx.read_bytes()
    if damage == "delete":
        idx.unlink()
    elif damage == "garbage":
        idx.write_bytes(b"\x00" * 100)
    elif damage == "flip":
        idx.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    elif damage == "stale":  # an index for segment 2 under segment 1's name
        idx.write_bytes(index_path(tmp_path, 2).read_bytes())
    else:  # a crash between writing the temporary file and renaming it
        idx.with_suffix(".idx.tmp").write_bytes(data[:10])
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert buf.records() == metas
        assert buf.read(0, 1000)[0] == recs
        assert (1 in buf.log.scanned) == (damage != "tmp_left")  # sealed, so trusted if sound
    assert idx.read_bytes() == data  # rebuilt to the same bytes


def test_sealed_segments_are_not_decoded_again_on_open(tmp_path):
    _filled(tmp_path)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert buf.log.scanned == [buf.log.active]


def test_damage_after_open_is_caught_on_read(tmp_path):
    recs, _ = _filled(tmp_path, 10)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        meta = buf.records()[2]
        pos = meta.position
        seg = tmp_path / f"segment-{pos.segment:06d}.log"
        data = bytearray(seg.read_bytes())
        data[pos.offset + FRAME.size + 30] ^= 0x01
        seg.write_bytes(bytes(data))
        got, cursor = buf.read(0, 100)
        assert got == recs[:2] + recs[3:] and cursor == 10
        assert buf.info()["corrupt_records"] == 1
        with pytest.raises(CorruptLogError):
            buf.get(meta)
        assert buf.read(0, 100)[0] == got and meta not in buf.records()
        assert buf.info()["corrupt_records"] == 1  # counted once, however often it is read


def test_verify_never_truncates(tmp_path):
    _filled(tmp_path, 10)
    last = max(tmp_path.glob("segment-*.log"))
    data = last.read_bytes()
    last.write_bytes(data[:-3])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    report = verify_log(tmp_path)
    assert report["torn_bytes"] > 0 and report["records"] == 9
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_verify_counts_every_kind_of_damage_and_changes_nothing(tmp_path, capsys):
    from fleet.cli import main

    _filled(tmp_path, 60)
    SegmentLog(tmp_path, fsync="never").append([b"checksum fine, schema not"])  # active segment
    index_path(tmp_path, 1).unlink()
    seg = tmp_path / "segment-000002.log"
    data = bytearray(seg.read_bytes())
    data[FRAME.size + 50] ^= 0x04  # inside the first record's payload
    seg.write_bytes(bytes(data))
    last = max(tmp_path.glob("segment-*.log"))
    last.write_bytes(last.read_bytes() + b"FLTR\x01")  # a torn append after the junk record
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    report = verify_buffer(tmp_path)
    assert report["corrupt_records"] == 1 and report["unreadable_records"] == 1
    assert report["torn_bytes"] == 5 and report["records"] == 60
    assert report["indexes_to_rebuild"] == ["segment-000001.idx", "segment-000002.idx"]
    assert main(["buffer", "verify", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["unreadable_records"] == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_cli_info_and_export_leave_a_torn_log_untouched(tmp_path, capsys):
    from fleet.cli import main

    _filled(tmp_path / "buf", 10)
    last = max((tmp_path / "buf").glob("segment-*.log"))
    last.write_bytes(last.read_bytes()[:-3])
    before = last.read_bytes()
    assert main(["buffer", "info", str(tmp_path / "buf")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 9 and info["torn_bytes"] > 0
    assert main(["buffer", "export", str(tmp_path / "buf"), "--out", str(tmp_path / "npz")]) == 0
    assert len(list((tmp_path / "npz").glob("*.npz"))) == 1  # one episode, e0
    assert last.read_bytes() == before


def test_strict_open_rescans_sealed_segments_despite_their_index(tmp_path):
    _filled(tmp_path, 60)
    seg = tmp_path / "segment-000001.log"
    data = bytearray(seg.read_bytes())
    data[FRAME.size + 50] ^= 0x04
    seg.write_bytes(bytes(data))  # damage the index cannot know about
    with ReplayBuffer(tmp_path, SMALL) as buf:  # trusting the index: caught on read instead
        assert len(buf.read(0, 1000)[0]) == 59 and buf.info()["corrupt_records"] == 1
    with pytest.raises(CorruptLogError):
        ReplayBuffer(tmp_path, BufferConfig(fsync="always", segment_bytes=16384, strict=True))
