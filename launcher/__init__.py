"""launch: one job spec, any GPU."""

__version__ = "0.1.0"
