"""RLlib PPO (new API stack) on Fleet's push-v3 task, for `fleet bench e2e_peers`.

Separate from `bench.peers` because it imports RLlib at the top: RLlib pickles its module and
learner classes by reference, so they must live at module level. RLlib needs its own extras
beside `ray[default]` (dm-tree, ormsgpack, pandas: the `bench` extra).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from bench.peers import GAMMA, HORIZON, PPO, ChunkEnv, Marks, tree_cpu_s, write_side

ACTOR = ("encoder.actor_encoder.net.mlp.0", "encoder.actor_encoder.net.mlp.2", "pi.net.mlp.0")


class BaseInitModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO module (separate actor and critic MLPs, a free log std), its actor
    set to the BC base and its std fixed, on every runner and the learner alike."""

    def setup(self) -> None:
        super().setup()
        config: Any = self.model_config
        base = np.load(config["base"])
        own = self.state_dict()
        with torch.no_grad():
            for name, i in zip(ACTOR, (0, 2, 4), strict=True):
                own[f"{name}.weight"].copy_(torch.as_tensor(base[f"actor.{i}.weight"]))
                own[f"{name}.bias"].copy_(torch.as_tensor(base[f"actor.{i}.bias"]))
            own["pi.log_std"].copy_(torch.as_tensor(base["log_std"]))
        self.pi.log_std.requires_grad_(False)


class TwoRatesLearner(PPOTorchLearner):
    """Fleet's two Adam optimisers (actor 3e-5, critic 3e-4) instead of RLlib's one."""

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        modules: Any = self._module
        module = modules[module_id]
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        for name, prefixes, lr in (("actor", ("encoder.actor_encoder", "pi."), PPO["actor_lr"]),
                                   ("critic", ("encoder.critic_encoder", "vf."),
                                    PPO["critic_lr"])):
            params = [p for n, p in named if n.startswith(prefixes)]
            self.register_optimizer(module_id=module_id, optimizer_name=name,
                                    optimizer=torch.optim.Adam(params), params=params,
                                    lr_or_lr_schedule=lr)


def run_rllib(base_path: Path, out: Path, budget_s: float, every: int, runners: int = 2,
              envs_per_runner: int = 2, seed: int = 0) -> None:
    """`runners` env runners × `envs_per_runner` envs, the learner in the driver
    (num_learners=0), one torch thread; trains `budget_s` of wall clock."""
    torch.set_num_threads(1)
    t_start = time.monotonic()
    base = dict(np.load(base_path))
    ray.init(num_cpus=max(os.cpu_count() or 1, 2), include_dashboard=False,
             logging_level=logging.ERROR, object_store_memory=512 * 1024**2,
             _system_config={"worker_niceness": 0})  # as Fleet's own Ray (RAY_SYSTEM_CONFIG)
    config = (
        PPOConfig()
        .environment(ChunkEnv, env_config={"base": str(base_path), "seed": seed,
                                           "shortfall_file": str(out / "rllib-shortfall")})
        .framework("torch")
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs_per_runner,
                     rollout_fragment_length="auto")
        .learners(num_learners=0)
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=BaseInitModule,
            model_config={"fcnet_hiddens": PPO["hidden"], "fcnet_activation": "tanh",
                          "vf_share_layers": False, "free_log_std": True,
                          "head_fcnet_hiddens": [], "base": str(base_path)}))
        .training(learner_class=TwoRatesLearner,
                  train_batch_size_per_learner=PPO["calls_per_update"],
                  minibatch_size=PPO["minibatch"], num_epochs=PPO["epochs"],
                  gamma=GAMMA ** HORIZON, lambda_=PPO["lam"], clip_param=PPO["clip"],
                  lr=PPO["actor_lr"], use_kl_loss=False, entropy_coeff=0.0,
                  vf_loss_coeff=1.0, vf_clip_param=float("inf"),
                  grad_clip=PPO["max_grad_norm"], grad_clip_by="global_norm")
        .debugging(seed=seed, log_level="ERROR")
    )
    algo = config.build_algo()
    marks = Marks(out, "rllib", every, base)

    def env_steps(result: dict[str, Any]) -> int:
        chunks = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
        lost = sum(int(p.read_text() or 0) for p in out.glob("rllib-shortfall-*"))
        return chunks * HORIZON - lost

    def snapshot(steps: int) -> None:
        group: Any = algo.learner_group
        state = group.get_weights()["default_policy"]
        layers = [(np.asarray(state[f"{k}.weight"]), np.asarray(state[f"{k}.bias"]))
                  for k in ACTOR]
        marks.save(steps, layers, np.asarray(state["pi.log_std"]))

    t0, cpu0, steps, iterations = time.monotonic(), tree_cpu_s(), 0, 0
    while time.monotonic() - t0 < budget_s:
        steps = env_steps(algo.train())
        iterations += 1
        if marks.due(steps):
            snapshot(steps)
    train_s, cpu_s = time.monotonic() - t0, tree_cpu_s() - cpu0
    snapshot(steps)
    algo.stop()
    ray.shutdown()
    write_side(out, "rllib", env_steps=steps, train_s=train_s, cpu_s=cpu_s, updates=iterations,
               startup_s=t0 - t_start, snapshots=marks.taken, envs=runners * envs_per_runner)
