"""Which files of a workload folder go into a bundle.

Every `.gitignore` in the tree applies with git's semantics (deeper files override shallower
ones), then `.launchignore` at the root, which overrides them all. Tool and cache folders are
always left out, and so are files that look like credentials: no ignore file can re-include those.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pathspec
from pydantic import BaseModel, ConfigDict

from launcher.errors import LaunchError

LAUNCHIGNORE = ".launchignore"

_ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", ".ipynb_checkpoints"})
_ALWAYS_EXCLUDED_FILES = frozenset({".git", ".DS_Store"})  # .git is a file in worktrees
_ALWAYS_EXCLUDED_SUFFIXES = (".pyc",)
# Shell globs matched against each file name, lower-cased.
SECRET_PATTERNS = tuple(
    ".env .env.* .netrc kaggle.json vast_api_key credentials.json client_secrets.json token.json"
    " *.pem *.key *.p12 id_rsa* id_ed25519*".split()
)


class BundleError(LaunchError):
    """The workload folder or a bundle archive cannot be used."""


class Selection(BaseModel):
    """The workload files a bundle takes, and what was left out that the user should know."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: list[tuple[str, Path]]  # (relpath with '/', absolute path to read), sorted
    skipped_secrets: list[str] = []
    warnings: list[str] = []


def looks_like_secret(name: str) -> bool:
    """True when a file name looks like a credential (matched case-insensitively)."""
    lowered = name.lower()
    return any(fnmatchcase(lowered, pattern) for pattern in SECRET_PATTERNS)


# --- selection ---------------------------------------------------------------------------------


def iter_bundle_files(workload_dir: Path) -> Iterator[tuple[str, Path]]:
    """(relpath, absolute path) of every workload file a bundle takes, sorted by relpath."""
    yield from select_bundle_files(workload_dir).files


def select_bundle_files(workload_dir: Path) -> Selection:
    """Apply the ignore rules and secret filter to `workload_dir`; see the module docstring."""
    if not workload_dir.is_dir():
        what = "does not exist" if not workload_dir.exists() else "is not a directory"
        raise BundleError(
            f"workload folder {workload_dir} {what}",
            hint="check `workload:` in the job spec (it is relative to the spec file)",
        )
    root = workload_dir.resolve()
    launch_spec = _read_spec(root / LAUNCHIGNORE)
    walker = _Walker(root, launch_spec)
    try:
        walker.walk(root, "", ())
    except OSError as e:
        raise BundleError(f"cannot read the workload folder {workload_dir}: {e}") from e
    walker.files.sort()
    return Selection(files=walker.files, skipped_secrets=walker.secrets, warnings=walker.warnings)


_Specs = tuple[tuple[str, pathspec.GitIgnoreSpec], ...]


class _Walker:
    def __init__(self, root: Path, launch_spec: pathspec.GitIgnoreSpec | None) -> None:
        self.root = root
        self.launch_spec = launch_spec
        self.files: list[tuple[str, Path]] = []
        self.secrets: list[str] = []
        self.warnings: list[str] = []

    def walk(self, directory: Path, rel_dir: str, specs: _Specs) -> None:
        spec = _read_spec(directory / ".gitignore")
        if spec is not None:
            specs = (*specs, (rel_dir, spec))
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _ALWAYS_EXCLUDED_DIRS and not self._ignored(rel + "/", specs):
                    self.walk(Path(entry.path), rel, specs)
            elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                self._consider(entry, rel, specs)
            else:
                self.warnings.append(f"skipped {rel}: not a regular file")

    def _consider(self, entry: os.DirEntry[str], rel: str, specs: _Specs) -> None:
        name = entry.name
        if name in _ALWAYS_EXCLUDED_FILES or name.endswith(_ALWAYS_EXCLUDED_SUFFIXES):
            return
        ignored = self._ignored(rel, specs)
        if looks_like_secret(name):
            # Reported only when the ignore rules would have shipped it: that is the surprise.
            if not ignored:
                self.secrets.append(rel)
            return
        if ignored:
            return
        if not entry.is_symlink():
            self.files.append((rel, Path(entry.path)))
            return
        target = self._link_target(entry, rel)
        if target is None:
            return
        if looks_like_secret(target.name):
            self.secrets.append(rel)
            return
        self.files.append((rel, target))

    def _link_target(self, entry: os.DirEntry[str], rel: str) -> Path | None:
        """The in-tree regular file a symlink points to, or None (with a warning)."""
        try:
            target = Path(entry.path).resolve(strict=True)
        except (OSError, RuntimeError):
            self.warnings.append(f"skipped symlink {rel}: broken or looping")
            return None
        if not target.is_relative_to(self.root):
            self.warnings.append(f"skipped symlink {rel}: points outside the workload folder")
            return None
        inside = target.relative_to(self.root).parts
        if not target.is_file() or _ALWAYS_EXCLUDED_DIRS.intersection(inside):
            self.warnings.append(f"skipped symlink {rel}: not a link to a workload file")
            return None
        return target

    def _ignored(self, path: str, specs: _Specs) -> bool:
        if self.launch_spec is not None:
            verdict = self.launch_spec.check_file(path).include
            if verdict is not None:
                return verdict
        for base, spec in reversed(specs):  # the deepest .gitignore that has an opinion wins
            verdict = spec.check_file(path[len(base) + 1 :] if base else path).include
            if verdict is not None:
                return verdict
        return False


def _read_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


# --- build -------------------------------------------------------------------------------------
