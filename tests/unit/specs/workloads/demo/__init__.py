"""A stand-in workload for the spec tests: only its folder has to exist."""
