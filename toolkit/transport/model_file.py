"""Model files on the host: format from the extension and content, sha256 digest."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from device_agent.protocol.formats import detect_format
from toolkit.errors import ModelFileError

EXTENSIONS = {".tflite": "tflite", ".onnx": "onnx", ".pt2": "pt2", ".pte": "pte"}


def model_format(path: Path) -> str:
    """Returns "tflite", "onnx", "pt2" or "pte"; raises ModelFileError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ModelFileError(f"{path}: not a model file (expected .tflite, .onnx, .pt2 or .pte)")
    with path.open("rb") as f:
        head = f.read(16)
    sniffed = detect_format(head)
    if sniffed != fmt:
        raise ModelFileError(
            f"{path}: does not look like a {fmt} model (its first bytes do not match)"
        )
    return fmt


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (memoised on path, size and mtime)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
