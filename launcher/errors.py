"""The one exception tree of `launch`.

Catch `LaunchError` to catch everything the launcher raises on purpose. The CLI turns each into a
one-paragraph message and the exit code of its class; `--debug` shows the traceback instead.
Anything that is not a `LaunchError` reaching the CLI is a bug and is reported as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar


class ExitStatus(IntEnum):
    """Process exit codes (httpie style). Scripts may rely on these."""

    OK = 0
    ERROR = 1
    SPEC = 2
    TARGET_UNAVAILABLE = 3
    TARGET = 4
    NOT_FOUND = 5
    RUN_FAILED = 6
    BUG = 70
    INTERRUPTED = 130


class LaunchError(Exception):
    """Root of every error the launcher raises on purpose.

    Args:
        message: what went wrong, in one sentence a user can act on.
        hint: optional next step ("run `launch gc`", "pip install 'launch[docker]'").
    """

    exit_code: ClassVar[int] = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The text the CLI prints (without the `error:` prefix)."""
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a job spec: where it is and what to do about it."""

    file: str
    line: int | None
    key: str
    message: str
    suggestion: str | None = None

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        tail = f" (did you mean '{self.suggestion}'?)" if self.suggestion else ""
        return f"{where}:{key} {self.message}{tail}"


class SpecError(LaunchError):
    """The job spec (or a --set/--profile applied to it) is invalid. One entry per problem."""

    exit_code = ExitStatus.SPEC

    def __init__(self, problems: list[SpecProblem], *, hint: str | None = None) -> None:
        self.problems = problems
        n = len(problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the job spec"
        super().__init__(head + ":\n" + "\n".join("  " + p.render() for p in problems), hint=hint)


class SettingError(LaunchError):
    """One or more `LAUNCH_*` environment settings have a value of the wrong form.

    Each problem is one line naming the variable, its value and the form expected
    (launcher/settings.py). Raised before anything starts, so nothing was spent; exits like a
    bad spec, since both are the user's configuration.
    """

    exit_code = ExitStatus.SPEC

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            message, hint = problems[0], "fix the value, or unset the variable for the default"
        else:
            message = f"{len(problems)} environment settings are invalid:\n" + "\n".join(
                "  " + p for p in problems
            )
            hint = "fix each value, or unset the variable for the default"
        super().__init__(message, hint=hint)


class TargetUnavailableError(LaunchError):
    """A target cannot be used here: a missing extra, tool or credential. Nothing was spent."""

    exit_code = ExitStatus.TARGET_UNAVAILABLE


class TargetError(LaunchError):
    """The platform (or local engine) failed while doing what we asked."""

    exit_code = ExitStatus.TARGET


class NoCapacityError(TargetError):
    """No offer/slot fits the job right now."""


class SubmitError(TargetError):
    """Starting remote work failed; nothing is running for this attempt."""


class RemoteRunLostError(TargetError):
    """The remote side stopped answering (no heartbeat, vanished instance)."""


class RunNotFoundError(LaunchError):
    """No run with that id (or prefix) in the store."""

    exit_code = ExitStatus.NOT_FOUND


class NothingToResumeError(LaunchError):
    """`launch run --resume-from RUN` names a run that has no complete checkpoint: starting it
    afresh instead would silently redo (and pay for) work the user believes is saved."""

    exit_code = ExitStatus.NOT_FOUND


class RunFailedError(LaunchError):
    """The run itself ended FAILED; the CLI exits non-zero so scripts notice."""

    exit_code = ExitStatus.RUN_FAILED


class RunCancelledError(LaunchError):
    """The run ended CANCELLED (Ctrl-C, `launch cancel`); exits like an interrupted command."""

    exit_code = ExitStatus.INTERRUPTED


class InvalidTransitionError(LaunchError):
    """A status change that the state machine forbids, or a lost compare-and-set race. A bug."""

    exit_code = ExitStatus.BUG
