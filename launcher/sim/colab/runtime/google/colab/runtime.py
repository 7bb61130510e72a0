"""`google.colab.runtime`: `unassign()` gives the runtime back at once.

In the sim a session ends when its last cell has run, which is where generated notebooks call
it; so it only says so, as Colab's own disconnect message would.
"""

from __future__ import annotations


def unassign() -> None:
    print("Runtime unassigned: the session ends.", flush=True)
