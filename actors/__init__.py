"""Robots and the loops that run them: drivers, action-chunk execution, rollout streaming."""
