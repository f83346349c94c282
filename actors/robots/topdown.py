"""A synthetic top-down camera for Meta-World: the hand, the objects and the goal drawn from the
simulator's true positions into a small uint8 image, with numpy (no renderer).

Not a rendered camera: MuJoCo's own renderer makes ~8 frames/s on this CPU (OSMesa; FACTS.md),
too slow for image RL here, so this camera draws flat discs where the simulator says things
are. A policy that sees it must still find the object and the goal in the pixels: with
`robot.camera=topdown` the robot's `state` holds only the hand (proprioception).

Example:

    cam = TopDownCamera(size=96)
    frame = cam.draw(obs39)      # uint8 [96, 96, 3] from Meta-World's 39-number observation

What it draws, in order (later on top), over a grey table seen from above, x to the right and
y (away from the robot's base) upwards, covering x in [-0.25, 0.25] m and y in [0.45, 0.95] m
(5.2 mm a pixel at 96): the goal as a green disc of radius 5 cm (push-v3's success distance),
the first object (Meta-World's obs[4:7]) as a red disc of 2.5 cm and the second (obs[11:14],
where the task has one) as an orange one, and the hand (obs[0:3]) as a blue ring, so an object
under the hand stays visible. Edges are anti-aliased, so positions finer than a pixel show as
shading. Objects lifted off the table (z above 4 cm) are drawn brighter.
"""

from __future__ import annotations

import numpy as np

X_RANGE = (-0.25, 0.25)  # metres, left to right
Y_RANGE = (0.45, 0.95)  # metres, bottom (near the robot) to top
TABLE = np.array([110, 110, 110], np.float32)
GOAL = np.array([40, 170, 60], np.float32)
OBJECT = np.array([220, 40, 40], np.float32)
OBJECT2 = np.array([240, 150, 30], np.float32)
HAND = np.array([40, 80, 230], np.float32)


class TopDownCamera:
    """Draws Meta-World's positions (hand obs[0:3], objects obs[4:7] and obs[11:14], goal
    obs[36:39]) into uint8 [size, size, 3]; ~0.4 ms a frame at 96 on this CPU."""

    def __init__(self, size: int = 96) -> None:
        if size < 16:
            raise ValueError(f"camera size must be >= 16 pixels, got {size}")
        self.size = size
        self.px = size / (X_RANGE[1] - X_RANGE[0])  # pixels per metre
        idx = np.arange(size, dtype=np.float32) + 0.5
        self._cols = idx[None, :]  # [1, size]
        self._rows = idx[:, None]  # [size, 1]

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        """(column, row) of the point (x, y) in metres; row 0 is the far edge (y high)."""
        return ((x - X_RANGE[0]) * self.px, (Y_RANGE[1] - y) * self.px)

    def _disc(self, x: float, y: float, radius: float, inner: float = 0.0) -> np.ndarray:
        """Coverage [size, size] in [0, 1] of a disc (a ring when inner > 0), anti-aliased."""
        c, r = self.pixel(x, y)
        d = np.sqrt((self._cols - c) ** 2 + (self._rows - r) ** 2)
        cover = np.clip(radius * self.px - d + 0.5, 0.0, 1.0)
        if inner > 0:
            cover = cover * np.clip(d - inner * self.px + 0.5, 0.0, 1.0)
        return cover

    def draw(self, obs: np.ndarray) -> np.ndarray:
        """uint8 [size, size, 3] from Meta-World's observation (39 numbers)."""
        o = np.asarray(obs, np.float32)
        img = np.empty((self.size, self.size, 3), np.float32)
        img[:] = TABLE
        layers = [(o[36], o[37], 0.05, 0.0, GOAL)]
        for start, colour in ((4, OBJECT), (11, OBJECT2)):
            pos = o[start:start + 3]
            if np.any(pos != 0.0):  # Meta-World pads a missing object with zeros
                lift = float(np.clip((pos[2] - 0.04) / 0.1, 0.0, 1.0))
                layers.append((pos[0], pos[1], 0.025, 0.0, colour + (255 - colour) * 0.5 * lift))
        layers.append((o[0], o[1], 0.03, 0.018, HAND))
        for x, y, radius, inner, colour in layers:
            a = self._disc(float(x), float(y), radius, inner)[..., None]
            img += a * (colour - img)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)
