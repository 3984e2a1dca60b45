"""Model files on the host: format from the extension and content, sha256 digest (computed
by `toolkit.hash_index`, which keeps a persistent index so an unchanged file is not re-read)."""

from __future__ import annotations

from pathlib import Path

from device_agent.protocol.formats import detect_format
from toolkit.errors import ModelFileError
from toolkit.hash_index import file_sha256

__all__ = ["EXTENSIONS", "file_sha256", "model_format"]

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
