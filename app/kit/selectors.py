"""Kubernetes label selectors: parsing and evaluation in SQL over a JSONB `labels` column.

Syntax (as kubectl): `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, joined by
commas (AND). As in Kubernetes, `a!=b` and `a notin (...)` also match objects without `a`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, not_, or_, true

from app.errors import BadRequest

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_QUALIFIED_NAME = re.compile(rf"^(?:(?P<prefix>{_DNS_SUBDOMAIN})/)?(?P<name>{_NAME})$")
_LABEL_VALUE = re.compile(rf"^(?:{_NAME})?$")

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$", re.DOTALL)
_EQUALITY = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*(.*)$", re.DOTALL)
_EXISTS = re.compile(rf"^({_KEY})$")

MAX_SELECTOR_LENGTH = 4096


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (Kubernetes qualified name), or None."""
    match = _QUALIFIED_NAME.match(key)
    if not match:
        return (
            f"label key {key!r} must be a qualified name: an optional DNS subdomain prefix and "
            "'/', then up to 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        )
    prefix = match.group("prefix")
    if prefix and len(prefix) > 253:
        return f"label key prefix of {key!r} is longer than 253 characters"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            f"label value {value!r} must be at most 63 alphanumerics, '-', '_' or '.', "
            "starting and ending alphanumeric (or empty)"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()


def _split_requirements(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"invalid labelSelector {text!r}: unbalanced ')'")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise BadRequest(f"invalid labelSelector {text!r}: unbalanced '('")
    parts.append("".join(current))
    return parts


def parse_selector(text: str | None) -> list[Requirement]:
    """Parse a selector; a 400 names the requirement at fault."""
    if text is None or not text.strip():
        return []
    if len(text) > MAX_SELECTOR_LENGTH:
        raise BadRequest(f"labelSelector is longer than {MAX_SELECTOR_LENGTH} characters")
    requirements = []
    for raw in _split_requirements(text):
        part = raw.strip()
        if not part:
            raise BadRequest(f"invalid labelSelector {text!r}: empty requirement")
        requirements.append(_parse_requirement(part))
    return requirements


def _parse_requirement(part: str) -> Requirement:
    if match := _NOT_EXISTS.match(part):
        return Requirement(_checked_key(match.group(1), part), "!")
    if match := _SET.match(part):
        key, op, inner = match.groups()
        values = tuple(v.strip() for v in inner.split(","))
        if not inner.strip() or any(v == "" for v in values):
            raise BadRequest(f"invalid labelSelector requirement {part!r}: empty value in set")
        for value in values:
            _check_value(value, part)
        operator: Operator = "in" if op == "in" else "notin"
        return Requirement(_checked_key(key, part), operator, tuple(sorted(set(values))))
    if match := _EQUALITY.match(part):
        key, op, value = match.group(1), match.group(2), match.group(3).strip()
        _check_value(value, part)
        return Requirement(_checked_key(key, part), "!=" if op == "!=" else "=", (value,))
    if match := _EXISTS.match(part):
        return Requirement(_checked_key(match.group(1), part), "exists")
    raise BadRequest(
        f"invalid labelSelector requirement {part!r}: expected key, !key, key=value, "
        "key!=value, key in (v1,v2) or key notin (v1,v2)"
    )


def _checked_key(key: str, part: str) -> str:
    problem = label_key_problem(key)
    if problem:
        raise BadRequest(f"invalid labelSelector requirement {part!r}: {problem}")
    return key


def _check_value(value: str, part: str) -> None:
    problem = label_value_problem(value)
    if problem:
        raise BadRequest(f"invalid labelSelector requirement {part!r}: {problem}")


def selector_clause(labels: Any, requirements: list[Requirement]) -> ColumnElement[bool]:
    """SQL for the requirements over a JSONB column; equality uses `@>` so a GIN index serves it."""
    clauses: list[ColumnElement[bool]] = []
    for req in requirements:
        if req.operator == "=":
            clauses.append(labels.contains({req.key: req.values[0]}))
        elif req.operator == "!=":
            clauses.append(not_(labels.contains({req.key: req.values[0]})))
        elif req.operator == "in":
            clauses.append(labels[req.key].astext.in_(req.values))
        elif req.operator == "notin":
            clauses.append(
                or_(not_(labels.has_key(req.key)), labels[req.key].astext.notin_(req.values))
            )
        elif req.operator == "exists":
            clauses.append(labels.has_key(req.key))
        else:
            clauses.append(not_(labels.has_key(req.key)))
    return and_(true(), *clauses)


def canonical(requirements: list[Requirement]) -> str:
    """A stable text for a parsed selector (used to bind continue tokens to their query)."""
    return ",".join(
        f"{r.key}{r.operator}{'|'.join(r.values)}"
        for r in sorted(requirements, key=lambda r: (r.key, r.operator))
    )
