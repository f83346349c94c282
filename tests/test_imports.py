"""The import direction of STYLE.md rule 2, checked on the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fleet", "learner", "actors", "buffers", "rewards", "algorithms")
ALLOWED = {
    "buffers": set(),
    "algorithms": {"buffers"},
    "rewards": {"buffers"},
    "actors": {"buffers"},
    "learner": {"buffers", "algorithms", "rewards"},
    "fleet": set(PACKAGES) | {"bench"},
    "bench": set(PACKAGES) - {"fleet"},
}
FORBIDDEN_OUTSIDE_FLEET = {"ray"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        found = imports_of(path)
        ours = found & (set(PACKAGES) | {"bench"}) - {package}
        where = path.relative_to(ROOT)
        assert ours <= ALLOWED[package], f"{where} imports {ours - ALLOWED[package]}"
        if package != "fleet":
            assert not found & FORBIDDEN_OUTSIDE_FLEET, f"{path.relative_to(ROOT)} imports ray"
        if package == "algorithms":
            assert not found & {"zmq", "ray"}, f"{path.relative_to(ROOT)} imports zmq or ray"


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom fleet.config import Config\n")
    assert {"ray", "fleet"} <= imports_of(bad)
