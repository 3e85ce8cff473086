"""Three-way schema comparison of a branch, its parent and their common base.

Schemas are inspected with schemainspect and turned into DDL with migra, both
as shipped in the ``results`` package (psycopg 3). An inspected schema is kept
as a plain JSON-compatible dict, so the base can be stored in the control
database and compared later without a connection.

The base is the parent's schema when the branch was made (or last merged). An
object that only the branch changed since the base is taken from the branch.
An object that only the parent changed stays as the parent has it. An object
that both changed, each in its own way, is a conflict. Tables are compared
column by column, so both sides may add different columns to one table.
Objects are keyed as schemainspect keys them (for example ``"public"."posts"``).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pglast
import psycopg
from pglast import ast
from pglast.enums import AlterTableType, ObjectType
from results.dbdiff import Migration
from results.schemainspect import PostgreSQL, SchemaDefinition

# Schemas that the control plane creates and manages in every project and
# branch database; they are set up by provisioning, never diffed or merged.
MANAGED_SCHEMAS = frozenset({"auth", "storage", "zbaas_meta"})

# NOTE: grants are not compared or merged: a table created by a merge gets the
# parent's default privileges, but a GRANT or REVOKE made on a branch stays there.
IGNORED_CATEGORIES = frozenset({"privileges"})

# Sequence state moves with every insert, on either side; it is data, not schema.
SEQUENCE_STATE_FIELDS = ("current_value", "is_called")

CATEGORY_KINDS = {
    "schemas": "schema",
    "enums": "enum",
    "tables": "table",
    "views": "view",
    "materialized_views": "materialized view",
    "functions": "function",
    "sequences": "sequence",
    "constraints": "constraint",
    "indexes": "index",
    "extensions": "extension",
    "triggers": "trigger",
    "collations": "collation",
    "rlspolicies": "policy",
    "types": "type",
    "domains": "domain",
    "composite_types": "composite type",
}

Schema = dict[str, Any]


class UnsupportedStatement(Exception):
    """A generated statement that is not exactly one SQL statement."""


@dataclass
class Change:
    """One DDL statement of a diff, and whether it can lose data or constraints."""

    sql: str
    destructive: bool
    reason: str | None = None


@dataclass
class Conflict:
    """An object that the parent and the branch both changed since the base."""

    kind: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass
class Plan:
    """The DDL that brings the branch's changes onto the parent."""

    changes: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def destructive(self) -> list[Change]:
        return [change for change in self.changes if change.destructive]


def inspect_schema(conn: psycopg.Connection) -> Schema:
    """Inspect the user schemas of the database behind ``conn`` into a plain dict.

    ``conn`` must have tuple rows; the inspection runs in its current
    transaction, so a repeatable-read transaction gives a consistent picture.
    """
    with conn.cursor() as cursor:
        definition = PostgreSQL(cursor).as_definition().to_dict()
    return normalize(definition)


def normalize(definition: Schema) -> Schema:
    """Drop managed schemas, grants and sequence state; make the dict JSON-equal."""
    result: Schema = {"pg_version": definition.get("pg_version")}
    for category in SchemaDefinition.CATEGORIES:
        if category in IGNORED_CATEGORIES:
            continue
        objects = {
            key: value
            for key, value in (definition.get(category) or {}).items()
            if value.get("schema") not in MANAGED_SCHEMAS
        }
        if category == "sequences":
            for value in objects.values():
                for name in SEQUENCE_STATE_FIELDS:
                    value[name] = None
        for value in objects.values():
            if isinstance(value.get("dependent_on"), list):
                value["dependent_on"] = sorted(value["dependent_on"])
        if objects:
            result[category] = objects
    # A JSON round trip turns tuples into lists and other values into their text,
    # so a fresh inspection compares equal to one read back from the database.
    return json.loads(json.dumps(result, default=str))  # type: ignore[no-any-return]


