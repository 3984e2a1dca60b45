"""The sha256 of a file, the one place it is computed, with a persistent index so an unchanged
file is not hashed again, in this process or the next.

The index is a small SQLite file under `EDGELOOP_HOME` (`hash-index.sqlite3`). A row maps a
resolved path and what `stat` says of the file there (size, mtime_ns, inode, device,
ctime_ns) to its sha256. A row is used only when every one of those still matches; any write
to the file moves its ctime (which no user call can set back), so a file rewritten with the
same size and its mtime restored, or replaced by another file, is hashed again.

What the index never does:
- trust a row blindly: each row carries a check digest over its key and sha256, and a row
  whose check does not match is ignored; a file that is not an SQLite database, or a schema
  other than this one, is replaced by a fresh index (under a lock, after a second look);
- store a digest it cannot vouch for: a file that changed while it was read, or whose ctime is
  within `RACY_WINDOW_NS` of the hash (a later write in the same timestamp tick would leave
  its stat unchanged; git's "racy clean" problem), is hashed but not recorded;
- fail a caller: an index that cannot be opened, is locked past `BUSY_TIMEOUT_S`, or sits on
  a read-only folder means the file is hashed as if there were no index.

Safe under concurrent processes (SQLite's locking; writers wait `BUSY_TIMEOUT_S`), and
bounded: past `MAX_ROWS` the least recently used rows are evicted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

INDEX_NAME = "hash-index.sqlite3"
SCHEMA_VERSION = 1
MAX_ROWS = 4096
"""Rows kept at most (~1 MB); past it the least recently used go, down to 7/8 of it."""
RACY_WINDOW_NS = 2_000_000_000
"""A file changed this recently is not recorded: the coarsest timestamps in use (FAT's 2 s)
could hide a second write in the same tick."""
TOUCH_AFTER_NS = 3_600_000_000_000
"""A hit records its use at most once an hour, so a hit is normally a read and nothing else."""
BUSY_TIMEOUT_S = 2.0
BLOCK_BYTES = 1 << 20
COLUMNS = ("path", "size", "mtime_ns", "ino", "dev", "ctime_ns", "sha256", "check_", "used_ns")
_SCHEMA = """CREATE TABLE files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL, dev INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, check_ TEXT NOT NULL, used_ns INTEGER NOT NULL)"""
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (named in `sqlite3` from 3.11)
_CORRUPT_TEXTS = ("database disk image is malformed", "file is not a database")


@dataclass(frozen=True)
class FileKey:
    """Where a file is and what `stat` says of it: a row is used only when all of it matches."""

    path: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> FileKey:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)

    def check(self, sha256: str) -> str:
        """A digest over the key and its sha256, stored beside them: a row that does not match
        its own check (a garbled page, a hand edit) is never used."""
        text = f"{self.path}\0{self.size}\0{self.mtime_ns}\0{self.ino}\0{self.dev}\0"
        return hashlib.sha256(f"{text}{self.ctime_ns}\0{sha256}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FileDigest:
    """A file's sha256 and whether it came from the index (True) or from reading the file."""

    sha256: str
    from_index: bool


def default_index_path() -> Path:
    from toolkit.paths import edgeloop_home

    return edgeloop_home() / INDEX_NAME


class HashIndex:
    """The persistent index at `path` (default: `$EDGELOOP_HOME/hash-index.sqlite3`).

    Args:
        path: the SQLite file; created on first use.
        max_rows: rows kept at most (least recently used evicted).
    """

    def __init__(self, path: Optional[Path] = None, max_rows: int = MAX_ROWS) -> None:
        self._path = path
        self.max_rows = max_rows

    @property
    def path(self) -> Path:
        return Path(self._path) if self._path is not None else default_index_path()

    def digest(self, file: Union[str, Path]) -> FileDigest:
        """The sha256 of `file`: from the index when its row still matches, else by reading
        it (and recording it when it can be vouched for).

        Raises:
            OSError: the file cannot be read (FileNotFoundError when it does not exist).
        """
        resolved = str(Path(file).resolve())
        key = FileKey.of(resolved, os.stat(resolved))
        known = self.lookup(key)
        if known is not None:
            return FileDigest(known, True)
        started_ns = time.time_ns()
        sha256, stable = _read_sha256(resolved, key)
        if stable and key.ctime_ns < started_ns - RACY_WINDOW_NS:
            self._store(key, sha256)
        return FileDigest(sha256, False)

    def indexed(self, file: Union[str, Path]) -> Optional[str]:
        """The sha256 the index holds for `file` as it is now, or None; never reads the file."""
        resolved = str(Path(file).resolve())
        try:
            key = FileKey.of(resolved, os.stat(resolved))
        except OSError:
            return None
        return self.lookup(key)

    def lookup(self, key: FileKey) -> Optional[str]:
        with self._connection() as conn:
            if conn is None:
                return None
            row = conn.execute(
                "SELECT size, mtime_ns, ino, dev, ctime_ns, sha256, check_, used_ns FROM files"
                " WHERE path = ?",
                (key.path,),
            ).fetchone()
            if row is None:
                return None
            *stat, sha256, check, used_ns = row
            if tuple(stat) != (key.size, key.mtime_ns, key.ino, key.dev, key.ctime_ns):
                return None  # the file changed: hashed again, and the row replaced
            if not _is_sha256(sha256) or check != key.check(sha256):
                return None  # not trusted; replaced once the file is hashed
            now = time.time_ns()
            if now - used_ns > TOUCH_AFTER_NS:
                _quietly(conn, "UPDATE files SET used_ns = ? WHERE path = ?", (now, key.path))
            return sha256

    def _store(self, key: FileKey, sha256: str) -> None:
        with self._connection() as conn:
            if conn is None:
                return
            row = (key.path, key.size, key.mtime_ns, key.ino, key.dev, key.ctime_ns, sha256,
                   key.check(sha256), time.time_ns())
            if not _quietly(conn, "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?)", row):
                return
            (count,) = conn.execute("SELECT count(*) FROM files").fetchone()
            if count > self.max_rows:
                keep = self.max_rows - self.max_rows // 8
                _quietly(
                    conn,
                    "DELETE FROM files WHERE path IN"
                    " (SELECT path FROM files ORDER BY used_ns ASC LIMIT ?)",
                    (count - keep,),
                )

    @contextmanager
    def _connection(self) -> Iterator[Optional[sqlite3.Connection]]:
        """An open, checked index, or None where there can be none (unwritable folder, locked
        past the timeout, corrupt and not rebuildable): the caller then hashes without it."""
        try:
            path = self.path
            conn = _open_checked(path)
        except (OSError, sqlite3.OperationalError):
            conn = None
        if conn is None:
            yield None
            return
        try:
            yield conn
        except sqlite3.OperationalError:
            pass  # locked past the timeout, disk full, read-only: the answer goes without it
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            conn.close()
            _rebuild(path)
        finally:
            conn.close()


