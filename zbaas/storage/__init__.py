"""Object storage for projects: the bytes live in a backend, the metadata in PostgreSQL."""
