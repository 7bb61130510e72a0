"""The Colab runtime emulator: executes the notebooks `launch` puts in (emulated) Drive."""

from launcher.sim.colab.sim import ColabSim, serve

__all__ = ["ColabSim", "serve"]
