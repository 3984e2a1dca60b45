"""One push as a user's `edgeloop profile` does it, in a process of its own: connect to the
agent (GetInfo), then `DeviceClient.push` — the file's format, its sha256 through the hash
index under EDGELOOP_HOME (read from the file where the index does not hold it), HasModel,
and the stream. Prints one JSON line: the push's seconds (connect excluded) and this
process's CPU milliseconds during it.

    python bench/push_once.py ADDRESS PATH
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(address: str, path: str) -> None:
    from toolkit.transport.grpc_client import DeviceClient

    client = DeviceClient(address, name="bench")
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        sha256 = client.push(Path(path))
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    finally:
        client.close()
    print(json.dumps({"seconds": seconds, "cpu_ms": cpu_s * 1e3, "sha256": sha256}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: push_once.py ADDRESS PATH")
    main(sys.argv[1], sys.argv[2])
