"""A demonstration buffer: a `ReplayBuffer` directory written once, whole, and read back whole.

Example:

    write_demos(Path("runs/cache/demos-ab12"), chunks)    # raises if any chunk would be dropped
    chunks = read_demos(Path("runs/cache/demos-ab12"))    # raises unless all of them are there

Ingest is idempotent on the chunk key (robot_id, episode_id, chunk_seq), as it must be for
robots that resend. That makes a demo with a reused key vanish without a word: demos of ten
Meta-World tasks that shared their episode ids once left one demo of ten in the cache. So the
writer refuses any batch the buffer would not store whole, and records how many chunks it wrote
in `owner/demos.json` (the log's owner subdirectory, `buffers.log.OWNER_DIR`, which the log
never takes for a stray file); the reader checks the buffer still holds exactly that many.
The directory appears only once complete (written under a temporary name, then renamed), so a
crash mid-write leaves no half cache to be taken for a whole one.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from buffers.codec import decode_chunk, encode_chunk
from buffers.log import OWNER_DIR
from buffers.records import RolloutChunk
from buffers.store import ReplayBuffer

MANIFEST = f"{OWNER_DIR}/demos.json"
LEGACY_MANIFEST = "demos.json"  # beside the log, as caches of cache format 2 were first written


def write_demos(root: Path, demos: Sequence[RolloutChunk]) -> None:
    """Store `demos` as a new demonstration buffer at `root`; ValueError (and nothing at
    `root`) if the buffer would drop any of them as a duplicate or refuse one."""
    if root.exists():
        raise ValueError(f"{root} exists already: a demonstration buffer is written once")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash of an earlier process of this pid
    try:
        with ReplayBuffer(tmp) as buf:
            result = buf.insert([encode_chunk(d) for d in demos])
        if result.stored != len(demos):
            raise ValueError(f"the demo buffer {root} would keep {result.stored} of "
                             f"{len(demos)} demos: {_dropped(demos, result.refused)}")
        (tmp / MANIFEST).parent.mkdir()
        (tmp / MANIFEST).write_text(json.dumps({"chunks": len(demos)}))
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_demos(root: Path) -> list[RolloutChunk]:
    """Every demo written at `root` by `write_demos` (none if there is no such directory);
    RuntimeError if the buffer there holds another number of chunks than was written."""
    if not root.is_dir():
        return []
    manifest = root / MANIFEST
    if not manifest.is_file() and (root / LEGACY_MANIFEST).is_file():
        manifest = root / LEGACY_MANIFEST  # read as written; the log lists it as a stray
    if not manifest.is_file():
        raise RuntimeError(f"{root} has no {MANIFEST}: it was not written by write_demos (a "
                           f"cache from before demo ids were unique per task?); delete it")
    written = int(json.loads(manifest.read_text())["chunks"])
    with ReplayBuffer(root, read_only=True) as buf:
        demos = [decode_chunk(r) for r in buf.read(0, len(buf))[0]]
    if len(demos) != written:
        raise RuntimeError(f"the demo buffer {root} holds {len(demos)} chunks but {written} "
                           f"were written; delete it to collect the demos again")
    return demos


def _dropped(demos: Sequence[RolloutChunk], refused: Sequence[tuple[int, str]]) -> str:
    """What the buffer would drop, in words: keys used more than once, then refusals."""
    counts = collections.Counter(d.key for d in demos)
    repeated = [f"{k} x{n}" for k, n in counts.items() if n > 1]
    more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
    parts = [f"duplicate keys (robot_id, episode_id, chunk_seq) {', '.join(repeated[:3])}{more}"
             ] if repeated else []
    parts += [f"demo {i} refused: {why}" for i, why in refused]
    return "; ".join(parts)
