"""Content-addressed model store on the device.

Files live at `<root>/models/<sha256>`: the hex digest is the only thing that ever becomes
a path, and it is checked to be 64 hex characters first. A push streams into a temporary
file while hashing, is refused past the size limit, and is renamed into place only when
the digest matches. When the quota would be exceeded, least recently used models go first,
but never a pinned one (a model queued or running in a Benchmark, or in use by Infer): when
the quota cannot be met without one, the push is refused. A push in progress reserves its
announced size toward the quota from its first chunk. A push the disk has no room for (less
free space than its size at the start, or the disk filling while it is written) is refused
with the bytes free and needed, and its partial file is removed at once. A model's name is
display text only: control characters are stripped and it never reaches the file system.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from device_agent.cache import writeback
from device_agent.protocol.formats import FORMAT_TO_PB, detect_format

SHA256 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = tuple(FORMAT_TO_PB)  # the wire's formats: tflite, onnx, pt2, pte
MAX_NAME_CHARS = 200
TMP_PREFIX = "push-"


class CacheError(Exception):
    """A push or lookup the cache refuses; the message says why."""


class BadDigestError(CacheError, ValueError):
    """The sha256 is malformed or does not match the bytes received."""


class TooLargeError(CacheError):
    """The model exceeds the size limit or cannot fit in the quota."""


class QuotaError(TooLargeError):
    """The quota cannot be met without evicting a model in use; the message names used,
    quota, pinned and reserved bytes."""


class DiskFullError(TooLargeError):
    """The device's disk has no room for the model (the cache's quota may have): the message
    names the folder and the bytes free and needed."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def size_text(size_bytes: int) -> str:
    """Bytes for a person: "1.5 MiB (1,572,864 bytes)"."""
    return f"{size_bytes / 2**20:.1f} MiB ({size_bytes:,} bytes)"


def disk_full(folder: Path, sha256: str, size_bytes: int) -> DiskFullError:
    """The error for a model of `size_bytes` the disk under `folder` has no room for, with the
    space free now (after any partial file of it was removed)."""
    try:
        free = size_text(shutil.disk_usage(folder).free)
    except OSError:
        free = "an unknown amount"
    return DiskFullError(
        f"no space left on the device's disk for model {sha256[:12]}: {free} free in "
        f"{folder}, {size_text(size_bytes)} needed; nothing was kept, free space and push again"
    )


class InUseError(CacheError):
    """The model is pinned (queued, benchmarked or in an Infer) and cannot be deleted."""


def display_name(name: str) -> str:
    """A model name as display text: control and format characters (escape sequences, NUL,
    bidi overrides) removed, at most MAX_NAME_CHARS characters."""
    text = name if isinstance(name, str) else str(name)
    kept = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return kept[:MAX_NAME_CHARS]


@dataclass
class CachedModel:
    sha256: str
    name: str
    size_bytes: int
    format: str
    stored_unix: float
    used_unix: float


def check_sha(sha256: str) -> str:
    """Returns the digest if it is 64 lowercase hex characters, else raises BadDigestError."""
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise BadDigestError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return sha256


