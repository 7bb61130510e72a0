"""Vast's search query language, server side: `{field: {op: value}}` filters and ordering.

The `vastai` CLI sends every value it does not recognise as a STRING (`"num_gpus": {"eq": "1"}`,
`"reliability": {"gt": "0.98"}`), so values are coerced to the type of the row's field before
comparing, as the real service does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

Row = Mapping[str, Any]

_OPS: dict[str, str] = {
    "eq": "eq", "=": "eq", "==": "eq",
    "neq": "neq", "!=": "neq", "ne": "neq",
    "gt": "gt", ">": "gt",
    "gte": "gte", ">=": "gte", "ge": "gte",
    "lt": "lt", "<": "lt",
    "lte": "lte", "<=": "lte", "le": "lte",
    "in": "in",
    "notin": "notin", "nin": "notin", "not in": "notin", "not_in": "notin",
}  # fmt: skip


def as_list(value: Any) -> list[Any]:
    """`value` if it is a list or tuple (as a list), else a one-item list."""
    return list(cast(list[Any], value)) if isinstance(value, list | tuple) else [value]


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return (
        {str(k): v for k, v in cast(dict[Any, Any], value).items()}
        if isinstance(value, dict)
        else {}
    )


class QueryError(ValueError):
    """A filter the service would reject (unknown field or operator, uncoercible value)."""


def coerce(value: Any, like: Any) -> Any:
    """`value` converted to the type of `like` (the row's value); strings stay strings."""
    if value is None or like is None:
        return value
    if isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if isinstance(like, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1"):
                return True
            if low in ("false", "0"):
                return False
            raise QueryError(f"cannot compare {value!r} with a boolean field")
        return bool(value)
    if isinstance(like, int | float):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float):
            return value
        try:
            return float(str(value).strip())
        except ValueError as e:
            raise QueryError(f"cannot compare {value!r} with a number") from e
    if isinstance(like, str) and not isinstance(value, str):
        return str(value)
    return value


def _sample(rows: Sequence[Row], field: str) -> Any:
    """A non-null value of `field` from the rows, to learn its type (None if all are null)."""
    for row in rows:
        v = row.get(field)
        if v is not None:
            return v
    return None


def _test(op: str, have: Any, want: Any) -> bool:
    if op in ("in", "notin"):
        hit = any(have == item for item in as_list(want))
        return hit if op == "in" else not hit
    if op == "eq":
        return have == want
    if op == "neq":
        return have != want
    if have is None or want is None:
        return False
    try:
        match op:
            case "gt":
                return bool(have > want)
            case "gte":
                return bool(have >= want)
            case "lt":
                return bool(have < want)
            case "lte":
                return bool(have <= want)
            case _:
                pass
    except TypeError:
        return False
    raise QueryError(f"unknown operator {op!r}")


def compile_filters(
    filters: Mapping[str, Any], rows: Sequence[Row], known: Iterable[str]
) -> Callable[[Row], bool]:
    """A predicate for `filters` (`{field: {op: value}}` or `{field: value}` meaning eq).

    Values are coerced once, against a sample of `rows`; `known` lists the valid fields.
    """
    fields = set(known)
    tests: list[tuple[str, str, Any]] = []
    for field, cond in filters.items():
        if field not in fields:
            raise QueryError(f"unknown field {field!r}")
        conds = as_dict(cond) if isinstance(cond, dict) else {"eq": cond}
        like = _sample(rows, field)
        for raw_op, value in conds.items():
            op = _OPS.get(str(raw_op).strip().lower())
            if op is None:
                raise QueryError(f"unknown operator {raw_op!r} on {field!r}")
            if op in ("in", "notin"):
                want: Any = [coerce(item, like) for item in as_list(value)]
            else:
                want = coerce(value, like)
            tests.append((field, op, want))

    def predicate(row: Row) -> bool:
        return all(_test(op, row.get(field), want) for field, op, want in tests)

    return predicate


def order_rows(
    rows: list[dict[str, Any]], order: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """`rows` sorted by each (field, "asc"|"desc") in turn; nulls always last."""
    out = list(rows)
    for field, direction in reversed(order):
        desc = str(direction).lower().startswith("desc")
        present = [r for r in out if r.get(field) is not None]
        missing = [r for r in out if r.get(field) is None]
        present.sort(key=lambda r: r[field], reverse=desc)  # stable: earlier keys win ties
        out = present + missing
    return out


def parse_order(raw: Any) -> list[tuple[str, str]]:
    """Vast's two order shapes: `[["dph_total","asc"], ...]` (search) or
    `[{"col": "id", "dir": "asc"}, ...]` (instances v1); a bare string means ascending."""
    if raw is None:
        return []
    out: list[tuple[str, str]] = []
    items: list[Any] = [raw] if isinstance(raw, str | dict) else as_list(raw)
    for item in items:
        if isinstance(item, dict):
            d = as_dict(item)
            out.append((str(d.get("col")), str(d.get("dir", "asc"))))
        elif isinstance(item, str):
            out.append((item, "asc"))
        elif isinstance(item, list | tuple) and item:
            pair = as_list(item)
            out.append((str(pair[0]), str(pair[1]) if len(pair) > 1 else "asc"))
        else:
            raise QueryError(f"bad order entry {item!r}")
    return out
