"""The segment log on its own: framing, reopen, rotation, torn tails, damage, fsync policies."""

import shutil

import numpy as np
import pytest

import buffers.log as log_module
from buffers.log import FRAME, CorruptLogError, SegmentLog


def payloads(n, size=200, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size + i % 7, dtype=np.uint8).tobytes() for i in range(n)]


def contents(log):
    return [payload for _, payload in log]


def segment_files(root):
    return sorted(root.glob("segment-*.log"))


def test_reopen_keeps_records_and_appends_go_on(tmp_path):
    recs = payloads(10)
    log = SegmentLog(tmp_path)
    positions = log.append(recs[:6])
    assert [log.read(p) for p in positions] == recs[:6]
    log.close()
    log = SegmentLog(tmp_path)
    assert contents(log) == recs[:6] and log.recovery.torn_bytes == 0
    log.append(recs[6:])
    log.close()
    log = SegmentLog(tmp_path)
    assert contents(log) == recs and len(log) == 10
    assert log.bytes == sum(FRAME.size + len(r) for r in recs)
    log.close()


def test_rotates_at_segment_bytes(tmp_path):
    recs = payloads(40)
    with_frames = FRAME.size + 210
    log = SegmentLog(tmp_path, segment_bytes=5 * with_frames)
    log.append(recs[:25])
    log.append(recs[25:])
    big = bytes(20 * with_frames)  # larger than a segment: it gets one of its own
    log.append([big])
    log.close()
    files = segment_files(tmp_path)
    assert len(files) > 8 and files[0].name == "segment-000000.log"
    assert all(f.stat().st_size <= 5 * with_frames for f in files[:-1])
    log = SegmentLog(tmp_path, segment_bytes=5 * with_frames)
    assert contents(log) == [*recs, big] and log.segments == len(files)
    log.close()


def _torn_copies(tmp_path, data_dir, last_len):
    """Yield (dir, cut) for copies of the log whose last segment ends at every byte offset
    inside its last record."""
    last = segment_files(data_dir)[-1]
    data = last.read_bytes()
    start = len(data) - FRAME.size - last_len
    for cut in range(start, len(data)):
        copy = tmp_path / f"cut{cut}"
        shutil.copytree(data_dir, copy)
        (copy / last.name).write_bytes(data[:cut])
        yield copy, cut - start
        shutil.rmtree(copy)


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path):
    recs = payloads(12, size=60)
    src = tmp_path / "src"
    log = SegmentLog(src, segment_bytes=400)
    log.append(recs)
    log.close()
    assert len(segment_files(src)) > 2
    for copy, torn in _torn_copies(tmp_path, src, len(recs[-1])):
        log = SegmentLog(copy, segment_bytes=400)
        assert contents(log) == recs[:-1]  # everything earlier, nothing corrupt
        assert (log.recovery.torn_bytes, log.recovery.corrupt_records) == (torn, 0)
        log.append([b"after the crash"])
        log.close()
        log = SegmentLog(copy, segment_bytes=400)
        assert contents(log) == [*recs[:-1], b"after the crash"]
        assert log.recovery.torn_bytes == 0  # the tail was cut away, for good
        log.close()


def _damage(root, record, byte, segment=0):
    """Flip one bit of record `record` of `segment`, `byte` bytes into its frame."""
    path = segment_files(root)[segment]
    log = SegmentLog(root)
    pos = [p for p, _ in log if p.segment == segment][record]
    log.close()
    data = bytearray(path.read_bytes())
    data[pos.offset + byte] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("byte", [0, 8, 12, FRAME.size + 3, FRAME.size + 150])
def test_flipped_bit_in_a_middle_record_is_skipped(tmp_path, byte):
    """In the magic, the length, the CRC or the payload: the record is skipped, the ones after
    it are found again by scanning for the next valid header."""
    recs = payloads(8)
    log = SegmentLog(tmp_path)
    log.append(recs)
    log.close()
    _damage(tmp_path, 3, byte)
    log = SegmentLog(tmp_path)
    assert contents(log) == recs[:3] + recs[4:]
    assert log.recovery.corrupt_records == 1 and log.recovery.torn_bytes == 0
    assert "damaged record" in log.recovery.notes[0]
    log.close()
    with pytest.raises(CorruptLogError, match="damaged"):
        SegmentLog(tmp_path, strict=True)


