"""The shared control state in Postgres: a small connection pool per process and the schema's migrations.

Claims, batch manifests, leases, give-ups, breakers and spend live in tables prefixed `diary_` beside the
Dagster instance's own, so every machine of a deployment (sensor, run pods, `diary` commands) sees one
state. `diary_schema_version` records each migration applied: migrations run in order, each once, under
an advisory lock, so any number of processes may start together; a later version appends to `MIGRATIONS`
and never edits one already shipped.
"""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Row, create_engine, text
from sqlalchemy.engine import make_url

from diary_platform.domain.webhooks import WEBHOOK_MIGRATION

# Each entry is one schema version (its position, from 1): statements run in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS diary_content_claims (
            content_sha256 text PRIMARY KEY,
            batch_key text NOT NULL,
            source text NOT NULL,
            owner jsonb,
            claimed_at timestamptz NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS diary_taken_files (
            file_digest text PRIMARY KEY,
            user_name text NOT NULL,
            relative_path text NOT NULL,
            content_sha256 text NOT NULL,
            batch_key text
        )""",
        """CREATE TABLE IF NOT EXISTS diary_batches (
            batch_key text PRIMARY KEY,
            created timestamptz NOT NULL,
            manifest jsonb NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS diary_batches_by_created ON diary_batches (created, batch_key)",
        """CREATE TABLE IF NOT EXISTS diary_batch_leases (
            batch_key text PRIMARY KEY,
            owner jsonb NOT NULL,
            since timestamptz NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS diary_batch_give_ups (
            batch_key text PRIMARY KEY,
            attempts integer NOT NULL,
            last_error text NOT NULL,
            given_up_at timestamptz NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS diary_breakers (
            name text PRIMARY KEY,
            state text NOT NULL,
            counter integer NOT NULL DEFAULT 0,
            success_counter integer NOT NULL DEFAULT 0,
            opened_at timestamptz
        )""",
        """CREATE TABLE IF NOT EXISTS diary_daily_spend (
            user_name text NOT NULL,
            day date NOT NULL,
            usd numeric NOT NULL,
            PRIMARY KEY (user_name, day)
        )""",
    ),
    (
        """CREATE TABLE IF NOT EXISTS diary_note_batches (
            id text PRIMARY KEY,
            status text NOT NULL,
            next_poll_at timestamptz NOT NULL,
            record jsonb NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS diary_note_batches_due ON diary_note_batches (status, next_poll_at)",
    ),
    (
        """CREATE TABLE IF NOT EXISTS diary_api_uploads (
            user_name text NOT NULL,
            recording_id text NOT NULL,
            created_at timestamptz NOT NULL,
            record jsonb NOT NULL,
            PRIMARY KEY (user_name, recording_id)
        )""",
        "CREATE INDEX IF NOT EXISTS diary_api_uploads_newest ON diary_api_uploads (user_name, created_at DESC, recording_id DESC)",
    ),
    WEBHOOK_MIGRATION,
    (
        # Model promotions (domain/models/registry.py): the newest of a kind is the baseline in force.
        """CREATE TABLE IF NOT EXISTS diary_model_promotions (
            id bigserial PRIMARY KEY,
            kind text NOT NULL,
            model_id text NOT NULL,
            promoted_at timestamptz NOT NULL,
            record jsonb NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS diary_model_promotions_newest ON diary_model_promotions (kind, promoted_at DESC, id DESC)",
    ),
)
# Any constant both sides agree on: the key of the advisory lock that serializes migrations.
_MIGRATION_LOCK = 0x6469617279


def _psycopg2_url(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the platform ships psycopg2 (via dagster-postgres)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False) if parsed.drivername == "postgresql" else url


class StateDatabase:
    """One Postgres database holding the shared state; short transactions over a small pool."""

    def __init__(self, url: str):
        self.engine = create_engine(_psycopg2_url(url), pool_size=2, max_overflow=4, pool_pre_ping=True)

    @property
    def location(self) -> str:
        """Where the state is, without the password: for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    def execute(self, sql: str, **params) -> int:
        """One statement in its own transaction; how many rows it changed."""
        with self.transaction() as connection:
            return connection.execute(text(sql), params).rowcount

    def rows(self, sql: str, **params) -> list[Row]:
        with self.transaction() as connection:
            return list(connection.execute(text(sql), params))

    def migrate(self) -> int:
        """Apply the migrations this database lacks, in order; the schema version after."""
        with self.transaction() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            connection.execute(
                text("CREATE TABLE IF NOT EXISTS diary_schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            )
            current = connection.execute(text("SELECT coalesce(max(version), 0) FROM diary_schema_version")).scalar_one()
            for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    connection.execute(text(statement))
                connection.execute(text("INSERT INTO diary_schema_version (version) VALUES (:version)"), {"version": version})
            return max(current, len(MIGRATIONS))


_open: dict[str, StateDatabase] = {}
_open_lock = threading.Lock()


def _forget_inherited_pools() -> None:
    """A forked child must not use its parent's connections (psycopg2 leaves them open for the parent)."""
    for database in _open.values():
        database.engine.dispose(close=False)
    _open.clear()


os.register_at_fork(after_in_child=_forget_inherited_pools)


def state_database(url: str) -> StateDatabase:
    """The process's one pool for `url`, its schema brought up to date the first time."""
    with _open_lock:
        if url not in _open:
            database = StateDatabase(url)
            database.migrate()
            _open[url] = database
        return _open[url]
