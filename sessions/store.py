"""The session store: one directory per session, a SQLite file and artifact files beside it.

    <root>/<session id>/session.db          plans, imaginations, chunks, records, progress (WAL)
    <root>/<session id>/frames.bin          executed telemetry, one record per control step
    <root>/<session id>/artifacts/*.npz     imagined video per view, actions, validity

Durability, per write path (docs/sessions.md says the same):

- Every SQLite write is one transaction in WAL mode with `synchronous=FULL`: when the call
  returns, the WAL is fsynced, so the row survives the studio being killed and a power cut.
  The studio says "saved" on the page only after that call returned.
- An imagination's npz is written to a temporary name, fsynced and renamed before its row is
  committed: a row never points at a missing or half-written file.
- Telemetry frames are written and flushed to the OS per step by a writer thread (they
  survive the process being killed within a few ms of `append`) and fsynced every second.

A session directory whose database is missing, truncated or corrupt opens with a
`SessionError` that names the file and what is wrong; `SessionStore.list()` reports it as a
broken entry and lists every other session as usual.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sessions import schema
from sessions.frames import FRAMES_FILE, FrameReader, FrameWriter

DB_FILE = "session.db"
ARTIFACTS = "artifacts"
DEFAULT_ROOT = Path("runs/sessions")


class SessionError(RuntimeError):
    """A session that cannot be opened or written; the message names the file and the fault."""


def _json(value: Any) -> str:
    def default(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        return str(v)

    return json.dumps(value, default=default, separators=(",", ":"))


def new_session_id() -> str:
    """Sortable by time, unique across studios: 20261202-112710-3f9a1c."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def checkpoint_hash(path: str | Path | None) -> str:
    """sha256 (first 16 hex) of a checkpoint's weights: which weights imagined, not just where."""
    if not path:
        return ""
    root = Path(path)
    for name in ("ema.safetensors", "model.safetensors"):
        f = root / name
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()[:16]
    return ""


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL and synchronous=FULL, migrated to the schema."""
    if not create and not path.is_file():
        raise SessionError(f"{path}: missing (the session has no database)")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(check)
        schema.migrate(conn)
    except ValueError as e:  # a newer schema than this program knows
        raise SessionError(f"{path}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise SessionError(
            f"{path}: the session database is corrupt or truncated ({e}); "
            "the other sessions are not affected"
        ) from None
    return conn


# ---------------------------------------------------------------------------------- writing


class SessionWriter:
    """Records one studio session as it happens. Thread-safe: handlers and the telemetry
    recorder write from different threads."""

    def __init__(self, directory: str | Path, meta: Mapping[str, Any] | None = None) -> None:
        self.dir = Path(directory)
        self.id = self.dir.name
        (self.dir / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.dir / DB_FILE, create=True)
        self._lock = threading.RLock()
        self.frames = FrameWriter(self.dir / FRAMES_FILE)
        self.saved = 0  # rows committed by this writer (what the page counts as saved)
        self.closed = False
        self.set_meta(  # a session's own id and creation time win over copied metadata
            **{
                **dict(meta or {}),
                "id": self.id,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _write(self, statements: Sequence[tuple[str, tuple]]) -> int:
        """Run statements in one durable transaction; returns the last row id."""
        if self.closed:
            raise SessionError(f"session {self.id} is closed")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                rowid = 0
                for sql, args in statements:
                    rowid = self._conn.execute(sql, args).lastrowid or rowid
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise SessionError(f"session {self.id}: cannot record ({e})") from None
            self.saved += 1
            return rowid

    @property
    def frame(self) -> int:
        """Frames recorded so far: the frame index the next record is stamped with."""
        return self.frames.count

    def set_meta(self, **values: Any) -> None:
        self._write(
            [
                ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, _json(v)))
                for k, v in values.items()
            ]
        )

    # -- what happens in a session -------------------------------------------------------------

    def plan(
        self,
        plan: Sequence[str],
        actor: str,
        reason: str,
        correction: bool = False,
        event_index: int | None = None,
    ) -> int:
        """A new plan version; with `correction` also a correction record (an operator edit)."""
        t = time.time_ns()
        with self._lock:  # the version number and its rows in one critical section
            version = (
                1
                + self._conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM plan_versions"
                ).fetchone()[0]
            )
            statements = [
                (
                    "INSERT INTO plan_versions (version, t_ns, frame, actor, reason, plan) VALUES (?,?,?,?,?,?)",
                    (version, t, self.frame, actor, reason, _json(list(plan))),
                )
            ]
            if correction:
                statements.append(
                    (
                        "INSERT INTO records (t_ns, frame, kind, actor, event_index, data) VALUES (?,?,?,?,?,?)",
                        (
                            t,
                            self.frame,
                            "correction",
                            actor,
                            event_index,
                            _json({"type": "plan_edit", "version": version, "text": reason}),
                        ),
                    )
                )
            self._write(statements)
            return version

    def imagination(
        self,
        event_index: int,
        text: str,
        actions: np.ndarray,
        validity: np.ndarray,
        video: Mapping[str, np.ndarray] | None,
        *,
        length: int,
        model: str,
        checkpoint: str,
        checkpoint_hash: str,
        seed: int,
        steps: int,
        mode: str,
        timings: Mapping[str, float],
        start_state: np.ndarray,
    ) -> int:
        """Artifacts first (fsynced, renamed), then the row that points at them."""
        name = f"imagination-{time.time_ns()}.npz"
        path = self.dir / ARTIFACTS / name
        tmp = path.with_suffix(".tmp")
        arrays = {
            "actions": np.asarray(actions, np.float32),  # (H, 7)
            "validity": np.asarray(validity, np.float32),  # (H,)
            **{f"video_{cam}": np.asarray(v, np.uint8) for cam, v in (video or {}).items()},
        }
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        with self._lock:
            version = self._conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM plan_versions"
            ).fetchone()[0]
        return self._write(
            [
                (
                    "INSERT INTO imaginations (t_ns, frame, event_index, text, plan_version, model, "
                    "checkpoint, checkpoint_hash, seed, steps, mode, length, timings, start_state, "
                    "artifact) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        time.time_ns(),
                        self.frame,
                        int(event_index),
                        text,
                        version,
                        model,
                        checkpoint,
                        checkpoint_hash,
                        int(seed),
                        int(steps),
                        mode,
                        int(length),
                        _json(dict(timings)),
                        _json(np.asarray(start_state, np.float32)),
                        f"{ARTIFACTS}/{name}",
                    ),
                )
            ]
        )

    def chunk_sent(
        self,
        chunk_id: str,
        event_index: int,
        imagination_id: int | None,
        actions: np.ndarray,
        first_ack: Mapping[str, Any],
        replace: bool = False,
    ) -> None:
        self._write(
            [
                (
                    "INSERT INTO chunks (chunk_id, t_ns, frame, event_index, imagination_id, steps, "
                    "replace, actions, first_ack) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        chunk_id,
                        time.time_ns(),
                        self.frame,
                        int(event_index),
                        imagination_id,
                        len(actions),
                        int(bool(replace)),
                        _json(np.asarray(actions, np.float32)),
                        _json(dict(first_ack)),
                    ),
                )
            ]
        )

    def chunk_ended(self, chunk_id: str, final_ack: Mapping[str, Any]) -> None:
        self._write(
            [
                (
                    "UPDATE chunks SET status = ?, final_ack = ?, ended_ns = ?, executed_steps = ?, "
                    "clipped_steps = ? WHERE chunk_id = ?",
                    (
                        str(final_ack.get("status")),
                        _json(dict(final_ack)),
                        time.time_ns(),
                        int(final_ack.get("executed_steps") or 0),
                        int(final_ack.get("clipped_steps") or 0),
                        chunk_id,
                    ),
                )
            ]
        )

    def record(self, kind: str, actor: str, event_index: int | None = None, **data: Any) -> int:
        """Anything else that happened: approval, command (with its ack), fault, correction, note."""
        return self._write(
            [
                (
                    "INSERT INTO records (t_ns, frame, kind, actor, event_index, data) VALUES (?,?,?,?,?,?)",
                    (time.time_ns(), self.frame, kind, actor, event_index, _json(data)),
                )
            ]
        )

    def progress(self, score: int, stages: Sequence[Mapping[str, Any]] = ()) -> None:
        self._write(
            [
                (
                    "INSERT INTO progress (t_ns, frame, score, stages) VALUES (?,?,?,?)",
                    (time.time_ns(), self.frame, int(score), _json(list(stages))),
                )
            ]
        )

    def divergence(self, d: Mapping[str, Any]) -> None:
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO divergence (chunk_id, t_ns, event_index, imagination_id, "
                    "steps, path_mean_m, path_max_m, video_mae, diverged_step) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        d["chunk_id"],
                        time.time_ns(),
                        int(d["event_index"]),
                        int(d["imagination_id"]),
                        int(d["steps"]),
                        float(d["path_mean_m"]),
                        float(d["path_max_m"]),
                        None if d.get("video_mae") is None else float(d["video_mae"]),
                        d.get("diverged_step"),
                    ),
                )
            ]
        )

    def step(self, state: np.ndarray, images: Mapping[str, np.ndarray], **tags: Any) -> int:
        """One control step of executed telemetry (see sessions.frames)."""
        return self.frames.append(state, images, **tags)

    def close(self, outcome: str | None = None) -> None:
        if self.closed:
            return
        self.frames.close()
        if outcome is not None:
            self.set_meta(outcome=outcome)
        self.set_meta(ended=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        with self._lock:
            self.closed = True
            self._conn.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SessionSummary:
    """One line of the sessions tab."""

    id: str
    task: str
    created: str
    outcome: str
    steps: int
    corrections: int
    imaginations: int
    error: str = ""  # non-empty: the session could not be read, and why


class SessionReader:
    """A recorded session: its rows, artifacts and frames."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.id = self.dir.name
        if not self.dir.is_dir():
            raise SessionError(f"no session {self.id!r} in {self.dir.parent}")
        self._conn = connect(self.dir / DB_FILE)
        self._conn.row_factory = sqlite3.Row
        self.meta = {
            r["key"]: json.loads(r["value"]) for r in self._conn.execute("SELECT * FROM meta")
        }
        self.frames = FrameReader(self.dir / FRAMES_FILE)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        out = []
        for r in self._conn.execute(sql, args):
            d = dict(r)
            for key in (
                "plan",
                "timings",
                "start_state",
                "actions",
                "first_ack",
                "final_ack",
                "data",
                "stages",
            ):
                if isinstance(d.get(key), str):
                    d[key] = json.loads(d[key])
            out.append(d)
        return out

    def plan_versions(self) -> list[dict]:
        return self._rows("SELECT * FROM plan_versions ORDER BY version")

    def imaginations(self) -> list[dict]:
        return self._rows("SELECT * FROM imaginations ORDER BY id")

    def imagination_arrays(self, imagination: Mapping[str, Any]) -> dict[str, Any]:
        """{"actions" (H, 7), "validity" (H,), "video" {cam: uint8 (T, h, w, 3)}}."""
        path = self.dir / imagination["artifact"]
        try:
            with np.load(path) as z:
                return {
                    "actions": z["actions"],
                    "validity": z["validity"],
                    "video": {k[len("video_") :]: z[k] for k in z.files if k.startswith("video_")},
                }
        except (OSError, ValueError, KeyError) as e:
            raise SessionError(f"{path}: unreadable imagination artifact ({e})") from None

    def chunks(self) -> list[dict]:
        return self._rows("SELECT * FROM chunks ORDER BY t_ns")

    def records(self, kind: str | None = None) -> list[dict]:
        if kind is None:
            return self._rows("SELECT * FROM records ORDER BY id")
        return self._rows("SELECT * FROM records WHERE kind = ? ORDER BY id", (kind,))

    def progress(self) -> list[dict]:
        return self._rows("SELECT * FROM progress ORDER BY id")

    def divergence(self) -> list[dict]:
        return self._rows("SELECT * FROM divergence ORDER BY t_ns")

    def timeline(self) -> list[dict]:
        """Every row of the session in time order: {t_ns, frame, what, detail}."""
        items = []
        for p in self.plan_versions():
            items.append(
                (p["t_ns"], p["frame"], f"plan v{p['version']} ({p['actor']})", p["reason"])
            )
        for im in self.imaginations():
            items.append(
                (
                    im["t_ns"],
                    im["frame"],
                    f"imagined event {im['event_index'] + 1}",
                    f"{im['text']!r}: {im['length']} steps, seed {im['seed']}, {im['steps']} "
                    f"denoising steps, {im['mode']}, {im['timings'].get('total_s', 0):.2f} s",
                )
            )
        for c in self.chunks():
            items.append(
                (
                    c["t_ns"],
                    c["frame"],
                    f"chunk sent, event {c['event_index'] + 1}",
                    f"{c['chunk_id']}: {c['steps']} steps{' (replace)' if c['replace'] else ''}, "
                    f"{c['status'] or 'running'}"
                    + (f", {c['executed_steps']} executed" if c["status"] else ""),
                )
            )
        for r in self.records():
            data = r["data"]
            what = r["kind"] + (f" {data.get('type')}" if "type" in data else "")
            detail = data.get("text") or ", ".join(
                f"{k}={v}" for k, v in data.items() if k != "type"
            )
            items.append((r["t_ns"], r["frame"], what, str(detail)))
        items.sort(key=lambda x: x[0])
        return [{"t_ns": t, "frame": f, "what": w, "detail": d} for t, f, w, d in items]

    def summary(self) -> SessionSummary:
        outcome = self.meta.get("outcome")
        if not outcome:
            scores = self.progress()
            last = f", Task Progress {10 * scores[-1]['score']} %" if scores else ""
            outcome = ("open" if "ended" not in self.meta else "ended") + last
        corrections = self._conn.execute(
            "SELECT COUNT(*) FROM records WHERE kind = 'correction'"
        ).fetchone()[0]
        imaginations = self._conn.execute("SELECT COUNT(*) FROM imaginations").fetchone()[0]
        return SessionSummary(
            id=self.id,
            task=str(self.meta.get("task", "")),
            created=str(self.meta.get("created", "")),
            outcome=str(outcome),
            steps=len(self.frames),
            corrections=int(corrections),
            imaginations=int(imaginations),
        )