class ModelCache:
    """The agent's model store.

    Args:
        root: folder that holds the models and the index.
        max_model_bytes: largest single model accepted.
        quota_bytes: total bytes the cache may hold.
    """

    def __init__(
        self, root: Path, max_model_bytes: int = 512 * 2**20, quota_bytes: int = 4 * 2**30
    ):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.tmp_dir = self.root / "tmp"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.max_model_bytes = max_model_bytes
        self.quota_bytes = quota_bytes
        self._index_path = self.root / "index.json"
        self._lock = threading.Lock()
        self._index = self._load_index()
        self._pins: Counter[str] = Counter()
        self._reserved: dict[int, int] = {}  # push id -> announced bytes
        self._push_ids = iter(range(1, 2**62))

    def remove_orphans(self) -> int:
        """Removes temporary files of pushes that never finished (an agent killed mid-push)
        and model files the index does not know. Call once at agent start, before serving;
        returns how many files were removed."""
        removed = 0
        with self._lock:
            for path in self.tmp_dir.iterdir():
                if path.is_file() and path.name.startswith(TMP_PREFIX):
                    path.unlink(missing_ok=True)
                    removed += 1
            for path in self.models_dir.iterdir():
                if path.is_file() and path.name not in self._index:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- pins ----------------------------------------------------------------
    def pin(self, sha256: str) -> Optional[CachedModel]:
        """Marks a held model as in use (counted: pins nest) and returns it; None when the
        model is not held. A pinned model is never evicted nor deleted."""
        check_sha(sha256)
        with self._lock:
            entry = self._index.get(sha256)
            if entry is None or not (self.models_dir / sha256).is_file():
                return None
            self._pins[sha256] += 1
            entry.used_unix = time.time()
            return entry

    def unpin(self, sha256: str) -> None:
        """Releases one pin taken with pin()."""
        with self._lock:
            if self._pins[sha256] <= 1:
                self._pins.pop(sha256, None)
            else:
                self._pins[sha256] -= 1

    def pinned(self) -> dict[str, int]:
        """sha256 -> pin count, for the models in use now."""
        with self._lock:
            return dict(self._pins)

    # -- queries -------------------------------------------------------------
    def path_of(self, sha256: str) -> Optional[Path]:
        """The model's file, or None when it is not held."""
        path = self.models_dir / check_sha(sha256)
        return path if path.is_file() and sha256 in self._index else None

    def get(self, sha256: str) -> Optional[CachedModel]:
        with self._lock:
            return self._index.get(check_sha(sha256))

    def touch(self, sha256: str) -> None:
        """Marks a model as just used (for eviction order). In memory only: every Infer and
        Benchmark touches, and the times reach disk with the next store or delete."""
        with self._lock:
            entry = self._index.get(sha256)
            if entry:
                entry.used_unix = time.time()

    def list(self) -> list[CachedModel]:
        with self._lock:
            return sorted(self._index.values(), key=lambda m: m.stored_unix)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.size_bytes for m in self._index.values())

    def reserved_bytes(self) -> int:
        """Bytes announced by pushes in progress."""
        with self._lock:
            return sum(self._reserved.values())

    # -- changes -------------------------------------------------------------
    def begin_push(self, sha256: str, name: str, size_bytes: int, fmt: str) -> PushWriter:
        """Starts a push: checks the size limit and that the quota can be met without
        evicting a pinned model, and reserves `size_bytes` until the push ends.

        Raises:
            CacheError: size not positive; TooLargeError: over the size limit or the quota;
            QuotaError: the quota cannot be met without evicting models in use;
            DiskFullError: the disk has less space free than `size_bytes`.
        """
        check_sha(sha256)
        if size_bytes <= 0:
            raise CacheError(f"model size must be positive, got {size_bytes}")
        if size_bytes > self.max_model_bytes:
            raise TooLargeError(
                f"model is {size_bytes} bytes; "
                f"this agent accepts at most {self.max_model_bytes} bytes"
            )
        if size_bytes > self.quota_bytes:
            raise TooLargeError(
                f"model is {size_bytes} bytes; the cache quota is {self.quota_bytes} bytes"
            )
        try:
            free = shutil.disk_usage(self.tmp_dir).free
        except OSError:
            free = size_bytes  # unknown: the writes will tell
        if free < size_bytes:
            raise disk_full(self.tmp_dir, sha256, size_bytes)
        with self._lock:
            self._check_room(size_bytes, evict=False)
            push_id = next(self._push_ids)
            self._reserved[push_id] = size_bytes
        try:
            return PushWriter(self, push_id, sha256, name, size_bytes, fmt)
        except BaseException:
            self._release(push_id)
            raise

    def store(
        self, sha256: str, name: str, size_bytes: int, fmt: str, chunks: Iterable[bytes]
    ) -> CachedModel:
        """Writes a model from a stream of chunks; atomic; verifies size and digest."""
        writer = self.begin_push(sha256, name, size_bytes, fmt)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()
        finally:
            writer.abort()

    def delete(self, sha256: str) -> bool:
        """Removes a model; False when it was not held. Raises InUseError when pinned."""
        check_sha(sha256)
        with self._lock:
            if self._pins.get(sha256):
                raise InUseError(
                    f"model {sha256[:12]} is in use (queued, benchmarked or in an Infer); "
                    "delete it when that ends"
                )
            entry = self._index.pop(sha256, None)
            path = self.models_dir / sha256
            if path.exists():
                path.unlink()
            self._save_index()
            return entry is not None

    # -- internals -----------------------------------------------------------
    def _release(self, push_id: int) -> None:
        with self._lock:
            self._reserved.pop(push_id, None)

    def _check_room(self, incoming: int, evict: bool, push_id: int = 0) -> None:
        """Makes `incoming` bytes fit the quota, counting pushes in progress (other than
        `push_id`); evicts unpinned models, least recently used first, only when `evict`.
        Raises QuotaError when even evicting every unpinned model would not do. Lock held."""
        used = sum(m.size_bytes for m in self._index.values())
        pinned = sum(m.size_bytes for m in self._index.values() if self._pins.get(m.sha256))
        reserved = sum(b for pid, b in self._reserved.items() if pid != push_id)
        if pinned + reserved + incoming > self.quota_bytes:
            raise QuotaError(
                f"no room for {incoming} bytes: cache quota {self.quota_bytes} bytes, "
                f"{used} bytes used, {pinned} bytes pinned by models in use, "
                f"{reserved} bytes reserved by pushes in progress; nothing in use is evicted, "
                "try again when the benchmarks end"
            )
        if not evict:
            return
        for victim in sorted(self._index.values(), key=lambda m: m.used_unix):
            if used + reserved + incoming <= self.quota_bytes:
                break
            if self._pins.get(victim.sha256):
                continue
            (self.models_dir / victim.sha256).unlink(missing_ok=True)
            del self._index[victim.sha256]
            used -= victim.size_bytes

    def _load_index(self) -> dict[str, CachedModel]:
        try:
            raw = json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            raw = []
        index = {}
        for item in raw:
            try:
                entry = CachedModel(**item)
                check_sha(entry.sha256)
            except (TypeError, BadDigestError):
                continue
            if (self.models_dir / entry.sha256).is_file():
                entry.name = display_name(entry.name)
                index[entry.sha256] = entry
        return index

    def _save_index(self) -> None:
        tmp = self._index_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps([asdict(m) for m in self._index.values()]))
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self._index_path)


