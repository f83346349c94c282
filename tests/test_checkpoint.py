"""Checkpoints as safetensors (`learner.checkpoint`): what goes in comes out, nothing is
unpickled, an older Fleet's `.pt` is read with `weights_only=True` or refused by name."""

import datetime
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from learner.checkpoint import FORMAT, CheckpointError, is_fleet_state, read_state, write_state


def optimizer_state() -> dict:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    return opt.state_dict()


def test_round_trip_keeps_types_and_values(tmp_path):
    weight = torch.randn(2, 3)
    state = {"policy": {"actor.weight": weight, "tied": weight},  # shared storage saves too
             "opt": optimizer_state(), "rng": torch.get_rng_state(),
             "replay": ({"obs": torch.zeros(5, 3, dtype=torch.bfloat16)}, 4), "empty": None,
             "counters": (1, 2, 0.5), "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
             "extra": {"wandb_id": "abc", "nan": float("nan")}, "list": [1, "a", [2.0]]}
    path = write_state(tmp_path / "c.safetensors", state)
    assert is_fleet_state(path) and not list(tmp_path.glob("*.tmp"))
    got = read_state(path)
    torch.testing.assert_close(got["policy"]["actor.weight"], weight, rtol=0, atol=0)
    assert got["opt"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert set(got["opt"]["state"]) == {0, 1}  # int keys stay ints: Adam reloads them
    torch.optim.Adam(torch.nn.Linear(3, 2).parameters()).load_state_dict(got["opt"])
    torch.testing.assert_close(got["opt"]["state"][0]["exp_avg"],
                               state["opt"]["state"][0]["exp_avg"], rtol=0, atol=0)
    assert got["replay"][0]["obs"].dtype == torch.bfloat16 and got["replay"][1] == 4
    assert got["counters"] == (1, 2, 0.5) and got["empty"] is None
    np.testing.assert_array_equal(got["arr"], state["arr"])
    assert got["arr"].dtype == np.int16
    assert got["extra"]["wandb_id"] == "abc" and np.isnan(got["extra"]["nan"])
    assert got["list"] == [1, "a", [2.0]]
    torch.set_rng_state(got["rng"])
    with safe_open(str(path), framework="pt") as f:  # plain safetensors, JSON in the header
        assert "policy/actor.weight" in f.keys()  # noqa: SIM118
        json.loads(f.metadata()[FORMAT])


def test_objects_are_refused_where_they_sit(tmp_path):
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"algorithm/replay is a Thing"):
        write_state(tmp_path / "c.safetensors", {"algorithm": {"replay": Thing()}})
    assert not list(tmp_path.iterdir())


def test_old_pickles_are_read_weights_only_or_refused(tmp_path):
    torch.save({"policy": {"w": torch.ones(2)}, "updates": 3}, tmp_path / "plain.pt")
    assert read_state(tmp_path / "plain.pt")["updates"] == 3

    # an object to rebuild (an older TD checkpoint held its replay as a dataclass)
    torch.save({"algorithm": datetime.date(2026, 1, 1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match=r"objects\.pt: cannot read it without unpickling"):
        read_state(tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        read_state(tmp_path / "missing.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match=r"torn\.safetensors: cannot read it"):
        read_state(tmp_path / "torn.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match="not a Fleet checkpoint"):
        read_state(tmp_path / "bare.safetensors")
