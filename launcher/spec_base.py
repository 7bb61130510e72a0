"""The base of every job-spec model and the field types they share (`spec.py`, every
`targets/*/options.py`).

Imports pydantic (and the stdlib-only GPU table) only, so target options parse without any
platform SDK installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, LiteralString, cast

from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from launcher.gpus import resolve_gpu, suggest_gpu


class StrictModel(BaseModel):
    """A section of the job spec: unknown keys are errors, and an empty section means defaults.

    `resources:` with nothing under it reads as YAML null; for a field whose default is a section,
    list or mapping we take that as "use the defaults" rather than reject it.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given: dict[Any, Any] = data  # pyright: ignore[reportUnknownVariableType]
        sections = {f.alias or n for n, f in cls.model_fields.items() if f.default_factory}
        return {k: v for k, v in given.items() if not (v is None and k in sections)}


def spec_error(message: str, suggestion: str | None = None, **ctx: Any) -> PydanticCustomError:
    """A validation error with a ready-to-show message and an optional "did you mean"."""
    context: dict[str, Any] = dict(ctx)
    if suggestion:
        context["suggestion"] = suggestion
    # pydantic fills `{key}` from the context; the message is already final (no keys in it).
    return PydanticCustomError("spec", cast(LiteralString, message), context)


_DURATION_RE = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[dhms]?\s*)+$"


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string like "30s", "5m", "1h30m", "1.5h", "90"."""
    if isinstance(value, bool):
        raise spec_error(f"expected a duration like 30s, 5m or 1h30m, got {value}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.replace(" ", "").lower()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION_RE.match(text)
            if not text or match is None:
                raise spec_error(
                    f"expected a duration like 30s, 5m or 1h30m, got '{value}'"
                ) from None
            seconds = sum(float(v) * _UNIT_SECONDS[k] for k, v in match.groupdict().items() if v)
    else:
        raise spec_error("expected a duration like 30s, 5m or 1h30m")
    if seconds <= 0:
        raise spec_error(f"a duration must be more than zero, got {value}")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A duration: seconds (a number) or "30s" / "5m" / "1h" / "1h30m"; always seconds once parsed."""


# ---- field types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matches(GroupedMetadata):
    """A regex check with our own message (and fix), whose pattern still shows in the schema."""

    pattern: str
    what: str
    fix: Callable[[str], str | None] | None = None

    def __iter__(self) -> Iterator[object]:
        yield AfterValidator(self._check)
        yield WithJsonSchema({"type": "string", "pattern": self.pattern})

    def _check(self, value: str) -> str:
        if not re.match(self.pattern, value):
            raise spec_error(f"{self.what}, got '{value}'", self.fix(value) if self.fix else None)
        return value


def _secret_fix(value: str) -> str | None:
    fixed = re.sub(r"[^A-Z0-9_]", "_", value.upper())
    return fixed if re.match(r"^[A-Z_][A-Z0-9_]*$", fixed) else None


def _gpu_name(value: str) -> str:
    canonical = resolve_gpu(value)
    if canonical is None:
        raise spec_error(f"unknown GPU type '{value}'", suggest_gpu(value))
    return canonical


def _no_launch_prefix(value: str) -> str:
    if value.startswith("LAUNCH_"):
        raise spec_error(f"'{value}': names starting with LAUNCH_ are set by the launcher")
    return value


Slug = Annotated[
    str,
    _Matches(
        r"^[a-z0-9][a-z0-9_-]{0,62}$",
        "expected a lowercase name of a-z, 0-9, '-' and '_' (at most 63 characters)",
        lambda v: re.sub(r"[^a-z0-9_-]+", "-", v.lower()).strip("-_")[:63] or None,
    ),
]
FolderName = Annotated[str, _Matches(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", "expected a folder name")]
ImageName = Annotated[
    str,
    _Matches(
        r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$",
        "expected an image folder under images/ or a registry image (name:tag)",
    ),
]
EnvName = Annotated[
    str,
    _Matches(r"^[A-Za-z_][A-Za-z0-9_]*$", "expected an environment variable name"),
    AfterValidator(_no_launch_prefix),
]
SecretName = Annotated[
    str,
    _Matches(
        r"^[A-Z_][A-Z0-9_]*$", "expected an UPPER_SNAKE environment variable name", _secret_fix
    ),
    AfterValidator(_no_launch_prefix),
]
KaggleRef = Annotated[
    str, _Matches(r"^[A-Za-z0-9][\w-]*/[A-Za-z0-9][\w.-]*$", "expected owner/dataset-slug")
]
GpuName = Annotated[str, AfterValidator(_gpu_name)]
HfRepo = Annotated[
    str,
    _Matches(
        r"^(datasets/|models/)?[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$",
        "expected a Hub repository: org/name, or datasets/org/name",
    ),
]
HttpUrl = Annotated[
    str, _Matches(r"^https?://[^/\s]+(/\S*)?$", "expected an http:// or https:// address")
]
Sha256 = Annotated[str, _Matches(r"^[0-9a-fA-F]{64}$", "expected a sha256: 64 hexadecimal digits")]
