"""zbaas: a self-hostable Backend-as-a-Service control plane on PostgreSQL."""

__version__ = "0.1.0"
