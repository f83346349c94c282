"""`fleet bench fleet_capacity`'s parts: the size search, and a robot host running many paced
robots on a real buffer actor."""

from pathlib import Path

import numpy as np

from bench.fleet_capacity import POLICY, SharedPolicy, per_step_cpu_s, search


def test_search_doubles_then_bisects_to_the_largest_passing_size():
    tried: list[int] = []

    def passes(n: int) -> bool:
        tried.append(n)
        return n <= 100

    assert search(passes, 8, 1024, resolution=64) == 100
    assert tried[:6] == [8, 16, 32, 64, 128, 96]
    assert search(lambda n: n <= 100, 8, 1024, resolution=8) in range(88, 101)
    assert search(lambda n: True, 8, 256) == 256  # every size passed: the limit
    assert search(lambda n: False, 8, 256) == 0


def test_shared_policy_reports_the_version_it_adopted():
    class Weights:
        def __init__(self) -> None:
            from algorithms.factory import make_policy

            self.state = make_policy(POLICY).policy_state()

        def poll(self, have: int):
            return (5, self.state) if have < 5 else None

    from algorithms.factory import make_policy

    p = SharedPolicy(POLICY, make_policy(POLICY).policy_state(), Weights(), poll_s=0.0)
    assert p.poll(0) is None
    chunk, logp = p.act(np.zeros(POLICY.obs_dim, np.float32))
    assert chunk.shape == (POLICY.horizon, POLICY.action_dim) and np.isfinite(logp)
    assert p.poll(0) == (5, {}) and p.poll(5) is None
    assert per_step_cpu_s(200) > 0


def test_robot_host_runs_paced_robots_into_the_buffer(local_ray, tmp_path: Path):
    from algorithms.factory import make_policy
    from bench.fleet_capacity import RobotHost
    from buffers.store import BufferConfig
    from fleet.remote.buffer import BufferServer

    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    host = RobotHost.remote("h", make_policy(POLICY).policy_state(), buffer, None,
                            str(tmp_path / "spill"))
    out = local_ray.get(host.run_window.remote(6, 1.0, 0.3))
    assert out["errors"] == [] and out["robots"] == 6
    # 6 robots at 10 Hz for about a second: paced, so nowhere near an unpaced loop's thousands
    assert 0 < out["steps"] <= 6 * 10 * 3 and 0 <= out["missed"] <= out["steps"]
    info = local_ray.get(buffer.info.remote())
    assert info["records"] == out["chunks"] > 0  # every chunk acknowledged before it returned
