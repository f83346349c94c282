"""`fleet bench ppo_vs_sb3`: Fleet's PPO against Stable-Baselines3's on one gymnasium task.

Both learn `Hopper-v5` (MuJoCo) from scratch with the same env-step budget, seeds and matched
settings (1024-step batches, 10 epochs, minibatch 64, lr 3e-4, γ 0.99, λ 0.95, clip 0.2,
64×64 tanh MLPs with orthogonal init, initial action std 1 in env units, grad-norm 0.5, no
KL stop). Hopper does not saturate within these budgets (PPO needs ~1M steps to approach its
~3,000+ returns), so a loss of sample efficiency shows as a lower return instead of reading as
parity, as it did on InvertedPendulum (both at its cap of 1000). Fleet runs its real pieces in
one process (`fleet.run.serial`: robot loop → on-disk buffer → learner → weights); SB3 runs its
own loop. Each side is evaluated at several budgets (`budgets`: 10 deterministic episodes per
seed after that many env steps): value = Fleet's mean return at the last budget, baseline =
SB3's, ratio = value / baseline; `ours_by_budget` / `sb3_by_budget` give the whole curve and
`steps_per_s_ratio` compares training speed. `--quick`: 3 seeds × 30k steps (budgets 10k, 20k,
30k); else 3 seeds × 150k (25k, 50k, 100k, 150k).
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

ENV = "Hopper-v5"
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


def _action_half_range() -> float:
    import gymnasium as gym

    space = gym.make(ENV).action_space
    assert isinstance(space, gym.spaces.Box)
    return float((space.high - space.low).mean() / 2)


def _ours(seed: int, budgets: list[int]) -> tuple[list[float], float]:
    robot = GymRobot(GymConfig(ENV), f"ours-{seed}")
    policy = PolicyConfig(obs_dim=robot.spec.obs_dim, action_dim=robot.spec.action_dim,
                          horizon=1, hidden=64, layers=2, init_std=1 / _action_half_range(),
                          learn_std=True, init="orthogonal")
    ppo = PPOConfig(epochs=10, minibatch=64, actor_lr=3e-4, critic_lr=3e-4, max_grad_norm=0.5,
                    target_kl=1e9, is_clip=2.0)
    returns, train_s = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        parts = LearnerParts(policy, None, AlgorithmConfig(ppo=ppo),
                             RewardConfig("env", {"scale": 1.0, "success_bonus": 0.0}),
                             LearnerConfig(batch_calls=1024, critic_warmup=0, max_wait_s=5,
                                           device="cpu"),
                             Path(tmp) / "checkpoints", seed=seed)
        run = SerialRun(robot, parts, WorkerConfig(horizon=1, calls_per_chunk=64, seed=seed + 1),
                        Path(tmp))
        for budget in budgets:  # train on to each budget, then evaluate (not timed)
            t0 = time.perf_counter()
            run.train(budget)
            train_s += time.perf_counter() - t0
            returns.append(_evaluate_ours(run.learner.policy, seed))
        rate = run.worker.stats.env_steps / train_s
        run.close()
    return returns, rate


def _sb3(seed: int, budgets: list[int]) -> tuple[list[float], float]:
    import gymnasium as gym
    from stable_baselines3 import PPO as SB3PPO

    env = gym.make(ENV)
    model = SB3PPO("MlpPolicy", env, n_steps=1024, batch_size=64, n_epochs=10,
                   learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                   max_grad_norm=0.5, seed=seed, device="cpu", verbose=0)
    eval_env = gym.make(ENV)
    out, train_s, done_steps = [], 0.0, 0
    for budget in budgets:
        t0 = time.perf_counter()
        model.learn(total_timesteps=budget - done_steps, reset_num_timesteps=False)
        train_s += time.perf_counter() - t0
        done_steps = budget
        returns = []
        for ep in range(EVAL_EPISODES):
            obs, _ = eval_env.reset(seed=10_000 * seed + ep)
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, r, term, trunc, _ = eval_env.step(action)
                total, done = total + float(r), term or trunc
            returns.append(total)
        out.append(mean(returns))
    return out, model.num_timesteps / train_s


def run(quick: bool) -> dict[str, object]:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError as e:
        raise SystemExit('ppo_vs_sb3 needs Stable-Baselines3: pip install -e ".[bench]"') from e
    torch.set_num_threads(1)
    seeds = [0, 1, 2]
    budgets = [10_000, 20_000, 30_000] if quick else [25_000, 50_000, 100_000, 150_000]
    ours = [_ours(s, budgets) for s in seeds]
    theirs = [_sb3(s, budgets) for s in seeds]

    def by_budget(side: list[tuple[list[float], float]]) -> dict[str, float]:
        return {str(b): round(mean(r[i] for r, _ in side), 1) for i, b in enumerate(budgets)}

    value, baseline = mean(r[-1] for r, _ in ours), mean(r[-1] for r, _ in theirs)
    return {"bench": "ppo_vs_sb3", "metric": "mean_return_at_last_budget",
            "value": round(value, 1), "unit": "return", "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3) if baseline else float("nan"),
            "steps_per_s_ratio": round(mean(s for _, s in ours) / mean(s for _, s in theirs), 3),
            "env": ENV, "env_steps": budgets[-1], "budgets": budgets, "seeds": seeds,
            "ours_by_budget": by_budget(ours), "sb3_by_budget": by_budget(theirs),
            "ours_per_seed": [[round(x, 1) for x in r] for r, _ in ours],
            "sb3_per_seed": [[round(x, 1) for x in r] for r, _ in theirs],
            "ours_steps_per_s": round(mean(s for _, s in ours)),
            "sb3_steps_per_s": round(mean(s for _, s in theirs)),
            "note": f"mean of {EVAL_EPISODES} deterministic episodes per seed at each budget; "
                    "the evaluation is not timed"}
