"""Measuring-core benchmarks, side by side in one run: fidelity, overhead, push throughput.

    python bench/bench_core.py

Starts cold: a fresh temporary folder, a fresh local agent (library use) and, for the CLI row,
a fresh EDGELOOP_HOME whose long-lived local agent the first CLI call starts.

- fidelity: the agent's median latency vs an in-process loop over the same runtime, model
  and threads, 5 interleaved rounds (target: within ±1%), and vs LiteRT's own
  benchmark_litert_model.py (reference);
- overhead: wall time of a benchmark of an already-pushed small model minus its timed
  window, through the client (target: <= 50 ms); and for `edgeloop profile --json` of a
  cached model, where the CLI reuses its long-lived local agent, the wall time beyond the
  device's own benchmark (its benchmark process, spawn to exit: load, the 0.2 s minimum
  warm-up, the timed window) (target: <= 300 ms, issue 10's "the benchmark's own window +
  0.3 s", whose "4.5 s of wall time for a 1.2 s measurement" counts the warm-up in the
  measurement); wall minus the timed window alone is reported beside it;
- push: MB/s of a 64 MiB model over loopback vs a raw TCP copy to disk, both fsync'd, in
  5 interleaved rounds, the median of the rounds' ratios (target: >= 70%), and the time
  of a second push of the same model (target: <= 20 ms); for reference, the push against
  a raw TCP copy whose receiver also sha256s the bytes (the check no push may skip);
- link (needs root; skipped with the reason otherwise): the same 64 MiB push and raw copy
  over a veth pair limited to 1 Gbit/s each way, the agent in its own network namespace
  with TLS and a token (bench/push_link.py), for reference.

Prints a table with met/missed per target and writes bench/results/core.json.
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
from bench.push_link import LINK_RATE  # noqa: E402
from bench.raw_copy import receive_file, send_file_mb_s  # noqa: E402

THREADS = 1
TARGETS = {  # figure -> (bound, "within" | "max" | "min")
    "fidelity_pct": (1.0, "within"),
    "overhead_ms": (50.0, "max"),
    "cli_host_ms": (300.0, "max"),
    "push_ratio": (0.70, "min"),
    "second_push_ms": (20.0, "max"),
}


def met(name: str, value: float | None) -> bool | None:
    """Whether a figure meets its target (None when it was not measured)."""
    if value is None:
        return None
    bound, kind = TARGETS[name]
    if kind == "within":
        return abs(value) <= bound
    return value <= bound if kind == "max" else value >= bound


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
        "agent_p50_ms_all": agent,
        "in_process_p50_ms_all": local,
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
        values.append((time.perf_counter() - t0) * 1e3 - m.latency.timed_window_s * 1e3)
    return {"overhead_ms_median": statistics.median(values), "overhead_ms_all": values}


def edgeloop_script() -> str:
    """The `edgeloop` console script of this Python (beside its interpreter), as a venv or
    pip install has it; not a version manager's shim in front of it (pyenv's shim, a bash
    script that runs `pyenv exec`, adds 0.1-0.3 s here that is not edgeloop's)."""
    beside = Path(sys.executable).parent / "edgeloop"
    return str(beside) if beside.exists() else "edgeloop"


def cli_overhead(small: Path, home: Path) -> dict:
    """`edgeloop profile --json` of a cached model: wall time minus the timed window.

    The first call starts the CLI's long-lived local agent in a fresh EDGELOOP_HOME (its wall
    time is reported apart); the next five reuse it. The agent is stopped at the end.
    """
    env = dict(os.environ, EDGELOOP_HOME=str(home))
    command = [
        edgeloop_script(),
        "profile",
        str(small),
        "--runs",
        "20",
        "--warmup",
        "1",
        "--min-seconds",
        "0.001",
        "--json",
    ]

    def once() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"edgeloop profile failed: {done.stderr[-400:]}")
        data = json.loads(done.stdout)
        return wall, _window_s(data), float(data.get("wall_s") or 0.0)

    try:
        first_wall, first_window, _ = once()
        values, host = [], []
        for _ in range(5):
            wall, window, device_wall = once()
            values.append((wall - window) * 1e3)
            host.append((wall - device_wall) * 1e3)
    finally:
        subprocess.run(
            [edgeloop_script(), "agent", "stop"], env=env, capture_output=True, timeout=60
        )
    return {
        "cli_overhead_ms_median": statistics.median(values),
        "cli_overhead_ms_all": values,
        # beyond the benchmark process's own wall time on the device (load, warm-up and the
        # timed runs excluded): what the CLI, the connection and the agent add
        "cli_host_ms_median": statistics.median(host),
        "cli_host_ms_all": host,
        "first_call_overhead_ms": (first_wall - first_window) * 1e3,
        "command": command[0],
    }


