"""Model formats on the wire: names, enum values, and recognition from a file's first bytes."""

from __future__ import annotations

from device_agent.protocol import edgeloop_pb2 as pb

FORMAT_TO_PB = {
    "tflite": pb.MODEL_FORMAT_TFLITE,
    "onnx": pb.MODEL_FORMAT_ONNX,
    "pt2": pb.MODEL_FORMAT_PT2,
    "pte": pb.MODEL_FORMAT_PTE,
}
PB_TO_FORMAT = {v: k for k, v in FORMAT_TO_PB.items()}


def detect_format(head: bytes) -> str:
    """Guesses the model format from its first 16 bytes ("" when unknown)."""
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit():
        return "pte"  # ExecuTorch flatbuffer, file identifier "ET" + schema version ("ET12")
    if head[:2] == b"PK":
        return "pt2"  # torch.export archives are zip files
    if head[:1] == b"\x08":
        return "onnx"  # ModelProto starts with field 1 (ir_version), a varint
    return ""
