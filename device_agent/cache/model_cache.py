"""Content-addressed model store on the device.

Files live at `<root>/models/<sha256>`: the hex digest is the only thing that ever becomes
a path, and it is checked to be 64 hex characters first. A push streams into a temporary
file while hashing, is refused past the size limit, and is renamed into place only when
the digest matches. When the quota would be exceeded, least recently used models go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from device_agent.protocol.formats import detect_format

SHA256 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("tflite", "onnx", "pt2")


class CacheError(Exception):
    """A push or lookup the cache refuses; the message says why."""


class BadDigestError(CacheError, ValueError):
    """The sha256 is malformed or does not match the bytes received."""


class TooLargeError(CacheError):
    """The model exceeds the size limit or cannot fit in the quota."""


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

    # -- changes -------------------------------------------------------------
    def store(
        self, sha256: str, name: str, size_bytes: int, fmt: str, chunks: Iterable[bytes]
    ) -> CachedModel:
        """Writes a model from a stream of chunks; atomic; verifies size and digest."""
        check_sha(sha256)
        if size_bytes <= 0:
            raise TooLargeError(f"model size must be positive, got {size_bytes}")
        if size_bytes > self.max_model_bytes:
            raise TooLargeError(
                f"model is {size_bytes} bytes; "
                f"this agent accepts at most {self.max_model_bytes} bytes"
            )
        if size_bytes > self.quota_bytes:
            raise TooLargeError(
                f"model is {size_bytes} bytes; the cache quota is {self.quota_bytes} bytes"
            )
        digest = hashlib.sha256()
        received = 0
        head = b""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="push-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:  # chunks are large: no extra copy
                for chunk in chunks:
                    received += len(chunk)
                    if received > size_bytes:
                        raise TooLargeError(f"received more than the announced {size_bytes} bytes")
                    if len(head) < 16:
                        head += chunk[:16]
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[out.write(view) :]
                os.fsync(out.fileno())
            if received != size_bytes:
                raise BadDigestError(f"received {received} bytes, announced {size_bytes}")
            if digest.hexdigest() != sha256:
                raise BadDigestError(
                    f"sha256 mismatch: announced {sha256}, received {digest.hexdigest()}"
                )
            fmt = fmt or detect_format(head)
            if fmt not in FORMATS:
                raise CacheError(
                    f"not a model file edgeloop can run (expected one of {', '.join(FORMATS)})"
                )
            with self._lock:
                self._make_room(size_bytes)
                os.replace(tmp_name, self.models_dir / sha256)
                now = time.time()
                entry = CachedModel(sha256, name[:200], size_bytes, fmt, now, now)
                self._index[sha256] = entry
                self._save_index()
            return entry
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    def delete(self, sha256: str) -> bool:
        check_sha(sha256)
        with self._lock:
            entry = self._index.pop(sha256, None)
            path = self.models_dir / sha256
            if path.exists():
                path.unlink()
            self._save_index()
            return entry is not None

    # -- internals -----------------------------------------------------------
    def _make_room(self, incoming: int) -> None:
        used = sum(m.size_bytes for m in self._index.values())
        for victim in sorted(self._index.values(), key=lambda m: m.used_unix):
            if used + incoming <= self.quota_bytes:
                break
            (self.models_dir / victim.sha256).unlink(missing_ok=True)
            del self._index[victim.sha256]
            used -= victim.size_bytes
        if used + incoming > self.quota_bytes:
            raise TooLargeError(
                f"no room: {used + incoming} bytes needed, quota {self.quota_bytes}"
            )

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
                index[entry.sha256] = entry
        return index

    def _save_index(self) -> None:
        tmp = self._index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(m) for m in self._index.values()]))
        os.replace(tmp, self._index_path)