def _window_s(data: dict) -> float:
    """The timed window (s) in `edgeloop profile --json` output, wherever its layout puts it."""
    if isinstance(data, list):
        data = data[0]
    for key in ("timed_window_s",):
        if key in data:
            return float(data[key])
    for value in data.values():
        if isinstance(value, dict) and "timed_window_s" in value:
            return float(value["timed_window_s"])
    raise KeyError(f"no timed_window_s in edgeloop profile --json output: {sorted(data)}")


def raw_tcp_mb_s(data_path: Path, dest: Path, verify: bool = False) -> float:
    """MB/s of a raw TCP copy of `data_path` (sendfile) into `dest`, written and fsync'd;
    with `verify`, the receiver also sha256s what it receives, as the agent must."""
    size = data_path.stat().st_size
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def receive() -> None:
        conn, _ = server.accept()
        receive_file(conn, dest, size, verify)

    t = threading.Thread(target=receive)
    t.start()
    rate = send_file_mb_s(server.getsockname(), data_path)
    t.join()
    server.close()
    return rate


def push(client, folder: Path, rounds: int = 5) -> dict:
    """A 64 MiB push against a raw TCP copy of the same file, interleaved round by round so
    both see the same load (the machine is shared); the ratio is the median of the rounds'."""
    path = folder / "big.onnx"
    with open(path, "wb") as f:
        f.write(b"\x08")
        f.write(os.urandom(64 * 2**20 - 1))
    from toolkit.transport.model_file import file_sha256

    sha = file_sha256(path)
    raws, hashed, rates, ratios, host_cpu = [], [], [], [], []
    for _ in range(rounds):
        raw = raw_tcp_mb_s(path, folder / "copy.bin")
        hashed.append(raw_tcp_mb_s(path, folder / "copy.bin", verify=True))
        client.delete_model(sha)
        t0, c0 = time.perf_counter(), time.process_time()
        client.push(path)
        rate = 64 / (time.perf_counter() - t0)
        host_cpu.append((time.process_time() - c0) * 1e3)
        raws.append(raw)
        rates.append(rate)
        ratios.append(rate / raw)
    again = []
    for _ in range(5):
        t0 = time.perf_counter()
        client.push(path)
        again.append((time.perf_counter() - t0) * 1e3)
    client.delete_model(sha)
    return {
        "push_mb_s": statistics.median(rates),
        "raw_tcp_mb_s": statistics.median(raws),
        "ratio": statistics.median(ratios),
        "ratio_all": ratios,
        "push_mb_s_all": rates,
        "raw_tcp_mb_s_all": raws,
        # reference: a raw TCP copy whose receiver also sha256s the bytes (the check a push
        # cannot skip), and the push's MB/s against it
        "raw_tcp_sha256_mb_s": statistics.median(hashed),
        "ratio_to_raw_tcp_sha256": statistics.median(rates) / statistics.median(hashed),
        "rounds": rounds,
        "second_push_ms": statistics.median(again),
        # CPU time of this process (the client; the agent is another process) per push
        "host_cpu_ms_per_push": statistics.median(host_cpu),
    }


def push_link_part(folder: Path) -> dict:
    """The 64 MiB push over a rate-limited link (bench/push_link.py), or why it was skipped."""
    from bench.push_link import push_over_link, skip_reason

    nan = float("nan")
    reason = skip_reason()
    if reason:
        return {"push_mb_s": nan, "raw_tcp_mb_s": nan, "ratio": nan, "skipped": reason}
    path = folder / "link.onnx"
    with open(path, "wb") as f:
        f.write(b"\x08")
        f.write(os.urandom(64 * 2**20 - 1))
    return push_over_link(path, folder)


PARTS = ("fidelity", "overhead", "push", "cli", "link")


