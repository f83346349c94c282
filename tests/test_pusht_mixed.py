"""Mixed embodiments in one run: a Sawyer arm and a PushT disc behind one padded shape, an action
mask in the chunks, and a shared policy whose log-probabilities ignore the padding."""

import numpy as np
import pytest
import torch

from actors.robots import make_robot
from actors.robots.mixed import MASK_KEY, MixedConfig, MixedRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig, input_keys, policy_input
from algorithms.ppo import PPO, PPOConfig
from buffers.codec import decode_chunk
from tests.fakes import ListOutbox, ListWeights

TASKS = ("push-v3", "pusht-state")


def test_mixed_robot_pads_observations_and_masks_actions():
    cfg = MixedConfig(task=",".join(TASKS), max_episode_steps=20)
    assert (cfg.obs_dim, cfg.action_dim) == (39 + 2, 4)
    robot = make_robot(cfg, "m0")
    assert isinstance(robot, MixedRobot)
    sawyer = robot.reset(seed=0)  # seed % 2 picks the task
    assert robot.spec.embodiment == "sawyer" and robot.spec.action_dim == 4
    assert sawyer["state"].shape == (41,) and list(sawyer[MASK_KEY]) == [1, 1, 1, 1]
    assert list(sawyer["state"][-2:]) == [1, 0]
    pusht = robot.reset(seed=1)
    assert (robot.spec.embodiment, robot.spec.task, robot.spec.obs_dim) == (
        "pusht", "pusht-state", 41)
    assert list(pusht[MASK_KEY]) == [1, 1, 0, 0] and list(pusht["state"][-2:]) == [0, 1]
    assert np.all(pusht["state"][6:39] == 0)
    # the padded action numbers are dropped: any values there, the same step
    a = robot.send_action(np.array([0.3, -0.2, 0.9, 0.9], np.float32))
    robot.reset(seed=1)
    b = robot.send_action(np.array([0.3, -0.2, -0.9, 0.0], np.float32))
    assert a == b
    assert robot.expert_action()[2:].tolist() == [0.0, 0.0]
    one = make_robot(cfg, "m1", tasks=("push-v3",))  # trains on one, evaluates on any
    one.pin_task("pusht-state")
    one.reset(seed=0)
    assert one.spec.task == "pusht-state" and one.tasks == ("push-v3",)
    with pytest.raises(ValueError, match="state-only"):
        MixedConfig(task="push-v3,pusht")
    robot.close()


def test_one_policy_trains_on_both_bodies_and_ignores_padding():
    torch.manual_seed(0)
    config = PolicyConfig(obs_dim=41, action_dim=4, horizon=4, hidden=32, mask_key=MASK_KEY)
    policy = ChunkPolicy(config)
    assert policy.takes_obs_dict and input_keys(config) == (MASK_KEY,)
    robot = MixedRobot(MixedConfig(",".join(TASKS), max_episode_steps=8))
    outbox = ListOutbox()
    worker = RobotWorker(robot, policy, outbox, ListWeights(), WorkerConfig(4, 2, seed=0))
    worker.run_episode(seed=0)
    worker.run_episode(seed=1)
    chunks = [decode_chunk(r) for r in outbox.records]
    assert {c.embodiment for c in chunks} == {"sawyer", "pusht"}
    assert all(c.obs[MASK_KEY].shape[1:] == (4,) and c.action.shape[1] == 4 for c in chunks)
    # log-probability of a PushT chunk does not depend on its padded numbers
    pusht = next(c for c in chunks if c.embodiment == "pusht")
    rows = policy_input(pusht.obs, input_keys(config))[:1]
    chunk = torch.as_tensor(pusht.policy_action[:1])
    other = chunk.clone()
    other[..., 2:] += 5.0
    assert torch.allclose(policy.log_prob(rows, chunk), policy.log_prob(rows, other))
    sawyer = next(c for c in chunks if c.embodiment == "sawyer")
    srows = policy_input(sawyer.obs, input_keys(config))[:1]
    sother = torch.as_tensor(sawyer.policy_action[:1]).clone()
    assert not torch.allclose(policy.log_prob(srows, sother),
                              policy.log_prob(srows, sother + 5.0))
    # the behaviour log-prob the robot recorded is the masked one the learner recomputes
    batch = PPO(policy, PPOConfig(epochs=1, minibatch=4)).prepare(chunks,
                                                                 [c.reward for c in chunks])
    assert torch.allclose(batch.prox_logp, batch.behaviour_logp, atol=1e-4)
    assert batch.obs.shape[1] == 41 + 4