def plan_merge(base: Schema, branch: Schema, parent: Schema) -> Plan:
    """Return the ordered DDL that applies the branch's changes to the parent.

    Statements of conflicting objects are still generated from the branch's
    version, so a diff shows what the branch would impose.
    """
    target, conflicts = merge_schemas(base, branch, parent)
    migration = Migration(
        PostgreSQL.from_definition(SchemaDefinition.from_dict(parent)),
        PostgreSQL.from_definition(SchemaDefinition.from_dict(target)),
    )
    migration.set_safety(False)
    migration.add_all_changes_ordered()

    changes = [classify(statement, parent, target) for statement in migration.statements]
    return Plan(changes=changes, conflicts=conflicts)


def merge_schemas(base: Schema, branch: Schema, parent: Schema) -> tuple[Schema, list[Conflict]]:
    """Return the parent's schema with the branch's changes, and the conflicts found."""
    target = copy.deepcopy(parent)
    conflicts: list[Conflict] = []

    for category in SchemaDefinition.CATEGORIES:
        if category in IGNORED_CATEGORIES:
            continue
        kind = CATEGORY_KINDS.get(category, category)
        base_objects = base.get(category) or {}
        branch_objects = branch.get(category) or {}
        parent_objects = parent.get(category) or {}
        merged = target.setdefault(category, {})

        for key in sorted(set(base_objects) | set(branch_objects) | set(parent_objects)):
            original = base_objects.get(key)
            ours = branch_objects.get(key)
            theirs = parent_objects.get(key)
            if ours in (original, theirs):
                continue
            if theirs == original:
                _put(merged, key, ours)
                continue
            if category == "tables" and original and ours and theirs:
                table, table_conflicts = _merge_table(key, original, ours, theirs)
                merged[key] = table
                conflicts.extend(table_conflicts)
                continue
            conflicts.append(Conflict(kind, key))
            _put(merged, key, ours)

    return target, conflicts


