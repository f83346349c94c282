"""PushT (gym-pusht) as a robot: a disc pushes a T-shaped block onto a fixed goal pose, seen by a
96×96 camera. `robot=pusht`.

Example:

    robot = PushTConfig("pusht", max_episode_steps=300).make("pusht-0")
    obs = robot.reset(seed=3)        # {"state": float32[2], "pixels": uint8[96, 96, 3]}
    fb = robot.send_action(np.array([0.1, -0.4], np.float32))
    fb.reward, fb.success            # coverage / success_coverage (clipped), coverage reached

Tasks: `pusht` observes the agent's position (`state`, scaled to [-1, 1]) and the camera
(`pixels`); `pusht-state` observes no image but the agent, the block position and the block
angle (cos, sin) as `state` [6], for fast state-only runs. An action in [-1, 1]^2 is the
target position of the disc (scaled to the env's 512×512 pixel workspace), as in Diffusion
Policy's PushT. The env's PD controller runs at 10 Hz. An episode succeeds when the block covers
`success_coverage` of the goal (gym-pusht's own threshold: 0.95). `start_offset > 0` is a named
variant ("pusht-near" in results): the block starts near the goal, so a short push succeeds.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec, check_kind, one_task

PUSHT_TASKS = {"pusht": 2, "pusht-state": 6}  # task -> state size
PUSHT_ACTIONS = 2
_WORKSPACE = 512.0


def _to_unit(xy: np.ndarray) -> np.ndarray:
    return (np.asarray(xy, np.float32) / _WORKSPACE) * 2.0 - 1.0


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


@dataclasses.dataclass(frozen=True)
class PushTConfig:
    """PushT from pixels (`pusht`) or from state (`pusht-state`); an episode succeeds at
    `success_coverage` of the goal covered."""

    task: str = "pusht"
    max_episode_steps: int = 300
    success_coverage: float = 0.95  # gym-pusht's own bar
    # 0: gym-pusht's own reset (block anywhere, any angle). > 0: the "near" variant: the block
    # starts within `start_offset` pixels (each axis) and `start_offset / 100` rad of the goal
    # pose, below `success_coverage`; the disc anywhere. A named variant, not gym-pusht's task.
    start_offset: float = 0.0
    kind: str = "pusht"

    def __post_init__(self) -> None:
        check_kind(self, "pusht")
        if self.task not in PUSHT_TASKS or not 0.0 < self.success_coverage <= 1.0:
            raise ValueError(f"robot.kind=pusht: robot.task must be one of "
                             f"{', '.join(PUSHT_TASKS)} (got {self.task!r}) and "
                             f"robot.success_coverage in (0, 1]")
        if not 0.0 <= self.start_offset <= 150.0:
            raise ValueError(f"robot.start_offset must be in [0, 150] pixels, got "
                             f"{self.start_offset}")
        if self.max_episode_steps < 1:
            raise ValueError(f"robot.max_episode_steps must be >= 1, got "
                             f"{self.max_episode_steps}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,)

    @property
    def obs_dim(self) -> int:
        return PUSHT_TASKS[self.task]

    @property
    def action_dim(self) -> int:
        return PUSHT_ACTIONS

    @property
    def has_expert(self) -> bool:
        return True  # PushTRobot.expert_action, a hand-written pusher

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> PushTRobot:
        one_task(self, tasks)
        return PushTRobot(self, robot_id)


class PushTRobot:
    """gym-pusht's PushT-v0 as a robot; `expert_action` is a hand-written pushing controller."""

    def __init__(self, config: PushTConfig | None = None, robot_id: str = "pusht-0") -> None:
        config = config or PushTConfig()
        task = config.task
        warnings.filterwarnings("ignore", module="gymnasium")
        warnings.filterwarnings("ignore", module="pygame")
        from gym_pusht.envs.pusht import PushTEnv

        self.pixels = task == "pusht"
        self._env: Any = PushTEnv(obs_type="pixels_agent_pos" if self.pixels else "state")
        self.max_episode_steps = config.max_episode_steps
        self.success_coverage = config.success_coverage
        self.start_offset = config.start_offset
        self.spec = RobotSpec(robot_id=robot_id, embodiment="pusht", task=task,
                              obs_dim=PUSHT_TASKS[task], action_dim=PUSHT_ACTIONS,
                              control_hz=10.0)
        self._steps = 0
        self._rng = np.random.default_rng()
        self._image = np.zeros((96, 96, 3), np.uint8)
        self._mode = "translate"

    def reset(self, seed: int | None = None) -> Observation:
        seed = int(self._rng.integers(2**31)) if seed is None else seed
        self._env.reset(seed=seed)
        if self.start_offset > 0:
            self._reset_near(np.random.default_rng(seed))
        self._steps = 0
        self._mode = "translate"
        self._observe()
        return self.get_observation()

    def _reset_near(self, rng: np.random.Generator) -> None:
        """The block near the goal pose (below the success bar), the disc anywhere clear of it."""
        gx, gy, gth = self._env.goal_pose
        d = self.start_offset
        for _ in range(100):
            block = [gx + rng.uniform(-d, d), gy + rng.uniform(-d, d),
                     gth + rng.uniform(-d, d) / 100.0]
            agent = rng.uniform(50.0, 450.0, 2)
            if np.linalg.norm(agent - block[:2]) < 110.0:  # the T's body origin (the bar)
                continue
            self._env.reset(options={"reset_to_state": [*agent, *block]})
            if self.coverage() < self.success_coverage:
                return
        raise RuntimeError("no start below the success bar in 100 draws")

    def _observe(self) -> None:
        if self.pixels:
            self._image = np.ascontiguousarray(self._env._render(), np.uint8)

    def get_observation(self) -> Observation:
        env = self._env
        agent = _to_unit(np.array(env.agent.position))
        if self.pixels:
            return {"state": agent, "pixels": self._image.copy()}
        block = _to_unit(np.array(env.block.position))
        angle = env.block.angle
        extra = np.array([np.cos(angle), np.sin(angle)], np.float32)
        return {"state": np.concatenate([agent, block, extra]).astype(np.float32)}

    def send_action(self, action: np.ndarray) -> Feedback:
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        target = (a + 1.0) * 0.5 * _WORKSPACE
        env = self._env
        # gym-pusht's step() without its observation: the image is rendered once, below
        n_steps = int(1 / (env.dt * env.control_hz))
        env._last_action = target
        for _ in range(n_steps):
            acc = env.k_p * (target - np.array(env.agent.position)) - env.k_v * np.array(
                env.agent.velocity)
            env.agent.velocity += (acc * env.dt).tolist()
            env.space.step(env.dt)
        self._steps += 1
        self._observe()
        coverage = self.coverage()
        success = coverage >= self.success_coverage
        reward = float(np.clip(coverage / self.success_coverage, 0.0, 1.0))
        return Feedback(reward, success, self._steps >= self.max_episode_steps and not success)

    def coverage(self) -> float:
        """The fraction of the goal T that the block covers."""
        return float(self._env._get_coverage())

    def expert_action(self) -> np.ndarray:
        """A scripted pusher: move the block's centre of gravity onto the goal's (pushing from
        behind it), then turn it (pushing one end of the bar), with hysteresis between the two.
        The disc goes round the block, not through it, to reach each pushing spot."""
        env = self._env
        block, agent = env.block, np.array(env.agent.position)
        cog = np.array(block.local_to_world(block.center_of_gravity))
        gx, gy, gth = env.goal_pose
        c, s = np.cos(gth), np.sin(gth)
        local_cog = np.array(block.center_of_gravity)
        goal_cog = np.array([gx, gy]) + np.array([c * local_cog[0] - s * local_cog[1],
                                                  s * local_cog[0] + c * local_cog[1]])
        err = goal_cog - cog
        dist = float(np.linalg.norm(err))
        dth = _wrap(gth - block.angle)
        if self._mode == "translate" and dist < 6.0 and abs(dth) > 0.06:
            self._mode = "rotate"
        elif self._mode == "rotate" and (dist > 20.0 or abs(dth) < 0.03):
            self._mode = "translate"
        if self._mode == "translate" or abs(dth) < 0.03:
            push = err / max(dist, 1e-6)
            ref, pre = cog, cog - push * 95.0  # behind the cog, clear of the whole T
            depth, ahead = min(dist, 25.0), -20.0
        else:  # a push at the bar's end, across the bar: torque of sign(dth) about the cog
            side = 1.0 if dth > 0 else -1.0
            bc, bs = np.cos(block.angle), np.sin(block.angle)
            ref = np.array(block.local_to_world((side * 52.0, 0.0)))
            push = np.array([-bs, bc])  # the body's +y axis
            pre, depth, ahead = ref - push * 35.0, min(20.0, 4.0 + 40.0 * abs(dth)), 5.0
        pre = np.clip(pre, 24.0, _WORKSPACE - 24.0)
        rel = agent - ref
        along = float(rel @ push)
        across = rel - push * along
        if along < ahead and float(np.linalg.norm(across)) < 12.0:  # on the pushing line
            target = agent + push * depth - across
        else:
            target = self._around(agent, pre, cog)
        return _to_unit(np.clip(target, 20.0, _WORKSPACE - 20.0)).astype(np.float32)

    @staticmethod
    def _around(agent: np.ndarray, goal: np.ndarray, centre: np.ndarray,
                radius: float = 95.0) -> np.ndarray:
        """The next waypoint from `agent` to `goal` that keeps clear of a disc at `centre`."""
        d = goal - agent
        t = float(np.clip((centre - agent) @ d / max(float(d @ d), 1e-6), 0.0, 1.0))
        if np.linalg.norm(agent + t * d - centre) > radius - 20.0:
            return goal
        a0 = np.arctan2(*(agent - centre)[::-1])
        a1 = np.arctan2(*(goal - centre)[::-1])
        step = float(np.clip(_wrap(a1 - a0), -0.6, 0.6))
        r = max(radius, float(np.linalg.norm(agent - centre)))
        return centre + r * np.array([np.cos(a0 + step), np.sin(a0 + step)])

    def pin_task(self, task: str | None) -> None:
        """One task only: accepted for the interface `MetaWorldRobot` gives."""
        if task not in (None, self.spec.task):
            raise ValueError(f"unknown task {task!r} for PushT robot {self.spec.task}")

    def close(self) -> None:
        self._env.close()
