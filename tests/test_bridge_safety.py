"""Robot-side safety with a clock we choose: chunks queued behind others, and the limits."""

from __future__ import annotations

import numpy as np
import pytest

from actors.bridge.safety import Safety, SafetyConfig

HZ = 10.0  # one period = 0.1 s


def armed(**config: float) -> Safety:
    s = Safety(SafetyConfig(control_hz=HZ, **config), action_dim=1)  # type: ignore[arg-type]
    s.arm()
    return s


def test_a_chunk_queued_behind_another_gets_its_own_time():
    """Receding horizon: chunk B arrives while A runs. B's first action starts after A's last,
    so its deadline counts from there; a watchdog measured from B's arrival would trip here."""
    s = armed(watchdog_periods=2)
    s.push(np.zeros((4, 1), np.float32), now=0.0, tag=1)
    s.push(np.ones((4, 1), np.float32), now=0.0, tag=2)
    ran = [s.next_action(now=0.1 * k) for k in range(8)]
    assert all(a is not None for a in ran) and s.stats.watchdog_trips == 0
    assert s.current == (2, 3)


def test_watchdog_still_trips_on_a_late_queued_chunk():
    s = armed(watchdog_periods=2)
    s.push(np.zeros((4, 1), np.float32), now=0.0, tag=1)
    s.push(np.ones((4, 1), np.float32), now=0.0, tag=2)
    for k in range(4):
        assert s.next_action(now=0.1 * k) is not None
    assert s.next_action(now=0.4 + 0.3) is None  # B's first action was due by 0.4 + 0.2
    assert s.stats.watchdog_trips == 1 and s.tripped == 2 and s.queued == 0


def test_a_message_deadline_only_shortens_the_watchdog():
    s = armed(watchdog_periods=5)
    s.push(np.zeros((1, 1), np.float32), now=0.0, grace_s=0.05)
    assert s.next_action(now=0.06) is None and s.stats.watchdog_trips == 1
    s.push(np.zeros((1, 1), np.float32), now=0.0, grace_s=99.0)
    assert s.next_action(now=0.6) is None  # 5 periods, not 99 s


@pytest.mark.parametrize("bad", [np.full((2, 1), np.nan, np.float32),
                                 np.full((2, 1), np.inf, np.float32),
                                 np.zeros((2, 1), np.int32), np.zeros((2, 2), np.float32),
                                 np.zeros((0, 1), np.float32)])
def test_bad_chunks_are_refused_whole(bad):
    s = armed()
    assert s.push(bad, now=0.0) is not None and s.queued == 0 and s.next_action(0.0) is None


def test_range_and_rate_limits_start_from_the_hold_action():
    s = armed(max_delta=0.25)
    s.push(np.array([[3.0], [-3.0]], np.float32), now=0.0)
    first, second = s.next_action(0.0), s.next_action(0.1)
    assert first is not None and second is not None
    assert first[0] == pytest.approx(0.25) and second[0] == pytest.approx(0.0)
    assert s.stats.clipped == 2 and s.holding is False
    assert s.next_action(0.2) is None and s.holding  # empty queue: hold still
