from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, launch_cmd

HEAVY = ("pydantic", "docker", "rich", "yaml", "launcher.targets.local", "launcher.spec", "torch")


def test_help_is_light_it_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from launcher.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout, out.stdout
    assert "launch run" in out.stdout


def _launch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*launch_cmd(), *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_run_exits_5_with_one_line_and_no_traceback() -> None:
    proc = _launch("status", "nope-000")
    assert proc.returncode == 5
    assert proc.stderr.startswith("error: no run matches 'nope-000'")
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback() -> None:
    proc = _launch("--debug", "status", "nope-000")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unknown_target_suggests_the_near_one(tmp_path: Path) -> None:
    proc = _launch("run", str(REPO / "jobs" / "hello.yaml"), "--target", "locla", cwd=tmp_path)
    assert proc.returncode == 3
    assert "unknown target 'locla'" in proc.stderr and "did you mean 'local'" in proc.stderr


def test_usage_error_exits_2() -> None:
    proc = _launch("run")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr


def test_validate_every_job_in_the_repo_and_schema_is_json() -> None:
    jobs = sorted(str(p) for p in (REPO / "jobs").glob("*.yaml"))
    assert jobs, "jobs/ has no specs"
    proc = _launch("validate", *jobs)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(_launch("schema").stdout)
    assert "run" in schema["properties"] and schema.get("additionalProperties") is False


def test_ls_on_an_empty_store_says_how_to_start() -> None:
    proc = _launch("ls")
    assert proc.returncode == 0 and "no runs yet" in proc.stdout
    assert json.loads(_launch("ls", "--json").stdout) == []
