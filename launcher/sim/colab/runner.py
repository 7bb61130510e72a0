"""One session of the Colab sim: the notebook's cells run in a real IPython kernel (nbclient).

A session ends as a Colab VM does: every cell ran (finished), a cell raised (failed), or the VM
went away (disconnected: the kernel and every process under it are killed with SIGKILL, nothing
gets to save). What the kernel printed is kept in the session folder (kernel.log) for tests.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from launcher.sim.colab.sim import ColabSim, SessionInfo


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found[::-1]


class Runner:
    def __init__(self, sim: ColabSim, info: SessionInfo, secrets_file: Path) -> None:
        self.sim, self.info, self.secrets_file = sim, info, secrets_file
        self.folder = Path(info.folder)
        self.kernel_pid: int | None = None
        self.killed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"colab-{info.id}")

    def start(self) -> None:
        self.thread.start()

    def _kernel_spec(self) -> Path:
        kernels = self.folder / "kernels"
        spec = kernels / "colab-sim"
        spec.mkdir(parents=True, exist_ok=True)
        argv = [self.sim.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        kernel = {"argv": argv, "display_name": "Colab sim", "language": "python"}
        (spec / "kernel.json").write_text(json.dumps(kernel))
        return kernels

    def _run(self) -> None:
        import nbformat
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager
        from nbclient import NotebookClient

        info = self.info
        try:
            text = self.sim.notebook_text(info.notebook_id)
            nb = cast(Any, nbformat.reads(text, as_version=4))  # pyright: ignore[reportUnknownMemberType]
            ksm = KernelSpecManager(kernel_dirs=[str(self._kernel_spec())])
            km = KernelManager(kernel_name="colab-sim", kernel_spec_manager=ksm)
            env = self.sim.kernel_env(info, self.secrets_file)
            client = NotebookClient(
                nb,
                km=km,
                timeout=None,
                kernel_name="colab-sim",
                resources={"metadata": {"path": env["COLAB_SIM_ROOT"]}},
            )
            watcher = threading.Thread(target=self._note_pid, args=(km,), daemon=True)
            watcher.start()
            client.execute(env=env)  # pyright: ignore[reportUnknownMemberType]
            self._end("finished", "")
        except Exception as e:  # noqa: BLE001 - a failed cell, a dead kernel: the session's end
            if self.killed.is_set():
                self._end("disconnected", info.reason or "disconnected")
            else:
                self._end("failed", f"{type(e).__name__}: {e}"[:2000])
        finally:
            self._save_outputs(locals().get("nb"))

    def _note_pid(self, km: Any) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.kernel_pid is None:
            provisioner = getattr(km, "provisioner", None)
            pid = getattr(provisioner, "pid", None) if provisioner is not None else None
            if isinstance(pid, int):
                self.kernel_pid = pid
                if self.killed.is_set():
                    self._kill_tree()
                return
            time.sleep(0.05)

    def _kill_tree(self) -> None:
        if self.kernel_pid is None:
            return
        for pid in [*descendants(self.kernel_pid), self.kernel_pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self, reason: str) -> None:
        """The VM goes away: everything in it dies at once."""
        if self.info.state != "running":
            return
        self.info.reason = reason
        self.killed.set()
        self._kill_tree()
        # the session is over now, whatever nbclient makes of the dead kernel (it may wait)
        self._end("disconnected", reason)

    def _end(self, state: str, reason: str) -> None:
        if self.info.state != "running":
            return
        self.info.state = state
        self.info.reason = self.info.reason or reason
        self.info.ended_at = time.time()

    def _save_outputs(self, nb: Any) -> None:
        """What the cells printed, for whoever debugs a session."""
        if nb is None:
            return
        lines: list[str] = []
        for cell in nb.get("cells", []):
            for out in cell.get("outputs", []):
                text = out.get("text") or "".join(out.get("traceback", []))
                lines.append(str(text))
        (self.folder / "kernel.log").write_text("".join(lines))
