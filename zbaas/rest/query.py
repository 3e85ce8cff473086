"""Parse PostgREST's URL grammar and ``Prefer`` header into plain data.

Nothing here touches SQL: names stay strings until the builder checks them
against the catalog. Supported: ``select`` of columns with ``alias:column``,
filters ``eq neq gt gte lt lte like ilike is in`` with ``not.``, ``and``/``or``
trees, ``order``, ``limit``, ``offset``, ``on_conflict`` and ``columns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zbaas.rest.errors import parse_error

OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "is", "in"}
IS_VALUES = {"null", "true", "false", "unknown"}
RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}
LOGIC_KEYS = {"and", "or", "not.and", "not.or"}
# Deepest and()/or() nesting accepted, so a hostile query string cannot recurse without end.
MAX_LOGIC_DEPTH = 10
MAX_LIMIT = 1_000_000_000


@dataclass
class Filter:
    column: str
    operator: str
    value: str | list[str]
    negated: bool = False


@dataclass
class Logic:
    operator: str  # "and" or "or"
    conditions: list[Filter | Logic]
    negated: bool = False


Condition = Filter | Logic


@dataclass
class SelectItem:
    column: str  # a column name, or "*"
    alias: str | None = None


@dataclass
class OrderItem:
    column: str
    descending: bool = False
    nulls: str | None = None  # "first", "last" or None for PostgreSQL's default


@dataclass
class Query:
    select: list[SelectItem] = field(default_factory=lambda: [SelectItem("*")])
    where: list[Condition] = field(default_factory=list)
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    on_conflict: list[str] | None = None
    columns: list[str] | None = None


@dataclass
class Prefer:
    representation: bool = False
    count: str | None = None
    resolution: str | None = None  # "merge-duplicates" or "ignore-duplicates"
    missing_default: bool = False


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside double quotes and parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise parse_error(f"unbalanced parentheses in {text!r}")
        elif not quoted and depth == 0 and char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or depth != 0:
        raise parse_error(f"unbalanced quotes or parentheses in {text!r}")
    parts.append("".join(current))
    return parts


def unquote(text: str) -> str:
    """Strip one pair of double quotes and their backslash escapes, if present."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        result: list[str] = []
        escaped = False
        for char in inner:
            if escaped:
                result.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                result.append(char)
        return "".join(result)
    return text


def parse_name(text: str, kind: str) -> str:
    name = unquote(text.strip())
    if not name:
        raise parse_error(f"empty {kind} name")
    return name


def parse_select(text: str) -> list[SelectItem]:
    items: list[SelectItem] = []
    for part in split_top_level(text):
        part = part.strip()
        if not part:
            raise parse_error(f"empty item in select={text!r}")
        if part == "*":
            items.append(SelectItem("*"))
            continue
        if not part.startswith('"') and any(token in part for token in ("(", "->", "::", "...")):
            raise parse_error(
                f"unsupported select item {part!r}",
                "The data API selects plain columns and 'alias:column'; embedded resources, "
                "casts, JSON paths and spreads are not supported.",
            )
        alias, column = None, part
        if not part.startswith('"') and ":" in part:
            alias, column = part.split(":", 1)
            alias = parse_name(alias, "alias")
        items.append(SelectItem(parse_name(column, "column"), alias))
    return items


def parse_order(text: str) -> list[OrderItem]:
    items: list[OrderItem] = []
    for part in split_top_level(text):
        pieces = split_dotted(part.strip())
        item = OrderItem(parse_name(pieces[0], "column"))
        for modifier in pieces[1:]:
            if modifier == "asc":
                item.descending = False
            elif modifier == "desc":
                item.descending = True
            elif modifier in ("nullsfirst", "nullslast"):
                item.nulls = modifier.removeprefix("nulls")
            else:
                raise parse_error(
                    f"invalid order modifier {modifier!r} in order={text!r}",
                    "Use column.asc or column.desc, optionally followed by .nullsfirst or "
                    ".nullslast.",
                )
        items.append(item)
    return items


def split_dotted(text: str) -> list[str]:
    """Split ``"quoted.name".asc`` on dots outside double quotes."""
    return split_top_level(text, ".")


