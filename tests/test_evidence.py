"""No figure without its raw file: the README's benchmark table and every raw file the docs cite.

- each bench has a row in README.md's benchmark table, and each row links the committed line
  `docs/results/bench-NAME.json`, which exists and is that bench's JSON line with the machine's
  load and the commit it ran at;
- a bench whose line is not committed yet is listed by name in "Known and open" (and its row
  must not pretend otherwise): the list and the files agree both ways;
- every `docs/results/...` path README.md and docs/results.md name exists.
"""

import json
import re
from pathlib import Path

from bench import BENCHES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RESULTS_MD = (ROOT / "docs" / "results.md").read_text()


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def bench_rows() -> dict[str, str]:
    rows = {}
    for line in section(README, "Benchmarks").splitlines():
        m = re.match(r"\| `([a-z0-9_]+)` \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def without_line() -> set[str]:
    """The benches "Known and open" lists as having no committed line."""
    known = section(README, "Known and open")
    m = re.search(r"^- Benches without a committed line[^:]*:(.*?)\.", known,
                  re.S | re.M)
    assert m, "Known and open must say which benches have no committed line (or 'none')"
    return set(re.findall(r"`([a-z0-9_]+)`", m.group(1)))


def test_every_bench_row_names_its_committed_line():
    rows, missing = bench_rows(), without_line()
    assert set(rows) == set(BENCHES), "one README row per bench in bench/__init__.py"
    for name, row in rows.items():
        path = f"docs/results/bench-{name}.json"
        if name in missing:
            assert not (ROOT / path).exists(), f"{path} is committed: drop {name} from the list"
            assert "no committed line" in row, f"the {name} row must say it has no raw line"
            continue
        assert f"({path})" in row, f"the {name} row must link {path}"
        line = json.loads((ROOT / path).read_text().strip().splitlines()[-1])
        assert line["bench"] == name and "value" in line and "baseline" in line
        if name not in ("collect", "actor_overhead", "weight_sync", "scaling"):
            # lines recorded since issue 19 (bench/record.py) carry the load and the commit;
            # the four above predate it (their load is in load_avg_1m_at_end or the note)
            assert ("loadavg_before" in line or "loadavg" in line) and "commit" in line, path


def test_every_cited_raw_file_exists():
    cited = set(re.findall(r"docs/results/[A-Za-z0-9_.*\-]+", README))
    cited |= {"docs/" + p for p in re.findall(r"\(?(results/[A-Za-z0-9_.*\-]+)", RESULTS_MD)}
    assert cited
    for path in cited:
        path = path.rstrip(".")
        if "NAME" in path:  # the pattern `docs/results/bench-NAME.json` itself
            continue
        matches = list(ROOT.glob(path)) if "*" in path else [ROOT / path]
        assert matches and all(m.exists() for m in matches), f"{path} is cited but missing"
