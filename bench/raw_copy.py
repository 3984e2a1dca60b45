"""The raw TCP copy a push is measured against: the sender `sendfile`s the file; the receiver
writes what it receives (sha256'ing it too, with `verify`), fsyncs, and answers one byte.

bench_core runs the receiver on a thread on loopback; push_link runs this file as a process
inside a network namespace: `python bench/raw_copy.py HOST DEST SIZE` prints its port, then
receives copies until killed. Standard library only, so it runs anywhere the agent does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

RECV_BYTES = 1 << 20


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


def serve(host: str, dest: str, size: int) -> None:
    """Prints the port it listens on, then receives one copy per connection, forever."""
    server = socket.socket()
    server.bind((host, 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        receive_file(conn, dest, size)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))
