"""Run the bundled PostgreSQL client programs (pg_dump, psql) against a server.

Connection settings reach the programs only through libpq environment
variables, so a password never appears on a command line, where other local
users could read it in the process list.
"""

from __future__ import annotations

import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from zbaas.postgres.embedded import bin_dir

# libpq connection parameters and the environment variable each one has.
LIBPQ_ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


def program(name: str) -> Path:
    """Return the path of a bundled client program such as ``pg_dump``."""
    return bin_dir() / name


def libpq_environment(conninfo: str) -> dict[str, str]:
    """Return an environment that points libpq at ``conninfo`` and nowhere else.

    Inherited ``PG*`` variables are removed so that they cannot redirect the
    program. Raises ValueError for a connection parameter that has no
    environment variable, rather than dropping it silently.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in conninfo_to_dict(conninfo).items():
        variable = LIBPQ_ENVIRONMENT.get(key)
        if variable is None:
            raise ValueError(f"connection parameter {key!r} cannot be passed to libpq programs")
        environment[variable] = str(value)
    return environment