class PushWriter:
    """One push in progress: streams into a temporary file while hashing, holds its quota
    reservation, and moves the file into the cache only on commit(). Always call abort()
    after (a no-op once committed): it removes the temporary file and frees the reservation.
    write() and commit() may run in a worker thread; abort() may come from another."""

    def __init__(
        self, cache: ModelCache, push_id: int, sha256: str, name: str, size_bytes: int, fmt: str
    ) -> None:
        self._cache = cache
        self._push_id = push_id
        self.sha256 = sha256
        self.name = display_name(name)
        self.size_bytes = size_bytes
        self._fmt = fmt
        self._digest = hashlib.sha256()
        self._received = 0
        self._written_back = 0  # bytes whose writeback to disk has been started
        self._head = b""
        self._lock = threading.Lock()
        fd, self._tmp = tempfile.mkstemp(dir=cache.tmp_dir, prefix=TMP_PREFIX)
        os.fchmod(fd, 0o644)  # readable by children started as the --run-as user
        self._out: Optional[object] = os.fdopen(fd, "wb", buffering=0)
        self._done = False

    def write(self, chunk: bytes | memoryview) -> None:
        """Appends a chunk, starting the disk's writeback of each EVERY_BYTES written (see
        `writeback`); BadDigestError past the announced size; DiskFullError when the disk
        fills (the partial file is removed before it is raised)."""
        with self._lock:
            if self._out is None:
                raise CacheError("push already ended")
            self._received += len(chunk)
            if self._received > self.size_bytes:
                raise BadDigestError(f"received more than the announced {self.size_bytes} bytes")
            if len(self._head) < 16:
                self._head += chunk[: 16 - len(self._head)]
            self._digest.update(chunk)
            view = memoryview(chunk)
            try:
                while view:
                    view = view[self._out.write(view) :]
                if self._received - self._written_back >= writeback.EVERY_BYTES:
                    writeback.start_writeback(
                        self._out.fileno(), self._written_back, self._received - self._written_back
                    )
                    self._written_back = self._received
            except OSError as exc:
                raise self._failed(exc) from None

    def commit(self) -> CachedModel:
        """Verifies size, digest and format, then moves the model into place (evicting
        unpinned models if the quota needs it)."""
        cache = self._cache
        with self._lock:
            if self._out is None:
                raise CacheError("push already ended")
            try:
                os.fsync(self._out.fileno())
                self._out.close()
            except OSError as exc:
                raise self._failed(exc) from None
            self._out = None
            if self._received != self.size_bytes:
                raise BadDigestError(
                    f"received {self._received} bytes, announced {self.size_bytes}"
                )
            if self._digest.hexdigest() != self.sha256:
                raise BadDigestError(
                    f"sha256 mismatch: announced {self.sha256}, received {self._digest.hexdigest()}"
                )
            fmt = self._fmt or detect_format(self._head)
            if fmt not in FORMATS:
                raise CacheError(
                    f"not a model file edgeloop can run (expected one of {', '.join(FORMATS)})"
                )
            with cache._lock:
                cache._check_room(self.size_bytes, evict=True, push_id=self._push_id)
                os.replace(self._tmp, cache.models_dir / self.sha256)
                now = time.time()
                entry = CachedModel(self.sha256, self.name, self.size_bytes, fmt, now, now)
                cache._index[self.sha256] = entry
                try:
                    cache._save_index()
                except OSError as exc:  # not recorded: the model is not kept
                    del cache._index[self.sha256]
                    (cache.models_dir / self.sha256).unlink(missing_ok=True)
                    if exc.errno not in DISK_FULL:
                        raise
                    raise disk_full(cache.root, self.sha256, self.size_bytes) from None
                cache._reserved.pop(self._push_id, None)
                self._done = True
            return entry

    def _failed(self, exc: OSError) -> OSError:
        """After a write to the temporary file failed: closes and removes it (lock held), and
        returns the error to raise (DiskFullError when the disk is full)."""
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass  # the close of a file whose writes failed fails as well; it is removed
            self._out = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)
        if exc.errno in DISK_FULL:
            return disk_full(self._cache.tmp_dir, self.sha256, self.size_bytes)
        return exc

    def abort(self) -> None:
        """Ends the push: removes the temporary file and frees the reservation."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None
            if not self._done and os.path.exists(self._tmp):
                os.unlink(self._tmp)
            self._done = True
        self._cache._release(self._push_id)
