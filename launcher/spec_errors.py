"""Where each value of a job spec came from, and pydantic errors turned into short problems.

`parse_yaml` reads a file once into data plus a line index (path -> line) and reports YAML syntax
errors and duplicate keys (PyYAML silently keeps the last one). `apply_profile` and
`apply_overrides` change the data and tell the `Locator` which paths they set, so a problem points
at the line the user has to change (`profiles.smoke.run`, or `--set`). `problems_from` maps every
pydantic error through it.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from launcher.errors import SpecProblem

Path_ = tuple[str, ...]
SET = "--set"


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


# ---- reading YAML with positions -----------------------------------------------------------


@dataclass
class YamlDoc:
    data: Any = None
    lines: dict[Path_, int] = field(default_factory=lambda: dict[Path_, int]())
    raw: dict[Path_, str] = field(default_factory=lambda: dict[Path_, str]())
    problems: list[SpecProblem] = field(default_factory=lambda: list[SpecProblem]())


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Data, line index and syntax/duplicate-key problems of one YAML document."""
    doc = YamlDoc()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return doc
        doc.lines[()] = node.start_mark.line + 1
        _walk(node, (), doc, file, set())  # before constructing: that flattens `<<` merges
        doc.data = loader.construct_document(node)  # pyright: ignore[reportUnknownMemberType]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        doc.problems.append(
            SpecProblem(file, mark.line + 1 if mark else None, "", f"YAML syntax: {message}")
        )
        doc.data = None
    except yaml.YAMLError as e:
        doc.problems.append(SpecProblem(file, None, "", f"YAML syntax: {e}"))
        doc.data = None
    finally:
        loader.dispose()  # pyright: ignore[reportUnknownMemberType]
    return doc


def _walk(node: yaml.Node, path: Path_, doc: YamlDoc, file: str, active: set[int]) -> None:
    if id(node) in active:  # a recursive alias
        return
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first:
                doc.problems.append(
                    SpecProblem(
                        file,
                        line,
                        ".".join((*path, key)),
                        f"duplicate key (first at line {first[key]}); YAML keeps only the last",
                    )
                )
            else:
                first[key] = line
            doc.lines[(*path, key)] = line
            _walk(value_node, (*path, key), doc, file, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[(*path, str(i))] = item.start_mark.line + 1
            _walk(item, (*path, str(i)), doc, file, active)
    elif isinstance(node, yaml.ScalarNode):
        doc.raw[path] = node.value


# ---- locating a path ----------------------------------------------------------------------


@dataclass
class Locator:
    """Maps a path in the merged document to the file, line and key the user wrote it at."""

    file: str
    doc: YamlDoc
    origins: dict[Path_, str] = field(default_factory=lambda: dict[Path_, str]())
    """Paths whose value came from a profile (its name) or from an override (SET)."""

    def set_origin(self, path: Path_, origin: str) -> None:
        for p in [o for o in self.origins if o[: len(path)] == path]:
            del self.origins[p]
        self.origins[path] = origin

    def _origin(self, path: Path_) -> str | None:
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return None

    def yaml_path(self, path: Path_) -> Path_:
        origin = self._origin(path)
        return path if origin is None or origin == SET else ("profiles", origin, *path)

    def problem(self, path: Path_, message: str, suggestion: str | None = None) -> SpecProblem:
        if self._origin(path) == SET:
            return SpecProblem(SET, None, ".".join(path), message, suggestion)
        where = self.yaml_path(path)
        return SpecProblem(self.file, self.line(where), ".".join(where), message, suggestion)

    def line(self, path: Path_) -> int | None:
        for n in range(len(path), -1, -1):
            if path[:n] in self.doc.lines:
                return self.doc.lines[path[:n]]
        return None

    def raw(self, path: Path_) -> str | None:
        return None if self._origin(path) == SET else self.doc.raw.get(self.yaml_path(path))


# ---- profiles and --set overrides, remembering where each value came from -------------------


def apply_profile(data: dict[str, Any], name: str, loc: Locator) -> list[SpecProblem]:
    """Deep-merge profile `name` over `data` (mappings merge; lists and scalars replace)."""
    profiles: dict[Any, Any] | None = data.get("profiles")
    if not isinstance(profiles, dict):
        profiles = None
    known = [str(p) for p in profiles] if profiles else []
    if name not in known:
        tail = f"; known: {', '.join(known)}" if known else "; the spec defines none"
        line = loc.line(("profiles",)) if known else None
        message = f"unknown profile '{name}'{tail}"
        return [SpecProblem(loc.file, line, "profiles", message, did_you_mean(name, known))]
    body = profiles[name] if profiles else None
    if isinstance(body, dict):
        _merge(data, body, (), name, loc)  # pyright: ignore[reportUnknownArgumentType]
    return []  # a profile that is not a mapping is reported by validation


def _merge(dst: dict[Any, Any], src: dict[Any, Any], at: Path_, name: str, loc: Locator) -> None:
    for key, value in src.items():
        path = (*at, str(key))
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], cast(dict[Any, Any], value), path, name, loc)
        else:
            dst[key] = copy.deepcopy(cast(Any, value))
            loc.set_origin(path, name)


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], loc: Locator
) -> list[SpecProblem]:
    """Apply `key.path=value` overrides; the value is read as YAML (a scalar or a flow list)."""
    problems: list[SpecProblem] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = tuple(p.strip() for p in key.strip().split("."))
        if not sep or not all(parts):
            problems.append(SpecProblem(SET, None, key, f"expected key.path=value, got '{item}'"))
            continue
        try:
            # env values are always strings: `--set env.SEED=1` means "1", not a number
            value: Any = text if parts[0] == "env" and len(parts) == 2 else yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(SpecProblem(SET, None, key, f"cannot read the value: {e}"))
            continue
        error, where = _set_path(data, parts, value)
        if error:
            problems.append(SpecProblem(SET, None, key, error))
        else:
            loc.set_origin(where, SET)
    return problems


