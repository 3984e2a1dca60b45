"""The raw TCP copy a push is measured against: the sender `sendfile`s the file; the receiver
writes what it receives (sha256'ing it too, with `verify`), fsyncs, and answers one byte.

Both ends run as processes of their own, as a push's client and agent do:

    python bench/raw_copy.py serve HOST DEST SIZE [--verify]   # prints its port, then
                                                                # receives copies until killed
    python bench/raw_copy.py send HOST PORT PATH                # one copy; prints its MB/s

bench_core runs both on loopback, a fresh sender process per round; push_link runs the
receiver inside a network namespace. Standard library only, so it runs anywhere the agent does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

RECV_BYTES = 1 << 20
USAGE = ("usage: raw_copy.py serve HOST DEST SIZE [--verify]\n"
         "       raw_copy.py send HOST PORT PATH")


def receive_file(conn: socket.socket, dest: Path | str, size: int, verify: bool = False) -> None:
    """Receives `size` bytes from `conn` into `dest`, fsyncs it, and answers b"k"."""
    digest = hashlib.sha256()
    with conn, open(dest, "wb") as f:
        got = 0
        while got < size:
            chunk = conn.recv(RECV_BYTES)
            if not chunk:
                break
            if verify:
                digest.update(chunk)
            f.write(chunk)
            got += len(chunk)
        f.flush()
        os.fsync(f.fileno())
        conn.sendall(b"k")


def send_file_mb_s(address: tuple[str, int], path: Path) -> float:
    """Sends `path` to a receiver at `address`; MB/s from connect to the receiver's answer."""
    t0 = time.perf_counter()
    with socket.create_connection(address) as sock, open(path, "rb") as f:
        sock.sendfile(f)
        sock.recv(1)
    elapsed = time.perf_counter() - t0
    return path.stat().st_size / 2**20 / elapsed


def serve(host: str, dest: str, size: int, verify: bool = False) -> None:
    """Prints the port it listens on, then receives one copy per connection, forever."""
    server = socket.socket()
    server.bind((host, 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        receive_file(conn, dest, size, verify)


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"] and len(argv) in (4, 5) and argv[4:] in ([], ["--verify"]):
        serve(argv[1], argv[2], int(argv[3]), verify=argv[4:] == ["--verify"])
    elif argv[:1] == ["send"] and len(argv) == 4:
        print(send_file_mb_s((argv[1], int(argv[2])), Path(argv[3])), flush=True)
    else:
        raise SystemExit(USAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
