"""The generated Colab notebook: one session of a job, run under the launch agent.

The notebook holds a small JSON configuration (the run, the session, its Drive folder's title and
id), never a secret or a token: secrets are read inside Colab with its own `google.colab.userdata`
by name, and Drive is reached through Colab's own mount (the user consents in the browser). When
the user runs it (Runtime -> Run all), it:

1. mounts Drive and finds the session's folder (My Drive/launch/<title>, checked by the folder id
   in its job.json); a session that already ran, or was cancelled before it ran, stops there;
2. stages the bundle on local disk (Drive's mount is slow for many small files), checking its
   sha256, and for a resumed session unpacks the checkpoints and outputs to go on from;
3. installs what the lowered image needs that Colab lacks, reads the secrets;
4. runs the agent on local disk with a time limit that ends the job (with a checkpoint) before
   the session cap, and meanwhile, every `sync_s`: writes heartbeat.json, copies new and changed
   files of the agent's workspace to the folder's run/ (each through a temporary name, then a
   rename), and hands a stop request in control.json to the agent (which stops the job with its
   grace period);
5. copies everything once more at the end and flushes Drive.

Its own lines go to the job's log as "colab: ..." agent lines, so `launch` shows them.
"""

from __future__ import annotations

import json
from typing import Any

from launcher.targets.bootstrap import INSTALL_SOURCE
from launcher.targets.colab import handle as names
from launcher.targets.colab.handle import NotebookConfig
from launcher.targets.colab.program import PROGRAM


def notebook_source(config: NotebookConfig) -> str:
    """The program of the notebook's code cell (no secret: the config holds none)."""
    source = PROGRAM.replace("__INSTALL__", INSTALL_SOURCE.strip())
    return source.replace("__NOTEBOOK__", repr(config.model_dump_json()))


def notebook_json(config: NotebookConfig, gpu: str | None) -> bytes:
    """The .ipynb (nbformat 4) of one session, its GPU runtime preselected in the metadata."""
    run, session = config.run_id, config.session
    intro = (
        f"# launch: run `{run}`, session {session}\n\n"
        "Run everything (**Runtime → Run all**), and allow Drive access when asked. The job "
        "runs in this tab; `launch` in your terminal shows its progress, pulls its outputs "
        "and stops it when asked. Closing the tab or a disconnect ends the session: `launch` "
        "then prints the link of the next one, which goes on from the newest checkpoint."
    )
    colab: dict[str, Any] = {"provenance": [], "name": f"{names.folder_title(run, session)}.ipynb"}
    metadata: dict[str, Any] = {
        "kernelspec": {"name": "python3", "display_name": "Python 3"},
        "language_info": {"name": "python"},
        "colab": colab,
    }
    if gpu:
        metadata["accelerator"] = "GPU"
        colab["gpuType"] = gpu
    nb: dict[str, Any] = {
        "nbformat": 4,
        "nbformat_minor": 0,
        "metadata": metadata,
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": intro},
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": notebook_source(config),
            },
        ],
    }
    return json.dumps(nb, indent=1).encode()
