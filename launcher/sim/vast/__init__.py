"""A faithful Vast.ai emulator: the REST API the `vastai` 1.9.1 client speaks, a catalog of
offers, and instances that are real containers (or processes) running a real sshd.

    with VastSim() as sim:              # in-process, for tests
        ... VAST_URL=sim.url VAST_API_KEY=sim.api_key ...
    python -m launcher.sim.vast --port 8765    # in the foreground; prints its URL when ready
"""

from launcher.sim.vast.sim import DEFAULT_API_KEY, VastSim, serve

__all__ = ["DEFAULT_API_KEY", "VastSim", "serve"]
