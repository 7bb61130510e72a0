"""A Google Drive v2 emulator that the unchanged `pydrive2` (1.21.x) and `pydrive2.fs` talk to.

``DriveSim`` (in-process, for tests) and ``serve`` (in the foreground:
``python -m launcher.sim.drive``). Stdlib only; ``cryptography``, when it imports, makes
service-account keys and checks their signatures. Wire facts: shared/reference/platforms.md §3.
"""

from launcher.sim.drive.sim import DriveSim, serve

__all__ = ["DriveSim", "serve"]
