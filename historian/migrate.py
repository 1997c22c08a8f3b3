"""Schema migrations: plain versioned SQL files (``migrations/NNNN_name.sql``), applied in order, once each.

Each file runs in its own transaction together with its row in ``schema_migrations``, under an advisory
lock, so two historian workers starting at once apply it once. A database newer than this code (a version
this code does not have) is refused: an old historian must not write into a schema it does not know.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LOCK_KEY = 0x626F78696E737074  # "boxinspt": the advisory lock of the migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if m is None:
            raise ValueError(f"{p}: a migration file is named NNNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a version: {versions}")
    return out


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply what is missing. Returns the versions applied now. ``conn`` must not be in a transaction."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        have = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
        known = migrations(directory)
        unknown = have - {m.version for m in known}
        if unknown:
            raise RuntimeError(f"the database has schema version(s) {sorted(unknown)} this historian does not know: "
                               "it is older than the schema; upgrade it")
        for m in known:
            if m.version in have:
                continue
            log.info("schema: applying %s", m.path.name)
            conn.execute(m.path.read_text().encode())  # a trusted file of ours, several statements
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
            applied_now.append(m.version)
    return applied_now
