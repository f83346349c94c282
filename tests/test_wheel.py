"""`pip install .` gives a `fleet` that trains: the wheel, installed into a fresh environment
with no source tree on the path, runs `fleet train experiment=smoke` from an empty directory.

The fresh environment reaches the test venv's dependencies (torch, ray, ...) through a plain path
line in a .pth file: plain lines add a folder to sys.path without running the .pth files in it,
so the test venv's editable-install finder (which maps `fleet` to this checkout) stays off.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "wandb", "outputs", "multirun")
# Run by the fresh interpreter, in the driver and in a Ray worker: where our packages come from.
WHERE = """
import json, sys, ray
def where():
    import actors, algorithms, buffers, configs, fleet, learner, rewards
    mods = (actors, algorithms, buffers, configs, fleet, learner, rewards)
    return {m.__name__: m.__file__ for m in mods}
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
print(json.dumps({"driver": where(), "worker": ray.get(ray.remote(where).remote()),
                  "editable": any("editable" in repr(f) for f in sys.meta_path)}))
"""


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


class Installed(NamedTuple):
    python: Path  # the fresh venv's interpreter
    site: Path  # its site-packages, where the wheel went
    env: dict[str, str]  # no PYTHONPATH: nothing of this checkout on the path


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """A fresh venv holding the built wheel and nothing else of ours."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info into the tree
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-q", "-w", tmp / "dist", source)
    (wheel,) = (tmp / "dist").glob("fleet-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    (site / "test-venv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
        site, wheel)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RAY_ADDRESS")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONWARNINGS="ignore",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return Installed(python, site, env)


@pytest.mark.slow
def test_the_wheel_ships_configs_and_the_console_page(installed, tmp_path):
    configs = ROOT / "configs"
    listed = {p.relative_to(configs).as_posix() for p in configs.rglob("*.yaml")}
    pages = {p.name for p in (ROOT / "fleet").rglob("*.html")}
    found = run(installed.python, "-c", "import configs, fleet, pathlib, json; print(json.dumps("
                "[[p.relative_to(pathlib.Path(m.__file__).parent).as_posix() for p in "
                "pathlib.Path(m.__file__).parent.rglob(g)] for m, g in ((configs, '*.yaml'), "
                "(fleet, '*.html'))]))", env=installed.env, cwd=tmp_path)
    yaml, html = json.loads(found.stdout)
    assert set(yaml) == listed and {Path(p).name for p in html} == pages


@pytest.mark.slow
def test_the_installed_wheel_trains(installed, tmp_path):
    python, site, env = installed
    where = json.loads(run(python, "-c", WHERE, env=env, cwd=tmp_path).stdout.splitlines()[-1])
    for side in ("driver", "worker"):  # Ray workers run sys.executable: the wheel's code too
        for name, file in where[side].items():
            assert Path(file).is_relative_to(site), f"{side} imports {name} from {file}"
            assert not Path(file).is_relative_to(ROOT), f"{side} imports {name} from {file}"
    assert not where["editable"]
    done = run(python, site / "bin" / "fleet", "train", "experiment=smoke", "run.name=wheel",
               f"run.dir={tmp_path / 'runs'}", f"pretrain.cache_dir={tmp_path / 'cache'}",
               "logger.wandb=disabled", "console.port=0", "pretrain.demos=1",
               "pretrain.bc.steps=20", "train.env_steps=600", "eval.episodes=1", env=env,
               cwd=tmp_path, timeout=400)
    summary = json.loads((tmp_path / "runs" / "wheel" / "summary.json").read_text())
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0, done.stdout[-2000:]
