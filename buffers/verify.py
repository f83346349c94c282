"""Check a buffer directory without changing it: frames, record schemas and index files.

Example:

    report = verify_buffer(Path("runs/x/buffer"))   # what `fleet buffer verify PATH` prints
    report["corrupt_records"], report["torn_bytes"], report["unreadable_records"]

Read-only by construction: files are only read, so it is safe beside a live writer (whose
newest record may then show as a torn tail). Damage counts as in `SegmentLog` on open; an
index file that is missing or disagrees with its segment is listed under `indexes_to_rebuild`
(not damage: the next writable open rebuilds it from the segment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buffers.codec import RecordError, decode_chunk
from buffers.index import RecordMeta, load_index
from buffers.log import Position, list_segments, scan_segment
from buffers.stats import Counts


def verify_buffer(root: Path) -> dict[str, Any]:
    """The report of one buffer, or of every shard of a sharded one (`shard-NN/`) summed, with
    each shard's own report under `per_shard`."""
    shards = sorted(p for p in Path(root).glob("shard-*") if p.is_dir())
    if not shards:
        return _verify_one(Path(root))
    parts = [_verify_one(p) for p in shards]
    report: dict[str, Any] = {"shards": len(parts)}
    for key in ("segments", "records", "corrupt_records", "unreadable_records", "torn_bytes"):
        report[key] = sum(p[key] for p in parts)
    report["episodes_per_task"] = {}
    for part in parts:
        for task, n in part["episodes_per_task"].items():
            report["episodes_per_task"][task] = report["episodes_per_task"].get(task, 0) + n
    report["episodes"] = sum(p["episodes"] for p in parts)
    report["stray_files"] = [f"{s.name}/{f}" for s, p in zip(shards, parts, strict=True)
                             for f in p["stray_files"]]
    report["indexes_to_rebuild"] = [f"{s.name}/{i}" for s, p in zip(shards, parts, strict=True)
                                    for i in p["indexes_to_rebuild"]]
    report["notes"] = [f"{s.name}/{n}" for s, p in zip(shards, parts, strict=True)
                       for n in p["notes"]]
    report["per_shard"] = [{k: v for k, v in p.items() if k != "notes"} for p in parts]
    return report


def _verify_one(root: Path) -> dict[str, Any]:
    numbers, strays = list_segments(Path(root))
    report: dict[str, Any] = {"segments": len(numbers), "records": 0, "corrupt_records": 0,
                              "unreadable_records": 0, "torn_bytes": 0,
                              "indexes_to_rebuild": [], "stray_files": strays,
                              "notes": [f"{name}: not a file of the buffer, ignored"
                                        for name in strays]}
    counts = Counts()
    for i, n in enumerate(numbers):
        path = Path(root) / f"segment-{n:06d}.log"
        for meta in _segment(path, n, i == len(numbers) - 1, report):
            counts.update(meta, +1)
    summary = counts.summary()
    report["episodes"] = summary["episodes"]
    report["episodes_per_task"] = summary["episodes_per_task"]
    return report


def _segment(path: Path, n: int, last: bool, report: dict[str, Any]) -> list[RecordMeta]:
    data = path.read_bytes()
    found = scan_segment(data, newest=last)
    report["records"] += len(found.records)
    report["corrupt_records"] += found.damaged_records
    report["notes"] += [f"{path.name}: damaged record at byte {o}" for o, _ in found.damaged]
    if found.tail_at is not None and last:
        report["torn_bytes"] = found.size - found.tail_at
        report["notes"].append(f"{path.name}: torn tail of {report['torn_bytes']} bytes")
    elif found.tail_at is not None:
        report["corrupt_records"] += 1
        report["notes"].append(f"{path.name}: damaged from byte {found.tail_at} on")
    metas = []
    for offset, header, length in found.records:
        payload = data[offset + header:offset + header + length]
        try:
            metas.append(RecordMeta.of(decode_chunk(payload), Position(n, offset, length)))
        except RecordError as e:  # the checksum holds but the content breaks the schema
            report["unreadable_records"] += 1
            report["notes"].append(f"{path.name}: record at byte {offset} unreadable: {e}")
    if not last:
        saved = load_index(path.parent, n, len(data))
        if saved is None or saved.metas != metas:
            report["indexes_to_rebuild"].append(path.with_suffix(".idx").name)
    return metas
