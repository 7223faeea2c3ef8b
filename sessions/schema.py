"""The session database schema: numbered migrations applied in order, `user_version` = the last.

One SQLite file per session (`session.db`), so a damaged file costs one session, never the
store. Shapes that vary (plans, timings, acks, stages) live in JSON text columns; what the
sessions tab filters or sorts on (kind, event index, time) has its own column.

Migrations are small functions `(conn) -> None`; `migrate(conn)` runs those above the file's
`PRAGMA user_version` inside one transaction each (the connection is in autocommit mode,
`isolation_level=None`, so BEGIN/COMMIT are ours), so a file is always at a whole version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _run(conn: sqlite3.Connection, script: str) -> None:
    """Statements one by one (`executescript` would COMMIT the migration's transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1(conn: sqlite3.Connection) -> None:
    """The first schema: meta, plan versions, imaginations, chunks, records, Task Progress."""
    _run(
        conn,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE plan_versions (
            version INTEGER PRIMARY KEY,      -- 1, 2, ... in the order they were set
            t_ns INTEGER NOT NULL,            -- wall clock, ns since the Unix epoch
            frame INTEGER NOT NULL,           -- control-step frames recorded before it
            actor TEXT NOT NULL,              -- 'scene', 'operator', 'vlm', 'demo'
            reason TEXT NOT NULL,             -- what changed, in words
            plan TEXT NOT NULL                -- JSON list of event instructions
        );
        CREATE TABLE imaginations (
            id INTEGER PRIMARY KEY,
            t_ns INTEGER NOT NULL,
            frame INTEGER NOT NULL,
            event_index INTEGER NOT NULL,
            text TEXT NOT NULL,               -- the event instruction it was conditioned on
            plan_version INTEGER NOT NULL,
            model TEXT NOT NULL,              -- preset/recipe
            checkpoint TEXT NOT NULL,         -- checkpoint path
            checkpoint_hash TEXT NOT NULL,    -- sha256 of its weights file (first 16 hex)
            seed INTEGER NOT NULL,
            steps INTEGER NOT NULL,           -- denoising steps
            mode TEXT NOT NULL,               -- 'event' | 'unified'
            length INTEGER NOT NULL,          -- valid steps of the chunk
            timings TEXT NOT NULL,            -- JSON {stage: seconds}
            start_state TEXT NOT NULL,        -- JSON (7,) the state it was imagined from
            artifact TEXT NOT NULL            -- npz beside the db: video per view, actions, validity
        );
        CREATE TABLE chunks (
            chunk_id TEXT PRIMARY KEY,
            t_ns INTEGER NOT NULL,            -- sent (and accepted)
            frame INTEGER NOT NULL,
            event_index INTEGER NOT NULL,
            imagination_id INTEGER,           -- NULL for a chunk not from an imagination
            steps INTEGER NOT NULL,
            replace INTEGER NOT NULL,         -- sent with replace: true
            actions TEXT NOT NULL,            -- JSON (H, 7) absolute targets
            first_ack TEXT NOT NULL,          -- JSON of the 'accepted' ack
            status TEXT,                      -- final ack status: done | aborted (NULL: running)
            final_ack TEXT,                   -- JSON of the final ack
            ended_ns INTEGER,
            executed_steps INTEGER,
            clipped_steps INTEGER
        );
        CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            t_ns INTEGER NOT NULL,
            frame INTEGER NOT NULL,
            kind TEXT NOT NULL,               -- approval, command, fault, correction, note, ...
            actor TEXT NOT NULL,
            event_index INTEGER,
            data TEXT NOT NULL                -- JSON, shape depends on kind (docs/sessions.md)
        );
        CREATE INDEX records_kind ON records (kind);
        CREATE TABLE progress (
            id INTEGER PRIMARY KEY,
            t_ns INTEGER NOT NULL,
            frame INTEGER NOT NULL,
            score INTEGER NOT NULL,           -- Task Progress 0..10
            stages TEXT NOT NULL              -- JSON [{name, weight, done}]
        );
        """,
    )


def _v2(conn: sqlite3.Connection) -> None:
    """Imagined vs executed per event: computed when a chunk ends, stored for the sessions tab."""
    _run(
        conn,
        """
        CREATE TABLE divergence (
            chunk_id TEXT PRIMARY KEY REFERENCES chunks (chunk_id),
            t_ns INTEGER NOT NULL,
            event_index INTEGER NOT NULL,
            imagination_id INTEGER NOT NULL,
            steps INTEGER NOT NULL,           -- executed steps compared
            path_mean_m REAL NOT NULL,        -- mean end-effector distance, imagined vs executed
            path_max_m REAL NOT NULL,
            video_mae REAL,                   -- mean abs pixel difference in [0, 1], NULL without frames
            diverged_step INTEGER             -- first step farther than the threshold, NULL if none
        );
        """,
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the file up to `target`, one transaction per migration; returns the new version."""
    current = version(conn)
    if current > SCHEMA_VERSION:
        raise ValueError(
            f"session file has schema version {current}, newer than this program's "
            f"{SCHEMA_VERSION}: update wallwm to read it"
        )
    for v in range(current, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[v](conn)
            conn.execute(f"PRAGMA user_version = {v + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return version(conn)
