"""Stable-Baselines3 and RLlib PPO on Fleet's push-v3 task, for `fleet bench e2e_peers`.

Both peers learn the task exactly as Fleet's robots see it: `ChunkEnv` wraps Fleet's own
Meta-World robot (same episodes, 200-step cap, success ends the episode, actions clipped to
[-1, 1]) and Fleet's reward (`rewards.env.EnvReward`: env reward / 100, +10 on success); one
action is a whole chunk of H = 4 actions (16 numbers), its reward the discounted sum inside the
chunk, so γ per chunk is 0.99⁴ as in `algorithms.returns`. Observations are normalised by the
BC base's fixed statistics inside the env, so a peer's actor with the base's weights *is* the
base: each peer starts from the same BC policy as Fleet, with its fixed action std of 0.2.

Each peer trains for `budget_s` of wall clock (its own loop: sampling and updates), keeps its
actor every `every` env steps as a Fleet `policy_state()` (`fleet_state`), and writes
`<out>/<name>.json` (env steps, seconds) and `<out>/<name>-<steps>.npz`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from actors.robots.metaworld import MetaWorldConfig
from rewards.env import EnvReward

HORIZON, ACTIONS, OBS = 4, 4, 39
GAMMA = 0.99  # per env step, Fleet's PPOConfig.gamma
# Fleet's PPO defaults (algorithms/ppo.py, learner/loop.py) in each peer's terms
PPO: dict[str, Any] = {
       "calls_per_update": 1024, "epochs": 5, "minibatch": 128, "clip": 0.2, "lam": 0.95,
       "actor_lr": 3e-5, "critic_lr": 3e-4, "max_grad_norm": 1.0, "target_kl": 0.2,
       "critic_warmup": 5, "std": 0.2, "hidden": [256, 256]}


class ChunkEnv(gym.Env):
    """Fleet's push-v3 robot as a gymnasium env whose action is one chunk [H * A].

    info["env_steps"]: the env steps this chunk ran (fewer than H when the episode ended inside
    it); `shortfall_file`, when set, gets the running total of H - env_steps, so a peer that
    counts chunks (RLlib) can count env steps exactly.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.robot = MetaWorldConfig(config.get("task", "push-v3")).make(f"peer-{os.getpid()}")
        base = np.load(config["base"])
        self.mean, self.std = base["obs_mean"], np.maximum(base["obs_std"], 1e-3)
        self.reward = EnvReward()
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (OBS,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (HORIZON * ACTIONS,), np.float32)
        self.rng = np.random.default_rng(config.get("seed", 0) + os.getpid())
        self.shortfall, self.shortfall_file = 0, config.get("shortfall_file", "")
        if self.shortfall_file:
            self.shortfall_file = f"{self.shortfall_file}-{os.getpid()}-{id(self)}"

    def _obs(self, state: np.ndarray) -> np.ndarray:
        return np.clip((state - self.mean) / self.std, -10.0, 10.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        # Training seeds from 10⁶ up, as Fleet's robots (held-out seeds are 900000+)
        obs = self.robot.reset(int(self.rng.integers(10**6, 2**31)))
        return self._obs(obs["state"]), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        chunk = np.clip(np.asarray(action, np.float32).reshape(HORIZON, ACTIONS), -1.0, 1.0)
        total, n, fb = 0.0, 0, None
        for a in chunk:
            fb = self.robot.send_action(a)
            total += GAMMA ** n * (fb.reward * self.reward.scale
                                   + fb.success * self.reward.success_bonus)
            n += 1
            if fb.done:
                break
        assert fb is not None
        if n < HORIZON and self.shortfall_file:
            self.shortfall += HORIZON - n
            Path(self.shortfall_file).write_text(str(self.shortfall))
        obs = self._obs(self.robot.get_observation()["state"])
        terminal = fb.done and not fb.truncated
        return obs, total, terminal, fb.done and not terminal, {"env_steps": n,
                                                                "success": fb.success}


def fleet_state(layers: list[tuple[np.ndarray, np.ndarray]], log_std: np.ndarray,
                base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A peer's actor (its three linear layers, input first, and log std) as Fleet's
    `ChunkPolicy.policy_state()`, with the base's observation statistics (which the peer's env
    applies): Fleet's evaluator then runs every side's policy the same way."""
    state = {k: np.asarray(v) for k, v in base.items()}
    for (w, b), i in zip(layers, (0, 2, 4), strict=True):
        state[f"actor.{i}.weight"], state[f"actor.{i}.bias"] = np.asarray(w), np.asarray(b)
    state["log_std"] = np.asarray(log_std, np.float32)
    return state


def base_layers(base: dict[str, np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.as_tensor(base[f"actor.{i}.weight"]), torch.as_tensor(base[f"actor.{i}.bias"]))
            for i in (0, 2, 4)]


class Marks:
    """Snapshots every `every` env steps: `due(steps)` says when the next one is owed."""

    def __init__(self, out: Path, name: str, every: int, base: dict[str, np.ndarray]) -> None:
        self.out, self.name, self.every, self.base = out, name, every, base
        self.next_at, self.taken = every, []  # type: ignore[var-annotated]

    def due(self, steps: int) -> bool:
        return steps >= self.next_at

    def save(self, steps: int, layers: list[tuple[Any, Any]], log_std: Any) -> None:
        state = fleet_state(layers, log_std, self.base)
        np.savez(self.out / f"{self.name}-{steps}.npz", **state)  # type: ignore[arg-type]
        self.taken.append(steps)
        self.next_at = (steps // self.every + 1) * self.every


def tree_cpu(root: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by process `root` (this one) and every process
    under it (Ray's raylet and workers, SB3's env subprocesses), from /proc, by process name
    (a Ray worker's title, `ray::LearnerActorImpl`, else its program): the cost of a side in
    CPU, which the machine's other load does not change as it changes wall clock."""
    parent, cpu, name = {}, {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        pid = int(entry)
        parent[pid] = int(fields[1])  # utime, stime, cutime, cstime are fields 14-17
        cpu[pid] = sum(int(x) for x in fields[11:15]) / tick
        title = argv[0].decode(errors="replace").split()[0] if argv[0] else "?"
        name[pid] = (title.split(".")[0] if title.startswith("ray::")
                     else os.path.basename(title))
    tree, todo = set(), [root or os.getpid()]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [c for c, p in parent.items() if p == pid and c not in tree]
    out: dict[str, float] = {}
    for pid in tree:
        key = "driver" if pid == (root or os.getpid()) else name.get(pid, "?")
        out[key] = out.get(key, 0.0) + cpu.get(pid, 0.0)
    return out


def tree_cpu_s(root: int | None = None) -> float:
    """The CPU seconds of `tree_cpu`, all processes together."""
    return sum(tree_cpu(root).values())


def write_side(out: Path, name: str, **fields: Any) -> None:
    (out / f"{name}.json").write_text(json.dumps(fields))


# --- Stable-Baselines3 ---------------------------------------------------------------------

def run_sb3(base_path: Path, out: Path, budget_s: float, every: int, envs: int = 4,
            seed: int = 0, subprocesses: bool = True) -> None:
    """SB3 PPO, `envs` envs in subprocesses (SubprocVecEnv; else SB3's default DummyVecEnv,
    all in one process), one torch thread."""
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    torch.set_num_threads(1)
    t_start = time.monotonic()
    base = dict(np.load(base_path))
    vec = make_vec_env(ChunkEnv, n_envs=envs, seed=seed,
                       vec_env_cls=SubprocVecEnv if subprocesses else DummyVecEnv,
                       env_kwargs={"config": {"base": str(base_path), "seed": seed}})
    warmup = PPO["critic_warmup"]

    class FleetLikePPO(SB3PPO):
        """Fleet's two learning rates (actor, critic) and critic-only first updates: SB3 has
        one rate for all parameters, so its schedule is replaced by fixed per-group rates."""

        def _update_learning_rate(self, optimizers: Any) -> None:
            actor, critic = self.policy.optimizer.param_groups
            actor["lr"] = 0.0 if self._n_updates < warmup * self.n_epochs else PPO["actor_lr"]
            critic["lr"] = PPO["critic_lr"]

    model = FleetLikePPO(
        "MlpPolicy", vec, n_steps=PPO["calls_per_update"] // envs,
        batch_size=PPO["minibatch"], n_epochs=PPO["epochs"], gamma=GAMMA ** HORIZON,
        gae_lambda=PPO["lam"], clip_range=PPO["clip"], ent_coef=0.0, vf_coef=1.0,
        max_grad_norm=PPO["max_grad_norm"], target_kl=PPO["target_kl"], seed=seed,
        device="cpu", verbose=0,
        policy_kwargs={"net_arch": {"pi": PPO["hidden"], "vf": PPO["hidden"]},
                       "activation_fn": torch.nn.Tanh, "ortho_init": False,
                       "log_std_init": math.log(PPO["std"])})
    policy: Any = model.policy
    with torch.no_grad():  # the actor starts as the BC base; its std stays fixed (as Fleet's)
        actor = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
        for layer, (w, b) in zip([*actor, policy.action_net], base_layers(base), strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    policy.log_std.requires_grad_(False)
    actor_params = [*policy.mlp_extractor.policy_net.parameters(),
                    *policy.action_net.parameters()]
    critic_params = [*policy.mlp_extractor.value_net.parameters(),
                     *policy.value_net.parameters()]
    policy.optimizer = torch.optim.Adam([{"params": actor_params, "lr": PPO["actor_lr"]},
                                         {"params": critic_params, "lr": PPO["critic_lr"]}],
                                        eps=1e-5)
    marks = Marks(out, "sb3", every, base)

    def snapshot(steps: int) -> None:
        layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                  for m in [*actor, policy.action_net]]
        marks.save(steps, layers, policy.log_std.detach().numpy().copy())

    class Clock(BaseCallback):
        steps, deadline = 0, 0.0

        def _on_step(self) -> bool:
            self.steps += sum(int(i.get("env_steps", HORIZON)) for i in self.locals["infos"])
            if marks.due(self.steps):
                snapshot(self.steps)
            return time.monotonic() < self.deadline

    clock = Clock()
    t0, cpu0 = time.monotonic(), tree_cpu_s()
    clock.deadline = t0 + budget_s
    model.learn(total_timesteps=10**9, callback=clock)
    train_s, cpu_s = time.monotonic() - t0, tree_cpu_s() - cpu0
    snapshot(clock.steps)
    vec.close()
    write_side(out, "sb3", env_steps=clock.steps, train_s=train_s, cpu_s=cpu_s,
               updates=model._n_updates // model.n_epochs,
               startup_s=t0 - t_start, snapshots=marks.taken, envs=envs,
               vec_env="subprocesses" if subprocesses else "one process")
