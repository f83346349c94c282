"""What a gateway checks when a robot registers: the spec agrees with itself and with the policy.

Example:

    why = check_register(msg.body, Contract(obs_dim=39, action_dim=4))
    if why is not None: ...                  # answer `error bad_register` with `why`

(The body has passed the `register` schema of `protocol.py` already.)
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Contract:
    """What the policy behind a gateway needs of each robot, checked when it registers.

        Contract(obs_dim=39, action_dim=4)                      # obs["state"] float32 [39]
        Contract(39, 4, {"pixels": ("uint8", (96, 96, 3))})      # and a camera the policy sees
    """

    obs_dim: int
    action_dim: int
    extra: dict[str, tuple[str, tuple[int, ...]]] = dataclasses.field(default_factory=dict)


def check_register(body: dict[str, Any], contract: Contract | None) -> str | None:
    """Why a registration (its body passed the schema) does not fit, or None. Without a contract
    the spec must still agree with itself: `state` is float32 [obs_dim]."""
    spec, state = body["obs_spec"], body["obs_spec"].get("state")
    if state is None:
        return f"obs_spec has no 'state' (it has {sorted(spec)}); state is float32 [obs_dim]"
    if state["dtype"] != "float32" or state["shape"] != [body["obs_dim"]]:
        return (f"obs_spec.state is {state['dtype']} {state['shape']}, expected float32 "
                f"[{body['obs_dim']}] (obs_dim)")
    if contract is None:
        return None
    for name, want in (("obs_dim", contract.obs_dim), ("action_dim", contract.action_dim)):
        if body[name] != want:
            return f"{name} is {body[name]}, the policy's is {want}"
    for name, (dtype, shape) in contract.extra.items():
        got = spec.get(name)
        if got is None or got["dtype"] != dtype or got["shape"] != list(shape):
            seen = "missing" if got is None else f"{got['dtype']} {got['shape']}"
            return f"obs_spec.{name} is {seen}, the policy reads {dtype} {list(shape)}"
    return None
