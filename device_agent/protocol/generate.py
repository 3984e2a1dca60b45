"""Regenerates the protobuf and gRPC modules from edgeloop.proto.

Run from anywhere: ``python -m device_agent.protocol.generate``. Needs grpcio-tools
(a development dependency; devices never run this).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = Path(__file__).with_name("edgeloop.proto")
REPO_ROOT = PROTO.parents[2]


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Writes edgeloop_pb2.py and edgeloop_pb2_grpc.py under ``out_dir``/device_agent/protocol.

    Returns:
        The generated files.
    """
    from grpc_tools import protoc

    rel = PROTO.relative_to(REPO_ROOT)
    args = [
        "protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(rel),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {PROTO}")
    target = out_dir / rel.parent
    return [target / "edgeloop_pb2.py", target / "edgeloop_pb2_grpc.py"]


if __name__ == "__main__":
    for path in generate():
        print(path)
    sys.exit(0)
