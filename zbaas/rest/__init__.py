"""The PostgREST-compatible data API: query parsing, catalog lookups, SQL building."""
