"""Small helpers shared by tests."""

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.01) -> bool:
    """Poll `cond` until it holds or `timeout_s` passes; every wait in a test is bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll_s)
    return False