def _set_path(data: dict[str, Any], parts: Path_, value: Any) -> tuple[str | None, Path_]:
    """Set the value; returns an error, or the shortest path this created (its origin)."""
    cur: dict[Any, Any] | list[Any] = data
    created: Path_ = ()
    for i, part in enumerate(parts):
        here = parts[: i + 1]
        if isinstance(cur, list):
            if not (part.isdigit() and int(part) < len(cur)):
                return f"'{'.'.join(parts[:i])}' has no item {part}", ()
            index = int(part)
            if i == len(parts) - 1:
                cur[index] = value
                return None, created or parts
            nxt: Any = cur[index]
        else:
            if i == len(parts) - 1:
                cur[part] = value
                return None, created or parts
            nxt = cur.get(part)
            if nxt is None:
                if parts[i + 1].isdigit():
                    return f"'{'.'.join(here)}' has no item {parts[i + 1]}", ()
                nxt = cur[part] = {}
                created = created or here
        if not isinstance(nxt, dict | list):
            return f"'{'.'.join(here)}' is {_show(nxt)}, not a mapping", ()
        cur = cast(dict[Any, Any] | list[Any], nxt)
    return None, parts


# ---- pydantic errors -> problems ------------------------------------------------------------


def problems_from(
    error: ValidationError, data: Any, model: type[BaseModel], loc: Locator
) -> list[SpecProblem]:
    """One SpecProblem per distinct error of `error`, in file order."""
    out: list[SpecProblem] = []
    seen: set[Path_] = set()
    for err in error.errors():
        path, is_key, tagged = _path_of(data, err)
        if tagged and path in seen:
            continue  # a union reports once per member; the first says enough
        seen.add(path)
        out.append(_problem(err, path, is_key, data, model, loc))
    return sorted(out, key=lambda p: (p.file != loc.file, p.line or 0))


