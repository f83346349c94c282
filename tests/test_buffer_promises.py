"""The buffer's promises at the edges: torn appends that hide frames, damage in sealed segments,
counts per record, conflicting resends, one writer, stray files, old formats (buffer-format.md)."""

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from buffers.codec import encode_chunk
from buffers.log import FRAME, FRAME_V2, LogLockedError, SegmentLog, frame, scan_segment, verify_log
from buffers.store import BufferConfig, ReplayBuffer
from buffers.verify import verify_buffer
from tests.chunks import make_chunk

SMALL = BufferConfig(fsync="always", segment_bytes=16384)
FIXTURES = Path(__file__).parent / "fixtures"


def _records(n, seed=3, first=0, **kw):
    rng = np.random.default_rng(seed)
    return [encode_chunk(make_chunk(rng, chunk_seq=first + i, **kw)) for i in range(n)]


def _carrier(hidden: bytes) -> bytes:
    """A camera record of robot r0 whose image bytes hold `hidden` framed as a record."""
    rng = np.random.default_rng(5)
    chunk = make_chunk(rng, T=4, chunk_seq=99, camera=True)
    inner = np.frombuffer(frame(hidden) + hidden, np.uint8)
    pixels = rng.integers(0, 255, (5, 96, 96, 3), dtype=np.uint8)  # noise: lz4 stores it raw
    pixels.reshape(-1)[70000:70000 + inner.size] = inner
    record = encode_chunk(type(chunk)(**{**chunk.__dict__, "obs": {**chunk.obs, "camera": pixels}}))
    assert frame(hidden) + hidden in record  # the frame survives encoding verbatim
    return record


def _torn_append(root: Path, record: bytes, keep: int, version: int = 3) -> int:
    """What a crash mid-append leaves: the header and the first `keep` payload bytes."""
    seg = max(root.glob("segment-*.log"))
    written = frame(record, version) + record[:keep]
    with open(seg, "ab") as f:
        f.write(written)
    return len(written)


def test_a_torn_append_never_adopts_a_frame_hidden_in_its_camera_bytes(tmp_path):
    """F1: robot r9's record framed inside r0's camera image; the crash tears r0's record just
    after the hidden frame. Recovery cuts at r0's header: r9's record is not invented, r9's
    real record is then stored (not refused as a duplicate) and verify finds nothing wrong."""
    good = _records(3)
    hidden = encode_chunk(make_chunk(np.random.default_rng(9), robot_id="r9", episode_id="e9"))
    carrier = _carrier(hidden)
    end_of_hidden = carrier.index(hidden) + len(hidden)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        buf.insert(good)
    torn = _torn_append(tmp_path, carrier, keep=end_of_hidden + 10)
    data = max(tmp_path.glob("segment-*.log")).read_bytes()
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert [m.key[0] for m in buf.records()] == ["r0"] * 3
        assert buf.info()["torn_bytes"] == torn and buf.info()["corrupt_records"] == 0
        assert buf.insert([hidden]).stored == 1  # r9's real record: new, not a duplicate
    report = verify_buffer(tmp_path)
    assert report["corrupt_records"] == report["torn_bytes"] == 0 and report["records"] == 4
    # the header checksum alone stops it; without it (version 2 frames, as scanned before)
    # the hidden record was adopted
    assert len(scan_segment(data).records) == 3
    old = data[:len(data) - torn] + frame(carrier, 2) + carrier[:end_of_hidden + 10]
    assert [head for _, head, _ in scan_segment(old).records] == [20, 20, 20, 20]


def test_a_torn_append_whose_header_page_was_lost_adopts_nothing_either(tmp_path):
    """A power loss may persist a later page of the torn record and not its first: the header
    reads as zeros, the search after it finds the hidden frame, then the end is torn. All of it
    is the torn tail."""
    hidden = b"h" * 300
    carrier = bytes(2000) + frame(hidden) + hidden + bytes(2000)
    log = SegmentLog(tmp_path, fsync="always")
    log.append([b"a" * 100, b"b" * 100])
    log.close()
    seg = tmp_path / "segment-000000.log"
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(bytes(FRAME.size) + carrier[:3000])
    log = SegmentLog(tmp_path)
    assert [p for _, p in log] == [b"a" * 100, b"b" * 100]
    assert log.recovery.torn_bytes == FRAME.size + 3000 and seg.stat().st_size == size
    log.close()


