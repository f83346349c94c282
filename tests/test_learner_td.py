"""The learner feeding an off-policy algorithm: stale chunks kept, demos' offline phase once."""

import numpy as np
import pytest
import torch

from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.td import TD, TDConfig
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer
from learner.loop import Learner, LearnerConfig
from tests.chunks import make_chunk
from tests.fakes import ConstantReward, ListWeights
from tests.test_learner import fill

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_td_learner_keeps_stale_chunks_and_runs_the_offline_phase_once(tmp_path):
    rng = np.random.default_rng(1)
    demos = [make_chunk(rng, T=16, H=4, A=4, D=39, robot_id="expert", episode_id=f"d{i}",
                        end=EpisodeEnd("success"), intervened=True) for i in range(3)]
    with ReplayBuffer(tmp_path / "buf") as buf:
        fill(buf, 12, policy_version=0)  # 48 calls, all from version 0
        torch.manual_seed(0)
        policy = ChunkPolicy(PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32))
        td = TD(policy, TDConfig(hidden=32, minibatch=16, updates_per_step=0.05,
                                 offline_updates=5))
        learner = Learner(policy, td, ConstantReward(), buf, ListWeights(),
                          LearnerConfig(batch_calls=16, max_staleness=0, critic_warmup=0,
                                        max_wait_s=0.5), tmp_path / "ckpt", demos)
        first = learner.step()
        assert first["offline_critic_loss"] > 0 and len(td.demos) == 3 * 16
        second = learner.step()  # version-0 data at learner version 1: stale, still used
        assert "offline_critic_loss" not in second and second["dropped_stale"] == 0
        learner.step()
        assert len(td.online) == 12 * 16  # every step of the buffer replayed
        path = learner.save_checkpoint()
        again = TD(ChunkPolicy(policy.config), TDConfig(hidden=32))
        restored = Learner(again.policy, again, ConstantReward(), buf, ListWeights(),
                           LearnerConfig(), tmp_path / "ckpt", demos)
        restored.load_checkpoint(path)
        assert len(again.online) == 192 and len(again.demos) == 48
        assert restored.updates == 3  # so step() runs no second offline phase
