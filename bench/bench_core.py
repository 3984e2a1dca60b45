"""Measuring-core benchmarks, side by side in one run: fidelity, overhead, push throughput.

    python bench/bench_core.py

- fidelity: the agent's median latency vs an in-process loop over the same runtime, model
  and threads (target: within 2%), and vs LiteRT's own benchmark_litert_model.py;
- overhead: wall time of a benchmark of an already-pushed small model minus its timed
  window (target: <= 150 ms);
- push: MB/s of a 64 MiB model over loopback vs a raw TCP copy to disk (target: >= 50%),
  and the time of a second push of the same model (target: <= 20 ms).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402

THREADS = 1


def build_model(folder: Path) -> Path:
    """A CNN with ~1-3 ms latency on one core, so percent differences mean something."""
    import litert_torch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    ).eval()
    path = folder / "bench_cnn.tflite"
    litert_torch.convert(model, (torch.randn(1, 3, 64, 64),)).export(str(path))
    return path


def in_process_median_ms(path: Path, warmup: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=THREADS)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    import numpy as np

    interp.set_tensor(
        detail["index"],
        np.random.default_rng(0).standard_normal(detail["shape"]).astype(np.float32),
    )
    for _ in range(warmup):
        interp.invoke()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        interp.invoke()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(samples)


def litert_tool_median_ms(path: Path, warmup: int, runs: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ai_edge_litert.tools.benchmark_litert_model",
                f"--model={path}",
                f"--num_runs={runs}",
                f"--warmup_runs={warmup}",
                f"--num_threads={THREADS}",
                f"--result_json={out}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not out.exists():
            print("LiteRT benchmark tool failed:", done.stderr[-400:])
            return None
        data = json.loads(out.read_text())
    median = data.get("latency", {}).get("median_ms")
    if median is None:
        print("LiteRT benchmark tool: no latency.median_ms in its JSON:", sorted(data))
    return median


def fidelity(client, path: Path) -> dict:
    from toolkit.measurement import BenchmarkOptions

    runs, warmup, rounds = 300, 30, 5
    options = BenchmarkOptions(
        threads=THREADS,
        warmup_runs=warmup,
        warmup_min_seconds=0.001,
        min_runs=runs,
        min_seconds=0.001,
        max_runs=runs,
    )
    agent, local = [], []
    for _ in range(rounds):  # interleaved, so drift hits both sides alike
        agent.append(client.benchmark(path, options).latency.p50_ms)
        local.append(in_process_median_ms(path, warmup, runs))
    tool = litert_tool_median_ms(path, warmup, runs)
    a, b = statistics.median(agent), statistics.median(local)
    return {
        "agent_p50_ms": a,
        "in_process_p50_ms": b,
        "ratio": a / b,
        "litert_tool_p50_ms": tool,
        "ratio_vs_litert_tool": (a / tool) if tool else None,
        "rounds": rounds,
        "runs": runs,
    }


def overhead(client, small: Path) -> dict:
    from toolkit.measurement import BenchmarkOptions

    client.push(small)
    options = BenchmarkOptions(
        warmup_runs=1, warmup_min_seconds=0.001, min_runs=20, min_seconds=0.001
    )
    values = []
    for _ in range(7):
        t0 = time.perf_counter()
        m = client.benchmark(small, options)
        values.append((time.perf_counter() - t0) * 1e3 - m.timed_window_s * 1e3)
    return {"overhead_ms_median": statistics.median(values), "overhead_ms_all": values}


def raw_tcp_mb_s(data_path: Path, dest: Path) -> float:
    size = data_path.stat().st_size
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def receive() -> None:
        conn, _ = server.accept()
        with conn, open(dest, "wb") as f:
            got = 0
            while got < size:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
            f.flush()
            os.fsync(f.fileno())
            conn.sendall(b"k")

    t = threading.Thread(target=receive)
    t.start()
    t0 = time.perf_counter()
    with socket.create_connection(server.getsockname()) as sock, open(data_path, "rb") as f:
        sock.sendfile(f)
        sock.recv(1)
    elapsed = time.perf_counter() - t0
    t.join()
    server.close()
    return size / 2**20 / elapsed


def push(client, folder: Path) -> dict:
    path = folder / "big.onnx"
    with open(path, "wb") as f:
        f.write(b"\x08")
        f.write(os.urandom(64 * 2**20 - 1))
    from toolkit.transport.model_file import file_sha256

    sha = file_sha256(path)
    raw = statistics.median(raw_tcp_mb_s(path, folder / "copy.bin") for _ in range(3))
    rates = []
    for _ in range(3):
        client.delete_model(sha)
        t0 = time.perf_counter()
        client.push(path)
        rates.append(64 / (time.perf_counter() - t0))
    again = []
    for _ in range(5):
        t0 = time.perf_counter()
        client.push(path)
        again.append((time.perf_counter() - t0) * 1e3)
    client.delete_model(sha)
    push_rate = statistics.median(rates)
    return {
        "push_mb_s": push_rate,
        "raw_tcp_mb_s": raw,
        "ratio": push_rate / raw,
        "second_push_ms": statistics.median(again),
    }


def main() -> None:
    from tests.model_files import build_tflite, tiny_cnn
    from toolkit.transport.local import local_agent

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_model(folder)
        small = build_tflite(tiny_cnn(), folder / "small.tflite")
        with local_agent(cache_dir=folder / "cache") as client:
            fid = fidelity(client, model)
            over = overhead(client, small)
            pushed = push(client, folder)
    rows = [
        (
            "fidelity: agent p50 / in-process p50",
            f"{fid['agent_p50_ms']:.3f} / {fid['in_process_p50_ms']:.3f} ms",
            f"{(fid['ratio'] - 1) * 100:+.2f}%",
            "within ±2%",
        ),
        (
            "fidelity: agent p50 / LiteRT tool p50",
            f"{fid['agent_p50_ms']:.3f} / {fid['litert_tool_p50_ms'] or float('nan'):.3f} ms",
            f"{((fid['ratio_vs_litert_tool'] or float('nan')) - 1) * 100:+.2f}%",
            "(reference)",
        ),
        ("overhead: wall − timed window", f"{over['overhead_ms_median']:.1f} ms", "", "≤ 150 ms"),
        (
            "push 64 MiB: gRPC / raw TCP",
            f"{pushed['push_mb_s']:.0f} / {pushed['raw_tcp_mb_s']:.0f} MB/s",
            f"{pushed['ratio']:.0%}",
            "≥ 50%",
        ),
        ("second push of the same model", f"{pushed['second_push_ms']:.1f} ms", "", "≤ 20 ms"),
    ]
    print_table(rows, ("benchmark", "measured", "ratio", "target"))
    path = write_results("core", {"fidelity": fid, "overhead": over, "push": pushed})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