class SessionStore:
    """All sessions under one root directory."""

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def create(self, meta: Mapping[str, Any] | None = None) -> SessionWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        return SessionWriter(self.root / new_session_id(), meta)

    def ids(self) -> list[str]:
        """Session ids, newest first."""
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir() if p.is_dir()), reverse=True)

    def open(self, session_id: str) -> SessionReader:
        session_id = str(session_id or "").strip()
        if not session_id or "/" in session_id or session_id.startswith("."):
            raise SessionError(f"not a session id: {session_id!r}")
        path = self.root / session_id
        if not path.is_dir():
            close = [s for s in self.ids() if s.startswith(session_id)]
            if len(close) == 1:
                path = self.root / close[0]
            else:
                raise SessionError(
                    f"no session {session_id!r} in {self.root}"
                    + (f"; it matches {len(close)} sessions" if close else "")
                )
        return SessionReader(path)

    def list(self) -> list[SessionSummary]:
        """Every session, newest first; a broken one is listed with its error, not skipped."""
        out = []
        for sid in self.ids():
            try:
                with SessionReader(self.root / sid) as r:
                    out.append(r.summary())
            except SessionError as e:
                out.append(SessionSummary(sid, "", "", "unreadable", 0, 0, 0, error=str(e)))
        return out


def resolve(session: str | Path, root: str | Path = DEFAULT_ROOT) -> SessionReader:
    """A session given as a directory path or as an id (or unique id prefix) under `root`."""
    p = Path(session)
    if (p / DB_FILE).exists() or (p.is_dir() and p.parent != Path(".")):
        return SessionReader(p)
    return SessionStore(root).open(str(session))
