"""The ``q`` parameter of ``files.list`` (Drive v2 search syntax), parsed into a small AST.

The subset pydrive2 and pydrive2.fs send, plus what a hand-written query plausibly uses:

- ``'ID' in parents``, ``'EMAIL' in owners`` (``'me' in owners`` too);
- ``title = | != | contains 'x'``, ``mimeType = | != | contains 'x'``, ``fullText contains 'x'``;
- ``trashed | starred | hidden = | != true|false``;
- ``modifiedDate | createdDate  < <= = != > >=  'RFC 3339'``;
- ``and``, ``or``, ``not``, parentheses;
- string literals in single quotes, with ``\\'`` and ``\\\\`` escapes.

Like Drive, ``title =`` and ``contains`` ignore case (pydrive2.fs re-checks titles itself because
of this), and ``contains`` on a title matches a prefix of the title or of one of its words
(Drive's documented behaviour: ``'Hello'`` finds "HelloWorld", ``'World'`` does not).
Anything else is a ``QueryError``, which the API answers as 400 ``invalid``, as Drive does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

TEXT_FIELDS = frozenset({"title", "mimeType", "fullText"})
BOOL_FIELDS = frozenset({"trashed", "starred", "hidden"})
DATE_FIELDS = frozenset({"modifiedDate", "createdDate"})
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op><=|>=|!=|=|<|>)|(?P<paren>[()])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)


class QueryError(ValueError):
    """The query is not one Drive would accept (or not one the sim understands)."""


@dataclass(frozen=True)
class InParents:
    folder_id: str


@dataclass(frozen=True)
class InOwners:
    email: str


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: str | bool


@dataclass(frozen=True)
class And:
    left: Query
    right: Query


@dataclass(frozen=True)
class Or:
    left: Query
    right: Query


@dataclass(frozen=True)
class Not:
    inner: Query


Query = InParents | InOwners | Compare | And | Or | Not


class Item(Protocol):
    """What a query reads of a file (``store.FileMeta`` has these)."""

    title: str
    mime_type: str
    description: str
    parents: list[str]
    owner: str
    trashed: bool
    created: datetime
    modified: datetime


@dataclass(frozen=True)
class _Tok:
    kind: str  # "str", "op", "paren", "word"
    text: str


def _tokens(q: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN.match(q, pos)
        if m is None or m.lastgroup is None:
            raise QueryError(f"Invalid query: unexpected {q[pos:].strip()[:20]!r}")
        text = m.group(m.lastgroup)
        if m.lastgroup == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        out.append(_Tok(m.lastgroup, text))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = _tokens(q)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise QueryError(f"Invalid query: expected {what} at the end")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Query:
        node = self.or_()
        if self.peek() is not None:
            raise QueryError(f"Invalid query: unexpected {self.peek()!r}")
        return node

    def or_(self) -> Query:
        node = self.and_()
        while self.keyword("or"):
            node = Or(node, self.and_())
        return node

    def and_(self) -> Query:
        node = self.not_()
        while self.keyword("and"):
            node = And(node, self.not_())
        return node

    def not_(self) -> Query:
        if self.keyword("not"):
            return Not(self.not_())
        tok = self.peek()
        if tok is not None and tok.kind == "paren" and tok.text == "(":
            self.i += 1
            node = self.or_()
            close = self.next("')'")
            if close.text != ")":
                raise QueryError("Invalid query: expected ')'")
            return node
        return self.term()

    def term(self) -> Query:
        tok = self.next("a term")
        if tok.kind == "str":
            if not self.keyword("in"):
                raise QueryError("Invalid query: expected 'in' after a string")
            coll = self.next("parents or owners").text
            if coll == "parents":
                return InParents(tok.text)
            if coll == "owners":
                return InOwners(tok.text)
            raise QueryError(f"Invalid query: cannot search 'in {coll}'")
        if tok.kind != "word":
            raise QueryError(f"Invalid query: unexpected {tok.text!r}")
        field = tok.text
        op_tok = self.next("an operator")
        op = op_tok.text.lower() if op_tok.kind == "word" else op_tok.text
        if op_tok.kind not in ("op", "word") or op not in (
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "contains",
        ):
            raise QueryError(f"Invalid query: {op_tok.text!r} is not an operator")
        value_tok = self.next("a value")
        return _compare(field, op, value_tok)


def _compare(field: str, op: str, tok: _Tok) -> Compare:
    if field in BOOL_FIELDS:
        if op not in ("=", "!=") or tok.kind != "word" or tok.text not in ("true", "false"):
            raise QueryError(f"Invalid query: {field} takes = or != true|false")
        return Compare(field, op, tok.text == "true")
    if tok.kind != "str":
        raise QueryError(f"Invalid query: {field} takes a quoted string")
    if field in TEXT_FIELDS:
        allowed = ("contains",) if field == "fullText" else ("=", "!=", "contains")
    elif field in DATE_FIELDS:
        allowed = ("=", "!=", "<", "<=", ">", ">=")
        _date(tok.text)  # reject a bad date now, not per item
    else:
        raise QueryError(f"Invalid query: the sim cannot search on {field!r}")
    if op not in allowed:
        raise QueryError(f"Invalid query: {field} does not support {op!r}")
    return Compare(field, op, tok.text)


def parse(q: str) -> Query | None:
    """The AST of ``q``; None for an empty query (everything matches)."""
    if not q.strip():
        return None
    return _Parser(q).parse()


def matches(node: Query | None, item: Item, *, root_id: str, viewer: str) -> bool:
    """Whether ``item`` is found by ``node``; ``root_id`` answers the alias ``root``."""
    match node:
        case None:
            return True
        case InParents(folder_id=fid):
            return (root_id if fid == "root" else fid) in item.parents
        case InOwners(email=email):
            return (viewer if email == "me" else email).lower() == item.owner.lower()
        case And(left=a, right=b):
            return matches(a, item, root_id=root_id, viewer=viewer) and matches(
                b, item, root_id=root_id, viewer=viewer
            )
        case Or(left=a, right=b):
            return matches(a, item, root_id=root_id, viewer=viewer) or matches(
                b, item, root_id=root_id, viewer=viewer
            )
        case Not(inner=inner):
            return not matches(inner, item, root_id=root_id, viewer=viewer)
        case Compare():
            return _compare_item(node, item)


def _compare_item(c: Compare, item: Item) -> bool:
    if isinstance(c.value, bool):
        actual = item.trashed if c.field == "trashed" else False  # nothing is starred/hidden
        return (actual == c.value) == (c.op == "=")
    if c.field in DATE_FIELDS:
        have = item.created if c.field == "createdDate" else item.modified
        return _ordered(have, c.op, _date(c.value))
    if c.field == "fullText":
        return c.value.lower() in f"{item.title}\n{item.description}".lower()
    have_text = item.title if c.field == "title" else item.mime_type
    if c.op == "contains":
        return (
            _title_contains(have_text, c.value)
            if c.field == "title"
            else (c.value.lower() in have_text.lower())
        )
    equal = have_text.lower() == c.value.lower() if c.field == "title" else have_text == c.value
    return equal == (c.op == "=")


def _title_contains(title: str, value: str) -> bool:
    needle = value.lower()
    words = [title.lower(), *(w for w in re.split(r"[^0-9a-z]+", title.lower()) if w)]
    return any(w.startswith(needle) for w in words)


def _ordered(a: datetime, op: str, b: datetime) -> bool:
    match op:
        case "=":
            return a == b
        case "!=":
            return a != b
        case "<":
            return a < b
        case "<=":
            return a <= b
        case ">":
            return a > b
        case _:
            return a >= b


def _date(text: str) -> datetime:
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise QueryError(f"Invalid query: {text!r} is not an RFC 3339 date") from e
    if d.tzinfo is None:
        raise QueryError(f"Invalid query: {text!r} has no time zone")
    return d