def test_damage_in_a_sealed_segment_is_counted_once_and_repaired_by_a_resend(tmp_path):
    """F2: a sealed segment with a saved index is not rescanned on open; its damaged record is
    found when first read, counted once (also after reopening) and its key is freed, so the
    robot's resend is stored; verify agrees."""
    recs = _records(30)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        buf.insert(recs)
        victim = buf.records()[1]
    assert victim.position.segment == 0
    seg = tmp_path / "segment-000000.log"
    data = bytearray(seg.read_bytes())
    data[victim.position.offset + FRAME.size + 40] ^= 0x20
    seg.write_bytes(bytes(data))
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert 0 not in buf.log.scanned  # its index was trusted
        for _ in range(3):
            got, _ = buf.read(0, 100)
            assert got == recs[:1] + recs[2:]
            assert buf.info()["corrupt_records"] == 1
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert buf.info()["corrupt_records"] == 1 and len(buf) == 29
        result = buf.insert([recs[1]])
        assert (result.stored, result.duplicates) == (1, 0)
        assert sorted(buf.read(0, 100)[0]) == sorted(recs)
    report = verify_buffer(tmp_path)
    assert report["corrupt_records"] == 1 and report["indexes_to_rebuild"] == []


def test_a_resend_repairs_a_stored_copy_damaged_since_opening(tmp_path):
    recs = _records(4)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        buf.insert(recs)
        pos = buf.records()[2].position
        seg = tmp_path / "segment-000000.log"
        data = bytearray(seg.read_bytes())
        data[pos.offset + FRAME.size + 40] ^= 0x20
        seg.write_bytes(bytes(data))
        assert buf.insert([recs[2]]).stored == 1  # not a duplicate of a record it cannot read
        assert buf.info()["corrupt_records"] == 1
        assert buf.read(0, 10)[0] == [recs[0], recs[1], recs[3], recs[2]]


def test_corrupt_records_counts_records_not_runs_of_damage(tmp_path):
    """F3: three neighbours damaged in their payloads are three records, not one run."""
    recs = [bytes([i]) * 500 for i in range(10)]
    log = SegmentLog(tmp_path)
    positions = log.append(recs)
    log.close()
    seg = tmp_path / "segment-000000.log"
    data = bytearray(seg.read_bytes())
    for pos in positions[3:6]:
        data[pos.offset + FRAME.size + 7] ^= 0x01
    seg.write_bytes(bytes(data))
    log = SegmentLog(tmp_path)
    assert [p for _, p in log] == recs[:3] + recs[6:]
    assert log.recovery.corrupt_records == 3
    log.close()
    assert verify_log(tmp_path)["corrupt_records"] == 3
    # damaged headers too: the frame magics in the damaged run are counted
    for pos in positions[3:6]:
        data[pos.offset + 9] ^= 0x01  # the length field: the header's own checksum fails
    seg.write_bytes(bytes(data))
    assert verify_log(tmp_path)["corrupt_records"] == 3


def test_same_key_with_different_bytes_is_a_conflict_not_a_duplicate(tmp_path):
    rng = np.random.default_rng(1)
    first = encode_chunk(make_chunk(rng, chunk_seq=0))
    other = encode_chunk(make_chunk(rng, chunk_seq=0))  # same key, other content
    assert first != other
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert buf.insert([first]).stored == 1
        again = buf.insert([first])
        assert (again.stored, again.duplicates, again.refused) == (0, 1, ())
        clash = buf.insert([_records(1, seed=8, first=5)[0], other])
        assert (clash.stored, clash.duplicates, clash.conflicts) == (1, 0, 1)
        assert clash.refused[0][0] == 1 and "conflict" in clash.refused[0][1]
        within = buf.insert([_records(1, seed=9, first=7)[0],
                             _records(1, seed=10, first=7)[0]])  # both new, same key
        assert (within.stored, within.conflicts) == (1, 1)
        assert buf.info()["conflicts"] == 2
        assert buf.read(0, 10)[0][0] == first  # the stored one is kept
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert buf.insert([other]).conflicts == 1  # across reopen too


