"""Reward models: the `RewardModel` seam, its registry and the models Fleet ships."""
