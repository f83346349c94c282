"""The import direction of STYLE.md rule 2, and no import circles between files, checked on the
source. Every import counts: module level, inside functions (lazy), and modules named in strings
(registries such as `bench.BENCHES`, `module:attr` entry points, `importlib.import_module`).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fleet", "learner", "actors", "buffers", "rewards", "algorithms", "bench")
ALLOWED = {
    "buffers": set(),
    "algorithms": {"buffers"},
    "rewards": {"buffers"},
    "actors": {"buffers"},
    "learner": {"buffers", "algorithms", "rewards"},
    "fleet": set(PACKAGES),  # the composition root; `fleet bench` loads bench/ by name
    "bench": set(PACKAGES),  # benchmarks sit beside the packages, like tests
}
MAY_IMPORT_RAY = {"fleet"}  # and tests/
# Benchmarks reach Ray through fleet/ (`fleet.remote.actor`, `get`, `local_ray`), but for these,
# which measure Ray or RLlib themselves or have not been moved yet:
BENCH_IMPORTS_RAY = {
    "bench/weight_sync.py": "its baseline is ray.put + ray.get themselves",
    "bench/rllib_peer.py": "runs RLlib, the peer it compares against",
    "bench/e2e_peers.py": "checks that RLlib, a peer, is installed",
    "bench/chaos.py": "kills actors (ray.kill) and catches Ray's errors: not moved yet",
}
_MODULE_STRING = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+(?::\w+)?$")  # a.b or a.b:attr


def module_of(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(tree: ast.AST, here: str = "", root: Path = ROOT) -> set[str]:
    """Every dotted module name the file imports or names in a string (one that is a module
    of ours: entry-point group names such as "fleet.rewards" are not); `from a import b` gives
    both `a` and `a.b` (b may be a module). Relative imports resolve against `here`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                _MODULE_STRING.match(node.value) and is_module(node.value.split(":")[0], root):
            names.add(node.value.split(":")[0])
    return names


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Top-level package names a file depends on."""
    return {n.split(".")[0] for n in imported_modules(ast.parse(path.read_text()), root=root)}


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))


def file_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ours (files) it imports."""
    files = {module_of(p, root): p for p in source_files(root)}
    graph = {}
    for mod, path in files.items():
        found = imported_modules(ast.parse(path.read_text()), mod, root)
        graph[mod] = {n for n in found if n in files and n != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    for path in (ROOT / package).rglob("*.py"):
        found = imports_of(path)
        ours = found & set(PACKAGES) - {package}
        where = path.relative_to(ROOT)
        assert ours <= ALLOWED[package], f"{where} imports {ours - ALLOWED[package]}"
        if package not in MAY_IMPORT_RAY and str(where) not in BENCH_IMPORTS_RAY:
            assert "ray" not in found, f"{where} imports ray"
        if package == "algorithms":
            assert not found & {"zmq", "ray"}, f"{where} imports zmq or ray"


def test_bench_exceptions_still_import_ray():
    """The list above shrinks as benchmarks move: a file that no longer imports ray leaves it."""
    for where in BENCH_IMPORTS_RAY:
        assert "ray" in imports_of(ROOT / where), f"{where} no longer imports ray: unlist it"


def test_no_import_circles_between_files():
    assert cycles(file_graph()) == []


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom fleet.config import Config\nX = {'a': 'rewards.env'}\n")
    assert {"ray", "fleet", "rewards"} <= imports_of(bad)  # rewards/env.py exists
    for name, text in (("a", "from fleet import b\n"), ("b", "def f():\n    import fleet.a\n")):
        (tmp_path / "fleet").mkdir(exist_ok=True)
        (tmp_path / "fleet" / f"{name}.py").write_text(text)
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    assert cycles(file_graph(tmp_path)) == [["fleet.a", "fleet.b"]]
