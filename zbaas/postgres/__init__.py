"""Connections to PostgreSQL servers: the embedded server, pools and SQL helpers."""