def _path_of(data: Any, err: ErrorDetails) -> tuple[Path_, bool, bool]:
    """The data path an error's `loc` points at, without pydantic's union/validator tags."""
    path: list[str] = []
    cur: Any = data
    is_key = tagged = False
    parts = err["loc"]
    for i, part in enumerate(parts):
        if isinstance(cur, dict) and part in cur:
            cur = cast(dict[Any, Any], cur)[part]
            path.append(str(part))
        elif (
            isinstance(cur, list)
            and isinstance(part, int)
            and 0 <= part < len(cast(list[Any], cur))
        ):
            cur = cast(list[Any], cur)[part]
            path.append(str(part))
        elif i == len(parts) - 1 and err["type"] == "missing":
            path.append(str(part))
        elif part == "[key]":
            is_key = True
        else:
            tagged = True
    return tuple(path), is_key, tagged


def _problem(
    err: ErrorDetails,
    path: Path_,
    is_key: bool,
    data: Any,
    model: type[BaseModel],
    loc: Locator,
) -> SpecProblem:
    kind = err["type"]
    value = err.get("input")
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    suggestion: str | None = ctx.get("suggestion")
    if kind == "extra_forbidden":
        fields = _fields_at(model, err["loc"][:-1])
        suggestion = did_you_mean(path[-1], fields) if fields else None
        where = "" if len(path) == 1 else f" in {path[-2]}"
        known = "" if suggestion or not fields else f"; known keys: {', '.join(fields)}"
        return loc.problem(path, f"unknown key{where}{known}", suggestion)
    if kind == "missing":
        return loc.problem(path, "required key is missing")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        suggestion = did_you_mean(str(value), choices)
        message = f"expected one of {', '.join(choices)}; got {_show(value)}"
        return loc.problem(path, message, suggestion)
    message = _message(kind, value, ctx, err["msg"])
    if kind == "string_type" and isinstance(value, bool | int | float):
        raw = loc.raw(path) or _show(value)
        message += f' (quote it: "{raw}")'
    if is_key and kind != "spec":
        message = f"key {_show(path[-1])}: {message}"
    return loc.problem(path, message, suggestion)


def _message(kind: str, value: Any, ctx: dict[str, Any], raw_msg: str) -> str:
    got = _show(value)
    match kind:
        case "spec":
            return raw_msg
        case "string_type":
            return f"expected text, got {got}"
        case "invalid_key":
            return f"a key must be text, got {got}"
        case "float_type" | "float_parsing" | "decimal_parsing" | "decimal_type":
            return f"expected a number, got {got}"
        case "int_type" | "int_parsing" | "int_from_float" | "int_parsing_size":
            return f"expected a whole number, got {got}"
        case "bool_type" | "bool_parsing":
            return f"expected true or false, got {got}"
        case "dict_type" | "model_type" | "model_attributes_type":
            return f"expected a mapping (key: value), got {got}"
        case "list_type" | "tuple_type" | "set_type":
            return f"expected a list like [a, b], got {got}"
        case "greater_than":
            return f"must be more than {ctx.get('gt')}, got {got}"
        case "greater_than_equal":
            return f"must be at least {ctx.get('ge')}, got {got}"
        case "less_than":
            return f"must be less than {ctx.get('lt')}, got {got}"
        case "less_than_equal":
            return f"must be at most {ctx.get('le')}, got {got}"
        case "string_too_short":
            return "must not be empty"
        case "string_pattern_mismatch":
            return f"{got} does not match the pattern {ctx.get('pattern')}"
        case "value_error" | "assertion_error":
            return raw_msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        case _:
            return raw_msg


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if "'" not in value else f'"{value}"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model accepts at `loc` (for "did you mean")."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _step(tp: Any, part: int | str) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, f in tp.model_fields.items():
            if part in (name, f.alias):
                return _unwrap(f.annotation)
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and isinstance(part, int) and args:
        return _unwrap(args[0])
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return _unwrap(args[1])
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; for a union, the first member that is a model."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = (models or members)[0]
        else:
            return tp