def test_damage_at_the_end_of_a_sealed_segment_is_not_truncated(tmp_path):
    recs = payloads(12, size=60)
    log = SegmentLog(tmp_path, segment_bytes=400)
    log.append(recs)
    log.close()
    first = segment_files(tmp_path)[0]
    size = first.stat().st_size
    first.write_bytes(first.read_bytes()[:-5])  # only a crash mid-append may tear the newest
    log = SegmentLog(tmp_path, segment_bytes=400)
    got = contents(log)
    assert got == [r for r in recs if r in got] and len(got) == 11
    assert log.recovery.corrupt_records == 1 and log.recovery.torn_bytes == 0
    assert first.stat().st_size == size - 5  # reported, left as found
    log.close()
    with pytest.raises(CorruptLogError):
        SegmentLog(tmp_path, segment_bytes=400, strict=True)


def test_read_rechecks_the_crc(tmp_path):
    log = SegmentLog(tmp_path)
    pos = log.append(payloads(3))
    data = bytearray((tmp_path / "segment-000000.log").read_bytes())
    data[pos[1].offset + FRAME.size + 10] ^= 0x01
    (tmp_path / "segment-000000.log").write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        log.read(pos[1])
    log.close()


@pytest.mark.parametrize(("policy", "interval_ms", "on_append", "on_close"),
                         [("always", 200, 5, 0), ("interval_ms", 10**6, 0, 1),
                          ("never", 200, 0, 1)])  # interval_ms in time: test_buffer_durability
def test_fsync_policies(tmp_path, monkeypatch, policy, interval_ms, on_append, on_close):
    calls = []
    real = log_module.os.fsync
    monkeypatch.setattr(log_module.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    log = SegmentLog(tmp_path, fsync=policy, fsync_interval_ms=interval_ms)
    for p in payloads(5):
        log.append([p])
    assert len(calls) == on_append
    log.close()
    assert len(calls) == on_append + on_close


def test_refuses_unknown_fsync_policy(tmp_path):
    with pytest.raises(ValueError, match="always, interval_ms, never"):
        SegmentLog(tmp_path, fsync="sometimes")


def test_frames_carry_crc32c_of_the_payload(tmp_path):
    from crc32c import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    log = SegmentLog(tmp_path)
    log.append([b"123456789"])
    log.close()
    data = segment_files(tmp_path)[0].read_bytes()
    magic, version, _flags, length, crc, head_crc = FRAME.unpack_from(data)
    assert (magic, version, length, crc) == (b"FLTR", 3, 9, 0xE3069283)
    assert head_crc == crc32c(data[:16]) and len(data) == 20 + 9


def test_version_1_frames_with_zlib_crc32_still_read_beside_new_ones(tmp_path):
    import zlib

    old, new = payloads(5), payloads(4, seed=1)
    log = SegmentLog(tmp_path, version=1)  # a log written before CRC-32C
    log.append(old)
    log.close()
    first = segment_files(tmp_path)[0].read_bytes()
    _magic, version, _flags, length, crc = log_module.FRAME_V2.unpack_from(first)
    assert version == 1 and crc == zlib.crc32(old[0]) and length == len(old[0])
    log = SegmentLog(tmp_path, strict=True)  # reopened by this build: appends CRC-32C frames
    assert contents(log) == old
    log.append(new)
    log.close()
    log = SegmentLog(tmp_path, strict=True)
    assert contents(log) == old + new and log.recovery.corrupt_records == 0
    log.close()
    assert log_module.verify_log(tmp_path)["corrupt_records"] == 0


def test_a_checksum_of_the_wrong_kind_for_its_version_is_damage(tmp_path):
    log = SegmentLog(tmp_path, version=2)
    log.append(payloads(3))
    log.close()
    path = segment_files(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[4] = 1  # claim version 1 (zlib CRC-32) for a frame checksummed with CRC-32C
    path.write_bytes(bytes(data))
    log = SegmentLog(tmp_path)
    assert len(log) == 2 and log.recovery.corrupt_records == 1
    log.close()
    with pytest.raises(ValueError, match="frame version"):
        SegmentLog(tmp_path, version=4)


def test_short_writes_go_on_where_they_stopped(tmp_path, monkeypatch):
    import os

    real = os.writev

    def stingy(fd, buffers):  # the kernel may write less than asked (a signal, a full disk)
        first = bytes(buffers[0])
        return real(fd, [first[:max(1, len(first) // 3)]])

    recs = payloads(6)
    log = SegmentLog(tmp_path, fsync="never")
    monkeypatch.setattr(log_module.os, "writev", stingy)
    log.append(recs)
    monkeypatch.setattr(log_module.os, "writev", real)
    log.close()
    log = SegmentLog(tmp_path, strict=True)
    assert contents(log) == recs and log.recovery.torn_bytes == 0
    log.close()
