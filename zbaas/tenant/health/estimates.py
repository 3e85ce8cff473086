"""Page-count estimates behind the bloat figures, from row counts and column widths.

The expected size of a relation is its row count times the width of one row as
stored (tuple header, null bitmap and the average column widths from
``pg_statistic``, aligned), packed into pages up to the fillfactor. What the
relation occupies beyond that is reported as wasted. Like the estimates of
PgHero and pg-extras, this ignores alignment padding between columns and, for
indexes, the inner pages of the tree, so small differences are noise.

NOTE: only heap tables and B-tree indexes get an estimate. TOAST tables, and
GIN, GiST, hash and BRIN indexes, are left out of the bloat section.
"""

from __future__ import annotations

import math
from typing import Any

MAXALIGN = 8
PAGE_HEADER_BYTES = 24
ITEM_POINTER_BYTES = 4
HEAP_TUPLE_HEADER_BYTES = 23
INDEX_TUPLE_HEADER_BYTES = 8
INDEX_NULL_BITMAP_BYTES = 4
BTREE_SPECIAL_BYTES = 16
BTREE_DEFAULT_FILLFACTOR = 90
HEAP_DEFAULT_FILLFACTOR = 100


def maxalign(size: float) -> int:
    return math.ceil(size / MAXALIGN) * MAXALIGN


def storage_option(options: list[str] | None, name: str, default: int) -> int:
    """Read an integer storage parameter such as ``fillfactor`` from ``reloptions``."""
    for option in options or []:
        key, _, value = option.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return default


def has_width_statistics(row: dict[str, Any]) -> bool:
    """Return whether ANALYZE has measured every column the estimate needs."""
    return row["reltuples"] >= 0 and row["columns_with_stats"] == row["columns"] > 0


def expected_heap_pages(row: dict[str, Any], block_size: int) -> int | None:
    """Pages a table's live rows need, or None when the table was never analyzed."""
    if not has_width_statistics(row):
        return None
    null_bitmap = math.ceil(row["attribute_count"] / 8) if row["has_nulls"] else 0
    tuple_bytes = (
        maxalign(HEAP_TUPLE_HEADER_BYTES + null_bitmap)
        + maxalign(row["data_width"])
        + ITEM_POINTER_BYTES
    )
    fillfactor = storage_option(row["options"], "fillfactor", HEAP_DEFAULT_FILLFACTOR)
    usable = (block_size - PAGE_HEADER_BYTES) * fillfactor / 100
    rows_per_page = max(1, math.floor(usable / tuple_bytes))
    return math.ceil(row["reltuples"] / rows_per_page)


def expected_btree_pages(row: dict[str, Any], block_size: int) -> int | None:
    """Pages a B-tree index's entries need (leaf level and metapage), or None."""
    if row["method"] != "btree" or not has_width_statistics(row):
        return None
    header = INDEX_TUPLE_HEADER_BYTES + (INDEX_NULL_BITMAP_BYTES if row["has_nulls"] else 0)
    tuple_bytes = maxalign(header + row["data_width"]) + ITEM_POINTER_BYTES
    fillfactor = storage_option(row["options"], "fillfactor", BTREE_DEFAULT_FILLFACTOR)
    usable = (block_size - PAGE_HEADER_BYTES - BTREE_SPECIAL_BYTES) * fillfactor / 100
    entries_per_page = max(1, math.floor(usable / tuple_bytes))
    return math.ceil(row["reltuples"] / entries_per_page) + 1


def bloat(pages: int, expected: int | None, block_size: int) -> tuple[int, float] | None:
    """Return (wasted bytes, wasted share of the relation), or None without an estimate."""
    if expected is None or pages <= 0:
        return None
    wasted_pages = max(0, pages - expected)
    return wasted_pages * block_size, wasted_pages / pages
