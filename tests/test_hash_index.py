"""The persistent sha256 index (`toolkit.hash_index`): a second process takes an unchanged
file's digest from it without reading the file, any change to the file is hashed again, a
corrupt index or row is rebuilt rather than trusted, concurrent processes share one index,
and it stays bounded.

Proof that a process did not read the file is the kernel's own count of bytes it read
(`rchar` in /proc/self/io), beside the index's `from_index`; nothing is timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.hash_index import INDEX_NAME, RACY_WINDOW_NS, HashIndex

SIZE = 8 * 2**20

PROBE = """
import json, sys
from toolkit.hash_index import file_digest

def rchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

out = []
for path in sys.argv[1:]:
    before = rchar()
    found = file_digest(path)
    out.append({"sha256": found.sha256, "from_index": found.from_index,
                "read_bytes": rchar() - before})
print(json.dumps(out))
"""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_random(path: Path, size: int = SIZE) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def wait_until_settled(*paths: Path) -> None:
    """Waits until each file's last change is older than the index's racy window (a file
    changed just now is hashed but not recorded; see `test_a_file_changed_just_now_...`)."""
    newest = max(p.stat().st_ctime_ns for p in paths)
    while time.time_ns() <= newest + RACY_WINDOW_NS + 50_000_000:
        time.sleep(0.05)


def in_fresh_process(home: Path, *paths: Path) -> list[dict]:
    """`file_digest` of each path in a new Python process whose EDGELOOP_HOME is `home`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        env={**os.environ, "EDGELOOP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module", autouse=True)
def proc_io_readable() -> None:
    if not Path("/proc/self/io").exists():
        pytest.skip("/proc/self/io is not available: no kernel count of the bytes a process read")


def test_a_second_process_does_not_read_an_unchanged_file_again(tmp_path: Path) -> None:
    home, model = tmp_path / "home", write_random(tmp_path / "model.onnx")
    wait_until_settled(model)
    truth = sha256_of(model)

    (first,) = in_fresh_process(home, model)
    assert first == {**first, "sha256": truth, "from_index": False}
    assert first["read_bytes"] >= SIZE

    (second,) = in_fresh_process(home, model)
    assert second["sha256"] == truth and second["from_index"] is True
    assert second["read_bytes"] < SIZE // 8  # the index's pages, not the file
    assert HashIndex(home / INDEX_NAME).indexed(model) == truth  # the row is there

    st = model.stat()  # a new mtime: read again, same bytes, same digest
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    (third,) = in_fresh_process(home, model)
    assert third["sha256"] == truth and third["from_index"] is False
    assert third["read_bytes"] >= SIZE

    with model.open("ab") as f:  # a new size: read again, a new digest
        f.write(b"\0")
    (fourth,) = in_fresh_process(home, model)
    assert fourth["sha256"] == sha256_of(model) != truth
    assert fourth["from_index"] is False


def test_same_size_and_mtime_but_another_inode_or_ctime_is_hashed_again(tmp_path: Path) -> None:
    index = HashIndex(tmp_path / INDEX_NAME)
    replaced = write_random(tmp_path / "replaced.tflite")
    rewritten = write_random(tmp_path / "rewritten.tflite")
    wait_until_settled(replaced, rewritten)
    for path in (replaced, rewritten):
        assert index.digest(path).from_index is False
        assert index.digest(path).from_index is True

    # another file moved over the path, given the same size and mtime: a new inode and ctime
    before = replaced.stat()
    other = write_random(tmp_path / "other.tflite")
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, replaced)
    after = replaced.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    found = index.digest(replaced)
    assert found.from_index is False and found.sha256 == sha256_of(replaced)

    # the same inode rewritten in place with the same size, its mtime set back: a new ctime
    before = rewritten.stat()  # changed over 2 s ago: the write below moves its ctime
    with rewritten.open("r+b") as f:
        f.write(os.urandom(4096))
    os.utime(rewritten, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = rewritten.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    found = index.digest(rewritten)
    assert found.from_index is False and found.sha256 == sha256_of(rewritten)


def test_a_corrupt_index_is_rebuilt_and_not_trusted(tmp_path: Path) -> None:
    home, model = tmp_path / "home", write_random(tmp_path / "model.onnx", 2**20)
    wait_until_settled(model)
    truth = sha256_of(model)
    in_fresh_process(home, model)
    index_file = home / INDEX_NAME
    index_file.write_bytes(b"not an index " * 4096)  # a damaged file, not a database

    (after,) = in_fresh_process(home, model)
    assert after["sha256"] == truth and after["from_index"] is False
    with sqlite3.connect(index_file) as conn:  # a sound database again, holding the row
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (again,) = in_fresh_process(home, model)
    assert again["sha256"] == truth and again["from_index"] is True


def test_a_row_that_does_not_match_its_check_is_not_used(tmp_path: Path) -> None:
    index, model = HashIndex(tmp_path / INDEX_NAME), write_random(tmp_path / "m.onnx", 2**20)
    wait_until_settled(model)
    truth = index.digest(model).sha256
    with sqlite3.connect(index.path) as conn:  # a row edited behind the index's back
        conn.execute("UPDATE files SET sha256 = ?", ("0" * 64,))
    assert index.indexed(model) is None
    found = index.digest(model)
    assert found.sha256 == truth and found.from_index is False
    assert index.indexed(model) == truth  # the row is written again, right


def test_concurrent_processes_share_one_index(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = [write_random(tmp_path / f"m{i}.onnx", 64 * 1024) for i in range(40)]
    wait_until_settled(*files)
    truth = [sha256_of(p) for p in files]
    env = {**os.environ, "EDGELOOP_HOME": str(home)}
    procs = [  # each process its own order, all at once, on one (not yet made) index
        subprocess.Popen([sys.executable, "-c", PROBE, *map(str, files[k:] + files[:k])],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (0, 10, 20, 30)
    ]
    for k, proc in zip((0, 10, 20, 30), procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert [r["sha256"] for r in json.loads(out)] == truth[k:] + truth[:k]
    with sqlite3.connect(home / INDEX_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    index = HashIndex(home / INDEX_NAME)
    assert [index.indexed(p) for p in files] == truth


def test_the_index_is_bounded_and_keeps_the_recent(tmp_path: Path) -> None:
    index = HashIndex(tmp_path / INDEX_NAME, max_rows=10)
    files = [write_random(tmp_path / f"m{i}.onnx", 1024) for i in range(25)]
    wait_until_settled(*files)
    for path in files:
        index.digest(path)
    with sqlite3.connect(index.path) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM files").fetchone()
    assert 0 < rows <= 10
    assert index.indexed(files[-1]) == sha256_of(files[-1])
    assert index.indexed(files[0]) is None


def test_a_file_changed_just_now_is_hashed_but_not_recorded(tmp_path: Path) -> None:
    index, model = HashIndex(tmp_path / INDEX_NAME), write_random(tmp_path / "new.onnx", 2**20)
    found = index.digest(model)
    assert found.sha256 == sha256_of(model) and found.from_index is False
    assert index.indexed(model) is None  # a write in the same clock tick could go unseen


def test_without_a_usable_index_files_are_still_hashed(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model = write_random(tmp_path / "m.onnx", 2**20)
    wait_until_settled(model)
    index = HashIndex(blocker / INDEX_NAME)  # cannot be made: its folder is a file
    for _ in range(2):
        found = index.digest(model)
        assert found.sha256 == sha256_of(model) and found.from_index is False
