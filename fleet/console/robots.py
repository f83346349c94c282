"""The fleet as the console sees it: a small Protocol, and its implementation over Ray actors.

Example:

    robots = RayRobots({"robot-0": handle})
    rows = robots.stats()                                   # one dict per robot
    robots.control("robot-0", {"cmd": "pause"})
    robots.control_many(robots.ids(), {"cmd": "estop"})    # sent to all before waiting on any
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from actors.control import CommandError


class Robots(Protocol):
    """What the console needs of a fleet: the robots' stats and a way to command them.

        rows = robots.stats()                      # one dict per robot
        robots.control("robot-0", {"cmd": "pause"})
        robots.control_many(robots.ids(), {"cmd": "estop"})  # {id: reply or {"error": ...}}
    """

    def ids(self) -> list[str]: ...

    def stats(self) -> list[dict[str, Any]]: ...

    def control(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]: ...

    def control_many(self, ids: list[str], command: dict[str, Any]) -> dict[str, Any]: ...

    def frame(self, robot_id: str) -> np.ndarray | None: ...


class RayRobots:
    """`Robots` over `fleet.remote.RobotActor` handles (simulated and bridged robots alike)."""

    def __init__(self, handles: dict[str, Any], timeout_s: float = 5.0) -> None:
        self.handles = handles
        self.timeout_s = timeout_s

    def ids(self) -> list[str]:
        return list(self.handles)

    def stats(self) -> list[dict[str, Any]]:
        import ray

        refs = {rid: h.stats.remote() for rid, h in self.handles.items()}
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout_s)
        rows = []
        for rid, ref in refs.items():
            try:
                rows.append(ray.get(ref, timeout=0))
            except Exception as e:  # a restarting or lost robot still gets its row
                rows.append({"robot_id": rid, "error": f"unreachable: {type(e).__name__}"})
        return rows

    def control(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]:
        import ray

        try:
            call = self.handles[robot_id].control
        except AttributeError:
            raise CommandError(f"{robot_id} has no console controls") from None
        reply: dict[str, Any] = ray.get(call.remote(command), timeout=self.timeout_s)
        return reply

    def control_many(self, ids: list[str], command: dict[str, Any]) -> dict[str, Any]:
        """One command to many robots, sent to all before waiting on any (the fleet e-stop)."""
        import ray

        refs, out = {}, {}
        for rid in ids:
            try:
                refs[rid] = self.handles[rid].control.remote(command)
            except AttributeError:
                out[rid] = {"error": f"{rid} has no console controls"}
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout_s)
        for rid, ref in refs.items():
            try:
                out[rid] = ray.get(ref, timeout=0)
            except Exception as e:
                cause = getattr(e, "cause", None) or e
                out[rid] = {"error": f"{type(cause).__name__}: {cause}"}
        return out

    def frame(self, robot_id: str) -> np.ndarray | None:
        import ray

        call = getattr(self.handles[robot_id], "frame", None)
        return None if call is None else ray.get(call.remote(), timeout=self.timeout_s)