def test_a_second_writer_is_refused_with_the_holders_pid_and_readers_still_work(tmp_path):
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the first writer, in another process
        try:
            buf = ReplayBuffer(tmp_path, SMALL)
            buf.insert(_records(3))
            os.write(w, b"open")
            os.read(go_r, 1)  # hold the buffer until told
        finally:
            os._exit(0)
    try:
        assert os.read(r, 4) == b"open"
        with pytest.raises(LogLockedError, match=f"pid {pid}"):
            ReplayBuffer(tmp_path, SMALL)
        with ReplayBuffer(tmp_path, SMALL, read_only=True) as reader:
            assert len(reader) == 3
        assert verify_buffer(tmp_path)["records"] == 3
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
    with ReplayBuffer(tmp_path, SMALL) as buf:  # the lock went with its holder
        assert len(buf) == 3
        with pytest.raises(LogLockedError, match=f"pid {os.getpid()}"):
            SegmentLog(tmp_path)  # in the same process as well


def test_a_writer_killed_with_sigkill_leaves_no_lock_behind(tmp_path):
    pid = os.fork()
    if pid == 0:
        ReplayBuffer(tmp_path, SMALL).insert(_records(2))
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert len(buf) == 2


def test_stray_files_are_ignored_and_reported(tmp_path):
    with ReplayBuffer(tmp_path, SMALL) as buf:
        buf.insert(_records(12))
    shutil.copy(tmp_path / "segment-000001.log", tmp_path / "segment-000001 (copy).log")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "segment-x.idx").write_bytes(b"?")
    strays = ["notes.txt", "segment-000001 (copy).log", "segment-x.idx"]
    with ReplayBuffer(tmp_path, SMALL) as buf:
        assert len(buf) == 12 and buf.info()["stray_files"] == strays
        assert any("not a file of the log" in n for n in buf.info()["notes"])
    report = verify_buffer(tmp_path)
    assert report["records"] == 12 and report["stray_files"] == strays
    assert report["corrupt_records"] == 0
    assert verify_log(tmp_path)["stray_files"] == strays


def test_a_buffer_written_by_the_previous_format_reads_and_grows(tmp_path):
    """tests/fixtures/buffer-v2 was written by the code before frame version 3 (16-byte headers,
    no header checksum): it opens, every record is byte-identical, new records are appended in
    the new format beside the old ones, and strict opening and verify find no damage."""
    meta = json.loads((FIXTURES / "buffer-v2.json").read_text())
    root = tmp_path / "buf"
    shutil.copytree(FIXTURES / "buffer-v2", root)
    assert FRAME_V2.unpack_from((root / "segment-000000.log").read_bytes())[1] == 2
    with ReplayBuffer(root, BufferConfig(segment_bytes=4096)) as buf:
        got, _ = buf.read(0, 100)
        assert [hashlib.sha256(r).hexdigest() for r in got] == meta["sha256"]
        assert buf.insert(_records(2, seed=11, first=50)).stored == 2
        assert buf.info()["corrupt_records"] == 0
    with ReplayBuffer(root, BufferConfig(segment_bytes=4096, strict=True)) as buf:
        assert len(buf) == meta["records"] + 2
    versions = {FRAME_V2.unpack_from(p.read_bytes())[1] for p in root.glob("segment-*.log")}
    assert versions == {2, 3}
    report = verify_buffer(root)
    assert report["corrupt_records"] == report["torn_bytes"] == 0
    assert report["records"] == meta["records"] + 2
