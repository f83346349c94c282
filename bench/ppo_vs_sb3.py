"""`fleet bench ppo_vs_sb3`: Fleet's PPO against Stable-Baselines3's on one gymnasium task.

Both learn `InvertedPendulum-v5` from scratch with the same env-step budget, seeds and matched
settings (1024-step batches, 10 epochs, minibatch 64, lr 3e-4, γ 0.99, λ 0.95, clip 0.2,
64×64 tanh MLPs with orthogonal init, initial action std 1 in env units, grad-norm 0.5, no
KL stop). Fleet runs its
real pieces in one process (`fleet.run.serial`: robot loop → on-disk buffer → learner → weights);
SB3 runs its own loop. value = Fleet's mean final return (10 deterministic episodes per seed),
baseline = SB3's, ratio = value / baseline; `steps_per_s_ratio` compares training speed.
Needs the bench extra: `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import mean

import torch

from actors.robots.gym import GymConfig, GymRobot
from actors.worker import WorkerConfig
from algorithms import AlgorithmConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPOConfig
from fleet.run.serial import SerialRun
from learner.build import LearnerParts
from learner.loop import LearnerConfig
from rewards.base import RewardConfig

ENV = "InvertedPendulum-v5"
EVAL_EPISODES = 10


def _evaluate_ours(policy: ChunkPolicy, seed: int) -> float:
    robot = GymRobot(GymConfig(ENV), "eval")
    returns = []
    for ep in range(EVAL_EPISODES):
        obs, total, done = robot.reset(10_000 * seed + ep), 0.0, False
        while not done:
            chunk, _ = policy.act(obs["state"], deterministic=True)
            fb = robot.send_action(chunk[0])
            obs, total, done = robot.get_observation(), total + fb.reward, fb.done
        returns.append(total)
    return mean(returns)


def _ours(seed: int, steps: int) -> tuple[float, float]:
    robot = GymRobot(GymConfig(ENV), f"ours-{seed}")
    policy = PolicyConfig(obs_dim=robot.spec.obs_dim, action_dim=1, horizon=1, hidden=64,
                          layers=2, init_std=1 / 3, learn_std=True, init="orthogonal")
    ppo = PPOConfig(epochs=10, minibatch=64, actor_lr=3e-4, critic_lr=3e-4, max_grad_norm=0.5,
                    target_kl=1e9, is_clip=2.0)
    with tempfile.TemporaryDirectory() as tmp:
        parts = LearnerParts(policy, None, AlgorithmConfig(ppo=ppo),
                             RewardConfig("env", {"scale": 1.0, "success_bonus": 0.0}),
                             LearnerConfig(batch_calls=1024, critic_warmup=0, max_wait_s=5,
                                           device="cpu"),
                             Path(tmp) / "checkpoints", seed=seed)
        run = SerialRun(robot, parts, WorkerConfig(horizon=1, calls_per_chunk=64, seed=seed + 1),
                        Path(tmp))
        t0 = time.perf_counter()
        run.train(steps)
        rate = run.worker.stats.env_steps / (time.perf_counter() - t0)
        run.close()
    return _evaluate_ours(run.learner.policy, seed), rate


def _sb3(seed: int, steps: int) -> tuple[float, float]:
    import gymnasium as gym
    from stable_baselines3 import PPO as SB3PPO

    env = gym.make(ENV)
    model = SB3PPO("MlpPolicy", env, n_steps=1024, batch_size=64, n_epochs=10,
                   learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                   max_grad_norm=0.5, seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    rate = steps / (time.perf_counter() - t0)
    returns = []
    for ep in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=10_000 * seed + ep)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step(action)
            total, done = total + float(r), term or trunc
        returns.append(total)
    return mean(returns), rate


def run(quick: bool) -> dict[str, object]:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as e:
        raise SystemExit('ppo_vs_sb3 needs Stable-Baselines3: pip install -e ".[bench]"') from e
    torch.set_num_threads(1)
    seeds, steps = ([0, 1, 2], 8_192) if quick else ([0, 1, 2], 60_000)
    ours = [_ours(s, steps) for s in seeds]
    theirs = [_sb3(s, steps) for s in seeds]
    value, baseline = mean(r for r, _ in ours), mean(r for r, _ in theirs)
    return {"bench": "ppo_vs_sb3", "metric": "final_return", "value": round(value, 1),
            "unit": "return", "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3) if baseline else float("nan"),
            "steps_per_s_ratio": round(mean(s for _, s in ours) / mean(s for _, s in theirs), 3),
            "env": ENV, "env_steps": steps, "seeds": seeds,
            "ours_per_seed": [round(r, 1) for r, _ in ours],
            "sb3_per_seed": [round(r, 1) for r, _ in theirs],
            "ours_steps_per_s": round(mean(s for _, s in ours)),
            "sb3_steps_per_s": round(mean(s for _, s in theirs)),
            "note": f"mean of {EVAL_EPISODES} deterministic episodes per seed after training"}
