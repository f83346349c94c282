"""Coverage-guided fuzzing of one decoder with atheris (optional: `pip install atheris`).

    python -m bench.fuzz_atheris bridge_frame -atheris_runs=1000000
    python -m bench.fuzz_atheris buffer_record -max_total_time=300

Targets are `bench.fuzz`'s (`bridge_frame`, `buffer_record`, `console_body`), seeded from the
same valid inputs (written to a corpus folder in /tmp); a custom mutator mutates what is inside
the lz4 frame and frames it again, so inputs get past the frame to msgpack and the schema.
Anything but the decoder's own error type is a crash that libFuzzer reports with its input.
`fleet bench fuzz` is the run with a baseline; this one follows coverage into branches that
random mutation may miss.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris
import lz4.frame

with atheris.instrument_imports():
    from actors.bridge import protocol  # noqa: F401
    from buffers import codec  # noqa: F401
    from fleet.console import bodies  # noqa: F401

from bench.fuzz import _targets


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    targets = {t.name: t for t in _targets()}
    if name not in targets:
        raise SystemExit(f"usage: python -m bench.fuzz_atheris {'|'.join(targets)} [libFuzzer "
                         "flags]")
    target = targets[name]

    def one(data: bytes) -> None:
        with contextlib.suppress(target.error):
            target.decode(data)

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        inner = data
        if name != "console_body":
            with contextlib.suppress(RuntimeError):  # capped: a header may claim anything
                inner = lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=1 << 16)
        return bytes(target.frame(atheris.Mutate(inner, len(inner) + 64)))[:max(max_size, 1)]

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed_input in enumerate(target.outer):
        (corpus / f"seed{i}").write_bytes(seed_input)
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], one, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
