"""A Kaggle emulator that speaks the wire protocol of `kaggle` 2.2.5 / `kagglesdk` 0.1.38.

``KaggleSim`` (in-process, for tests) and ``serve`` (in the foreground:
``python -m launcher.sim.kaggle``).
Wire facts: shared/reference/platforms.md §1.
"""

from launcher.sim.kaggle.sim import KaggleSim, serve

__all__ = ["KaggleSim", "serve"]