def file_digest(path: Union[str, Path]) -> FileDigest:
    """The sha256 of a file through the default index, and whether the index had it."""
    return HashIndex().digest(path)


def file_sha256(path: Union[str, Path]) -> str:
    """Hex sha256 of a file's bytes; an unchanged file is not read again (see the module).

    Raises:
        OSError: the file cannot be read (FileNotFoundError when it does not exist).
    """
    return HashIndex().digest(path).sha256


def _read_sha256(path: str, key: FileKey) -> tuple[str, bool]:
    """(sha256 of the file's bytes, whether the file read is the one `key` describes and did
    not change while it was read)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        before = FileKey.of(path, os.fstat(f.fileno()))
        buffer = memoryview(bytearray(BLOCK_BYTES))
        while n := f.readinto(buffer):
            digest.update(buffer[:n])
        after = FileKey.of(path, os.fstat(f.fileno()))
    return digest.hexdigest(), before == key == after


def _is_sha256(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def _corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database (its primary error code, or
    its message on Python 3.10, whose exceptions carry no code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    return any(text in str(exc) for text in _CORRUPT_TEXTS)


def _quietly(conn: sqlite3.Connection, sql: str, args: tuple) -> bool:
    """Runs one write; False where the index is busy or cannot be written (not an error: the
    index is a cache). Corruption is raised, for the caller to rebuild."""
    try:
        conn.execute(sql, args)
        return True
    except sqlite3.OperationalError:
        return False


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _schema_ok(conn: sqlite3.Connection) -> Optional[bool]:
    """True: this schema; None: an empty database (nothing made yet); False: anything else.
    Raises sqlite3.DatabaseError for a file that is not a database."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(files)"))
    if version == 0 and not columns:
        return None
    return version == SCHEMA_VERSION and columns == COLUMNS


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _schema_ok(conn) is None:  # another process may have made it meanwhile
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _open_checked(path: Path) -> Optional[sqlite3.Connection]:
    """Opens the index, making it if new; a corrupt or foreign one is rebuilt once.

    Raises:
        OSError, sqlite3.OperationalError: it cannot be opened or made (no index this time).
    """
    for attempt in range(2):
        conn = None
        try:
            conn = _connect(path)
            state = _schema_ok(conn)
            if state is None:
                _create(conn)
                state = _schema_ok(conn)
            if state:
                return conn
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if not _corrupt(exc):
                raise
        else:
            conn.close()
        if attempt == 0 and not _rebuild(path):
            return None
    return None


def _unusable(path: Path) -> bool:
    """A second look, under the rebuild lock: is the file at `path` still not this index?"""
    try:
        with closing(_connect(path)) as conn:
            return _schema_ok(conn) is False
    except sqlite3.DatabaseError as exc:
        if _corrupt(exc):
            return True
        raise


def _rebuild(path: Path) -> bool:
    """Replaces a corrupt or foreign index by an empty one; False where it cannot.

    Under an exclusive lock, and only if the file is still unusable (another process may have
    rebuilt it already); the fresh file is made aside and moved into place, so no process ever
    opens a half-made index.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists() and not _unusable(path):
                return True
            fresh = path.with_name(f"{path.name}.{os.getpid()}.new")
            fresh.unlink(missing_ok=True)
            with closing(_connect(fresh)) as conn:
                _create(conn)
            for suffix in ("-journal", "-wal", "-shm"):  # a stale journal must not replay
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            os.replace(fresh, path)
            return True  # the lock goes with the file's closing
    except (OSError, sqlite3.Error):
        return False
