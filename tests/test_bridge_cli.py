"""`fleet keys` and `fleet robot`: keys on disk, and a robot process joining a gateway process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors.bridge.keys import load_allowlist
from fleet.cli import main

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
# Runs fleet.robot_cli as a robot would: anything beyond numpy, pyzmq, msgpack, lz4 (and
# gymnasium for --gym) fails to import.
BARE = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "torch", "rich", "hydra", "omegaconf", "wandb",
                                  "learner", "algorithms", "metaworld"}:
            raise ImportError(f"a robot computer has no {name}")
sys.meta_path.insert(0, Block())
sys.argv = ["fleet-robot", *sys.argv[1:]]
runpy.run_module("fleet.robot_cli", run_name="__main__")
"""


def test_keys_are_written_once_with_private_secrets(tmp_path: Path) -> None:
    assert main(["keys", "arm-1", "arm-2", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "server.key_secret").stat().st_mode & 0o077 == 0
    assert (tmp_path / "robots" / "arm-1.key_secret").stat().st_mode & 0o077 == 0
    assert sorted(load_allowlist(tmp_path).values()) == ["arm-1", "arm-2"]
    with pytest.raises(FileExistsError):
        main(["keys", "arm-1", "--dir", str(tmp_path)])
    with pytest.raises(ValueError, match="bad robot id"):
        main(["keys", "../evil", "--dir", str(tmp_path)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bare_robot_process_joins_a_gateway_process(tmp_path: Path) -> None:
    main(["keys", "arm-1", "--dir", str(tmp_path)])
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # The gateway prints who is connected every second; both processes are stopped (SIGTERM) once
    # it has printed the robot connected, so a slow start on a loaded machine only makes it longer.
    gateway = subprocess.Popen(
        [sys.executable, "-m", "fleet.robot_cli", "robot", "gateway", "--bind", endpoint,
         "--keys", str(tmp_path), "--seconds", "60"], cwd=ROOT, stdout=subprocess.PIPE,
        text=True)
    robot = subprocess.Popen(
        [sys.executable, "-c", BARE, "robot", "run", "arm-1", "--gateway", endpoint,
         "--server-key", str(tmp_path / "server.key"),
         "--key", str(tmp_path / "robots" / "arm-1.key_secret"),
         "--gym", "InvertedPendulum-v5", "--seconds", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert gateway.stdout is not None
    lines = []
    for line in gateway.stdout:  # ends when the gateway does (60 s at most)
        lines.append(json.loads(line))
        if lines[-1].get("robots") == {"arm-1": "estop"}:  # connected, not armed (no --arm)
            break
    robot.terminate()  # it stops as at the end of --seconds: holding still, printing its stats
    robot_out, robot_err = robot.communicate(timeout=60)
    gateway.terminate()
    gateway.communicate(timeout=30)
    assert robot.returncode == 0, robot_err
    stats = json.loads(robot_out.strip().splitlines()[-1])
    assert stats["registered"] and stats["dropped"] == 0 and stats["acted"] == 0
    assert lines[0]["allowed"] == ["arm-1"]
    assert lines[-1].get("robots") == {"arm-1": "estop"}, lines