def _put(objects: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        objects.pop(key, None)
    else:
        objects[key] = value


def _merge_table(
    key: str, original: Schema, ours: Schema, theirs: Schema
) -> tuple[Schema, list[Conflict]]:
    """Merge one table that both sides changed: per attribute, and per column."""
    table = copy.deepcopy(theirs)
    conflicts: list[Conflict] = []

    for attribute in sorted(set(original) | set(ours) | set(theirs)):
        if attribute == "columns":
            continue
        before, mine, other = original.get(attribute), ours.get(attribute), theirs.get(attribute)
        if mine in (before, other):
            continue
        if other == before:
            table[attribute] = mine
        else:
            conflicts.append(Conflict("table", f"{key} ({attribute})"))
            table[attribute] = mine

    base_columns = original.get("columns") or {}
    our_columns = ours.get("columns") or {}
    their_columns = theirs.get("columns") or {}
    columns: dict[str, Any] = dict(their_columns)
    for name in [*their_columns, *(c for c in our_columns if c not in their_columns)]:
        before, mine, other = base_columns.get(name), our_columns.get(name), their_columns.get(name)
        if mine in (before, other):
            continue
        if other != before:
            conflicts.append(Conflict("column", f'{key}."{name}"'))
        _put(columns, name, mine)
    table["columns"] = columns
    return table, conflicts


def classify(statement: str, parent: Schema, target: Schema) -> Change:
    """Flag a statement that drops a table, column, constraint or unique index, or
    narrows a column's type. A constraint or index that the target still has is
    only being recreated, so its drop is not flagged.

    Raises UnsupportedStatement unless the text parses as exactly one statement,
    because generated DDL embeds names and bodies that the branch's owner wrote.
    """
    text = statement.strip()
    try:
        parsed = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        raise UnsupportedStatement(f"generated DDL does not parse: {exc}") from None
    if len(parsed) != 1:
        raise UnsupportedStatement(f"generated DDL contains {len(parsed)} statements: {text[:200]}")

    node = parsed[0].stmt
    reason = None
    if isinstance(node, ast.DropStmt):
        reason = _drop_reason(node, parent, target)
    elif isinstance(node, ast.AlterTableStmt):
        reason = _alter_reason(node, parent, target)
    return Change(sql=text, destructive=reason is not None, reason=reason)


DESTRUCTIVE_DROPS = {
    ObjectType.OBJECT_TABLE: "drops a table",
    ObjectType.OBJECT_FOREIGN_TABLE: "drops a foreign table",
    ObjectType.OBJECT_SCHEMA: "drops a schema",
    ObjectType.OBJECT_SEQUENCE: "drops a sequence",
}


def _drop_reason(node: ast.DropStmt, parent: Schema, target: Schema) -> str | None:
    if node.removeType in DESTRUCTIVE_DROPS:
        return DESTRUCTIVE_DROPS[node.removeType]
    if node.removeType == ObjectType.OBJECT_INDEX:
        for names in node.objects or ():
            key = ".".join(_quoted(name.sval) for name in names)
            index = (parent.get("indexes") or {}).get(key)
            # A changed index is dropped and created again under its name.
            recreated = key in (target.get("indexes") or {})
            if index and index.get("is_unique") and not recreated:
                return "drops a unique index"
    return None


def _alter_reason(node: ast.AlterTableStmt, parent: Schema, target: Schema) -> str | None:
    relation = node.relation
    key = f"{_quoted(relation.schemaname or 'public')}.{_quoted(relation.relname)}"
    for command in node.cmds or ():
        if not isinstance(command, ast.AlterTableCmd):
            continue
        if command.subtype == AlterTableType.AT_DropColumn:
            return "drops a column"
        # migra drops and adds back the foreign keys of every table it alters.
        constraint = f"{key}.{_quoted(command.name or '')}"
        if command.subtype == AlterTableType.AT_DropConstraint and constraint not in (
            target.get("constraints") or {}
        ):
            return "drops a constraint"
        if command.subtype == AlterTableType.AT_AlterColumnType:
            old = _column_type(parent, key, command.name)
            new = _column_type(target, key, command.name)
            if old is None or new is None or not is_widening(old, new):
                return f"changes the type of column {command.name} from {old} to {new}"
    return None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _column_type(schema: Schema, table: str, column: str | None) -> str | None:
    columns = ((schema.get("tables") or {}).get(table) or {}).get("columns") or {}
    info = columns.get(column) if column else None
    return info.get("dbtypestr") if info else None


INTEGER_RANKS = {"smallint": 1, "integer": 2, "bigint": 3}
VARCHAR = re.compile(r"^character varying(?:\((\d+)\))?$")
NUMERIC = re.compile(r"^numeric(?:\((\d+),(\d+)\))?$")


def is_widening(old: str, new: str) -> bool:
    """Tell whether every value of type ``old`` fits ``new`` unchanged.

    These changes count as widening: a larger integer type, integer to
    numeric, real to double precision, and a longer or unbounded varchar.
    Unbounded varchar and text widen to each other, and a numeric widens to
    one with at least as many digits on each side of the point. Any other
    type change counts as narrowing.
    """
    if old == new:
        return True
    if old in INTEGER_RANKS and new in INTEGER_RANKS:
        return INTEGER_RANKS[new] >= INTEGER_RANKS[old]
    if old in INTEGER_RANKS and new == "numeric":
        return True
    if old == "real" and new == "double precision":
        return True

    old_varchar, new_varchar = VARCHAR.match(old), VARCHAR.match(new)
    if old_varchar and (new == "text" or (new_varchar and new_varchar.group(1) is None)):
        return True
    if old_varchar and new_varchar:
        old_length, new_length = old_varchar.group(1), new_varchar.group(1)
        return old_length is not None and int(new_length) >= int(old_length)
    if old == "text" and new_varchar and new_varchar.group(1) is None:
        return True

    old_numeric, new_numeric = NUMERIC.match(old), NUMERIC.match(new)
    if old_numeric and new_numeric:
        if new_numeric.group(1) is None:
            return True
        if old_numeric.group(1) is None:
            return False
        old_precision, old_scale = int(old_numeric.group(1)), int(old_numeric.group(2))
        new_precision, new_scale = int(new_numeric.group(1)), int(new_numeric.group(2))
        return new_scale >= old_scale and new_precision - new_scale >= old_precision - old_scale
    return False
