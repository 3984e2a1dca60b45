"""Regenerates the protobuf and gRPC modules from edgeloop.proto.

Run from anywhere: ``python -m device_agent.protocol.generate``. Needs grpcio-tools
(a development dependency; devices never run this).
"""

from __future__ import annotations

import re
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


# What a generator release stamps into its output, apart from the contract: the protobuf and
# grpcio versions it was made with (each a minimum the runtime checks). The check that the
# committed code is fresh compares the rest, so a new patch release of grpcio-tools does not
# fail it while any change to the .proto does.
_GENERATOR_STAMPS = (
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,[\s\d,]*"),
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
)


def contract_of(source: str) -> str:
    """Generated source with the generator's version stamps masked (see ``_GENERATOR_STAMPS``)."""
    for stamp in _GENERATOR_STAMPS:
        source = stamp.sub("<generator version>", source)
    return source


if __name__ == "__main__":
    for path in generate():
        print(path)
    sys.exit(0)