def parse_count(text: str, kind: str) -> int:
    if not text.isdigit() or int(text) > MAX_LIMIT:
        raise parse_error(
            f"invalid {kind} {text!r}: expected a non-negative integer up to {MAX_LIMIT}"
        )
    return int(text)


def parse_filter(column: str, text: str) -> Filter:
    """Parse ``[not.]operator.value`` for ``column``."""
    negated = False
    operator, _, value = text.partition(".")
    if operator == "not":
        negated = True
        operator, _, value = value.partition(".")
    if operator not in OPERATORS:
        raise parse_error(
            f"unknown or unsupported filter operator {operator!r} in {column}={text!r}",
            f"Supported operators: {', '.join(sorted(OPERATORS))}, each optionally after not.",
        )
    if operator == "is":
        if value.lower() not in IS_VALUES:
            raise parse_error(f"invalid value for is: {value!r}; use null, true, false or unknown")
        return Filter(column, operator, value.lower(), negated)
    if operator == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise parse_error(f"invalid list for in: {value!r}; use in.(a,b,c)")
        inner = value[1:-1]
        items = [unquote(item.strip()) for item in split_top_level(inner)] if inner else []
        return Filter(column, operator, items, negated)
    if operator in ("like", "ilike"):
        value = value.replace("*", "%")
    return Filter(column, operator, value, negated)


def parse_logic(key: str, text: str, depth: int = 0) -> Logic:
    """Parse ``or=(a.eq.1,and(b.gt.2,c.is.null))`` and its ``and``/``not.`` forms."""
    if depth > MAX_LOGIC_DEPTH:
        raise parse_error(f"and/or nested deeper than {MAX_LOGIC_DEPTH} levels")
    negated = key.startswith("not.")
    operator = key.removeprefix("not.")
    if not (text.startswith("(") and text.endswith(")")) or len(text) < 3:
        raise parse_error(f"invalid {key} condition {text!r}: expected {key}=(condition,...)")

    conditions: list[Condition] = []
    for part in split_top_level(text[1:-1]):
        part = part.strip()
        nested_key, paren, rest = part.partition("(")
        if paren and nested_key in LOGIC_KEYS:
            conditions.append(parse_logic(nested_key, "(" + rest, depth + 1))
            continue
        pieces = split_dotted(part)
        if len(pieces) < 3:
            raise parse_error(
                f"invalid condition {part!r} in {key}: expected column.operator.value"
            )
        column = parse_name(pieces[0], "column")
        remainder = part[len(pieces[0]) + 1 :]
        parsed = parse_filter(column, remainder)
        if isinstance(parsed.value, str):
            parsed.value = unquote(parsed.value)
        conditions.append(parsed)
    return Logic(operator, conditions, negated)


def parse_query(params: list[tuple[str, str]], skip: set[str] | None = None) -> Query:
    """Parse the query string of a data API request; ``skip`` names keys used elsewhere."""
    query = Query()
    seen: set[str] = set()
    for key, value in params:
        if skip and key in skip:
            continue
        if key in RESERVED:
            if key in seen:
                raise parse_error(f"the parameter {key!r} is given more than once")
            seen.add(key)
        if key == "select":
            query.select = parse_select(value)
        elif key == "order":
            query.order = parse_order(value)
        elif key == "limit":
            query.limit = parse_count(value, "limit")
        elif key == "offset":
            query.offset = parse_count(value, "offset")
        elif key == "on_conflict":
            query.on_conflict = [parse_name(name, "column") for name in split_top_level(value)]
        elif key == "columns":
            query.columns = [parse_name(name, "column") for name in split_top_level(value)]
        elif key in LOGIC_KEYS:
            query.where.append(parse_logic(key, value))
        else:
            query.where.append(parse_filter(parse_name(key, "column"), value))
    return query


def parse_prefer(values: list[str]) -> Prefer:
    """Read the preferences the data API honours; others are ignored, as PostgREST does."""
    prefer = Prefer()
    for header in values:
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name == "return":
                prefer.representation = value == "representation"
            elif name == "count" and value in ("exact", "planned", "estimated"):
                prefer.count = value
            elif name == "resolution" and value in ("merge-duplicates", "ignore-duplicates"):
                prefer.resolution = value
            elif name == "missing":
                prefer.missing_default = value == "default"
    return prefer
