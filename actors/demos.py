"""Demonstrations from a scripted expert with noise, recorded as rollout chunks.

Example:

    chunks = collect_demos(robot, episodes=20, noise=0.3, horizon=4, seed=0)

Each kept episode becomes one chunk whose steps are all flagged `intervened` (the expert, not the
policy, chose them), labelled with the task the episode ran and an episode id unique per task
(`demo_episode_id`). Only successful episodes are kept, as in the BC bases of FACTS.md. A robot
without an expert (`robot.kind=gym`) gives `random_states(robot, steps=1000, seed=0)` instead,
to scale a fresh policy's inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from actors.chunker import ChunkBuilder
from actors.robots.base import Robot, SimRobot
from buffers.records import EpisodeEnd, RolloutChunk


def collect_demos(robot: SimRobot, episodes: int, noise: float, horizon: int, seed: int,
                  max_attempts: int = 10) -> list[RolloutChunk]:
    """Run the expert until `episodes` successful noisy episodes are recorded."""
    rng = np.random.default_rng(seed)
    out: list[RolloutChunk] = []
    for attempt in range(episodes * max_attempts):
        if len(out) == episodes:
            break
        obs = robot.reset(seed=seed * 1_000_003 + attempt + 7_000_000)
        # After the reset, which is where a multi-task robot switches (or pins) its task: the
        # spec names the task this episode runs, for the chunk's header and the episode id.
        builder = ChunkBuilder(robot.spec, horizon, calls_per_chunk=10_000)
        builder.begin_episode(demo_episode_id(robot.spec.task, seed, attempt), obs)
        while True:
            if builder.call_done:
                builder.add_call(np.zeros((horizon, robot.spec.action_dim), np.float32), 0.0)
            action = robot.expert_action() + rng.normal(0.0, noise, robot.spec.action_dim)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
            fb = robot.send_action(action)
            builder.add_step(action, fb, robot.get_observation(), intervened=True)
            if fb.done:
                chunk = builder.flush(0, EpisodeEnd(fb.outcome))
                if fb.success:
                    out.append(_with_policy_actions(chunk))
                break
    if len(out) < episodes:
        raise RuntimeError(f"the expert succeeded in only {len(out)} of {episodes * max_attempts} "
                           f"episodes at noise {noise}; lower pretrain.noise")
    return out


def demo_episode_id(task: str, seed: int, attempt: int) -> str:
    """`demo-<task>-<seed>-<attempt>`, e.g. "demo-push-v3-0-4": deterministic, so a cache
    collected twice is the same, and unique across the tasks one demo buffer holds (all demos
    share the robot id, and the buffer keeps one chunk per (robot_id, episode_id, chunk_seq))."""
    return f"demo-{task}-{seed}-{attempt}"


def _with_policy_actions(chunk: RolloutChunk) -> RolloutChunk:
    """Fill policy_action [K, H, A] with the executed actions (last one repeated as padding)."""
    calls, horizon = chunk.num_calls, chunk.horizon
    idx = np.minimum(np.arange(calls * horizon), chunk.num_steps - 1)
    padded = chunk.action[idx].reshape(calls, horizon, -1)
    return dataclasses.replace(chunk, policy_action=padded.astype(np.float32))


def random_states(robot: Robot, steps: int, seed: int) -> np.ndarray:
    """`obs["state"]` [steps, obs_dim] over episodes of uniform random actions: what a robot
    without a scripted expert sees, to scale a fresh policy's inputs."""
    rng = np.random.default_rng(seed)
    states = [robot.reset(seed=seed)["state"]]
    while len(states) < steps:
        action = rng.uniform(-1.0, 1.0, robot.spec.action_dim).astype(np.float32)
        fb = robot.send_action(action)
        states.append(robot.get_observation()["state"])
        if fb.done and len(states) < steps:
            states.append(robot.reset(seed=int(rng.integers(2**31)))["state"])
    return np.stack(states)