def parse_args(argv: list[str] | None = None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all); the others are "
        "reported as not measured",
    )
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; expected some of {list(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from tests.model_files import build_tflite, tiny_cnn
    from toolkit.transport.local import local_agent

    parts = parse_args(argv).parts
    nan = float("nan")
    fid = {
        "agent_p50_ms": nan,
        "in_process_p50_ms": nan,
        "ratio": nan,
        "litert_tool_p50_ms": None,
        "ratio_vs_litert_tool": None,
    }
    over = {"overhead_ms_median": None}
    pushed = {
        "push_mb_s": nan,
        "raw_tcp_mb_s": nan,
        "ratio": None,
        "second_push_ms": None,
        "raw_tcp_sha256_mb_s": nan,
        "ratio_to_raw_tcp_sha256": nan,
    }
    linked = {"push_mb_s": nan, "raw_tcp_mb_s": nan, "ratio": nan, "skipped": "not asked"}
    cli = {
        "cli_overhead_ms_median": None,
        "cli_host_ms_median": None,
        "first_call_overhead_ms": nan,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small = build_tflite(tiny_cnn(), folder / "small.tflite")
        if {"fidelity", "overhead", "push"} & set(parts):
            with local_agent(cache_dir=folder / "cache") as client:
                if "fidelity" in parts:
                    fid = fidelity(client, build_model(folder))
                if "overhead" in parts:
                    over = overhead(client, small)
                if "push" in parts:
                    pushed = push(client, folder)
        if "cli" in parts:
            cli = cli_overhead(small, folder / "home")
        if "link" in parts:
            linked = push_link_part(folder)
    tool_pct = ((fid["ratio_vs_litert_tool"] or nan) - 1) * 100
    figures = {
        "fidelity_pct": (fid["ratio"] - 1) * 100 if "fidelity" in parts else None,
        "overhead_ms": over["overhead_ms_median"],
        "cli_overhead_ms": cli["cli_overhead_ms_median"],
        "cli_host_ms": cli["cli_host_ms_median"],
        "push_ratio": pushed["ratio"],
        "second_push_ms": pushed["second_push_ms"],
    }
    checks = {name: met(name, value) for name, value in figures.items() if name in TARGETS}
    shown_nan = {k: (nan if v is None else v) for k, v in figures.items()}

    def verdict(name: str) -> str:
        if checks[name] is None:
            return "not measured"
        bound, kind = TARGETS[name]
        shown = {
            "within": f"within ±{bound:g}%",
            "max": f"≤ {bound:g} ms",
            "min": f"≥ {bound:.0%}",
        }[kind]
        return f"{shown}: {'met' if checks[name] else 'MISSED'}"

    rows = [
        (
            "fidelity: agent p50 / in-process p50",
            f"{fid['agent_p50_ms']:.3f} / {fid['in_process_p50_ms']:.3f} ms",
            f"{shown_nan['fidelity_pct']:+.2f}%",
            verdict("fidelity_pct"),
        ),
        (
            "fidelity: agent p50 / LiteRT tool p50",
            f"{fid['agent_p50_ms']:.3f} / {fid['litert_tool_p50_ms'] or nan:.3f} ms",
            f"{tool_pct:+.2f}%",
            "(reference)",
        ),
        (
            "overhead (client): wall − timed window",
            f"{shown_nan['overhead_ms']:.1f} ms",
            "",
            verdict("overhead_ms"),
        ),
        (
            "overhead (CLI profile, agent reused): wall − device's benchmark",
            f"{shown_nan['cli_host_ms']:.0f} ms",
            f"− timed window alone {shown_nan['cli_overhead_ms']:.0f} ms; "
            f"first call {cli['first_call_overhead_ms']:.0f} ms",
            verdict("cli_host_ms"),
        ),
        (
            "push 64 MiB: gRPC / raw TCP",
            f"{pushed['push_mb_s']:.0f} / {pushed['raw_tcp_mb_s']:.0f} MB/s",
            f"{pushed['ratio'] or nan:.0%}",
            verdict("push_ratio"),
        ),
        (
            "  reference: push / raw TCP that also sha256s what it receives",
            f"{pushed['push_mb_s']:.0f} / {pushed['raw_tcp_sha256_mb_s']:.0f} MB/s",
            f"{pushed['ratio_to_raw_tcp_sha256']:.0%}",
            "(reference)",
        ),
        (
            f"push 64 MiB over a {LINK_RATE} link (TLS + token): gRPC / raw TCP",
            f"{linked['push_mb_s']:.0f} / {linked['raw_tcp_mb_s']:.0f} MB/s",
            f"{linked['ratio']:.0%}",
            f"(reference) {linked['skipped']}" if linked.get("skipped") else "(reference)",
        ),
        (
            "second push of the same model",
            f"{pushed['second_push_ms'] or nan:.1f} ms",
            "",
            verdict("second_push_ms"),
        ),
    ]
    print_table(rows, ("benchmark", "measured", "ratio", "target"))
    path = write_results(
        "core",
        {
            "figures": figures,
            "met": checks,
            "targets": {k: {"bound": b, "kind": kind} for k, (b, kind) in TARGETS.items()},
            "fidelity": fid,
            "overhead": over,
            "cli_overhead": cli,
            "push": pushed,
            "push_link": linked,
            "parts": parts,
        },
    )
    print(f"\nwrote {path}")
    return 0 if all(v is not False for v in checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
