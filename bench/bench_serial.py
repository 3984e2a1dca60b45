"""The serial path's overhead per inference, on the EMULATED DUT.

    python bench/bench_serial.py                       # tests' small CNN (int8), 3 bauds
    python bench/bench_serial.py --model m.tflite --runs 500 --bauds 115200,921600

For each baud and runs per `infer` command (1, 10), `runs` commands are sent to an emulated
DUT (`device_agent.serial_dut.emulator`, TFLite Micro on this CPU, on a pseudo-terminal); for
each command the host's round trip (write to ``m-ready``) and the DUT's own timer are read.
Overhead per inference = (round trip - DUT time) / runs per command.

A pseudo-terminal ignores the baud rate: bytes move at memory speed, so the measured overhead
is the software cost (host, pty, emulator's printing and parsing), not the wire. Beside it the
JSON gives the bytes per inference each way and the theoretical wire time at each baud (8N1:
10 bits a byte, command and reply one after the other), which on a real UART adds to it.
Writes bench/results/serial.json with the git commit and the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BAUDS = (115_200, 460_800, 921_600)
RUNS_PER_COMMAND = (1, 10)
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


def _small_model(folder: Path) -> Path:
    import torch

    from tests.model_files import build_tflite_int8, tiny_cnn

    return build_tflite_int8(tiny_cnn(), folder / "tiny_int8.tflite", torch.rand(16, 1, 8, 8))


def _summary(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms)
    return {
        "min_ms": float(a.min()),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def serial_overhead(
    model: Optional[Path] = None,
    bauds: tuple[int, ...] = BAUDS,
    runs: int = 200,
    runs_per_command: tuple[int, ...] = RUNS_PER_COMMAND,
    warmup: int = 10,
) -> dict[str, Any]:
    """Measures the serial path's overhead per inference on an emulated DUT.

    Args:
        model: an int8/float .tflite for the emulated DUT (default: the tests' small CNN).
        bauds: nominal baud rates to open the pty at (a pty ignores them; see module doc).
        runs: infer commands per (baud, runs per command).
        runs_per_command: N of each ``infer N 0`` command.
        warmup: untimed ``infer 1 0`` commands first.

    Returns:
        {"model", "input_bytes", "note", "rows": [{baud, runs_per_command, dut_ms,
        round_trip_ms, overhead_per_inference_ms, bytes_out_per_inference,
        bytes_in_per_inference, wire_ms_per_inference}]}
    """
    from device_agent.measure.inputs import benchmark_inputs
    from device_agent.serial_dut.emulator import READY_PREFIX
    from device_agent.serial_dut.model_io import input_bytes, tflite_io
    from device_agent.serial_dut.session import DutSession, DutTimeouts

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(model) if model else _small_model(Path(tmp))
        data = input_bytes(benchmark_inputs(tflite_io(str(model))[0]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "device_agent.serial_dut.emulator", "--model", str(model)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"the emulated DUT did not start: {line!r}")
            port = line[len(READY_PREFIX) :].strip()
            rows = []
            for baud in bauds:
                with DutSession.open(port, baud, DutTimeouts(reply_s=5.0)) as session:
                    session.load_input(data)
                    for _ in range(warmup):
                        session.infer(1, 0)
                    for n in runs_per_command:
                        rows.append(_measure(session, baud, n, runs))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()
    return {
        "model": model.name,
        "input_bytes": len(data),
        "note": "pty: the baud rate is nominal (bytes move at memory speed); overhead is the "
        "software cost; wire_ms_per_inference is what a real UART at that baud adds",
        "rows": rows,
    }


def _measure(session: Any, baud: int, n: int, runs: int) -> dict[str, Any]:
    dut, trip, overhead = [], [], []
    out = inn = 0
    for _ in range(runs):
        report = session.infer(n, 0)
        rt_ms = session.last.seconds * 1000.0
        dut_ms = report.elapsed_us / 1000.0
        dut.append(dut_ms / n)
        trip.append(rt_ms / n)
        overhead.append((rt_ms - dut_ms) / n)
        out += session.last.bytes_out
        inn += session.last.bytes_in
    per_out, per_in = out / runs / n, inn / runs / n
    return {
        "baud": baud,
        "runs_per_command": n,
        "dut_ms": _summary(dut),
        "round_trip_ms": _summary(trip),
        "overhead_per_inference_ms": _summary(overhead),
        "bytes_out_per_inference": per_out,
        "bytes_in_per_inference": per_in,
        "wire_ms_per_inference": (per_out + per_in) * BITS_PER_BYTE / baud * 1000.0,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a .tflite (default: the tests' small CNN)")
    parser.add_argument("--runs", type=int, default=200, help="infer commands per row")
    parser.add_argument("--bauds", default=",".join(map(str, BAUDS)))
    args = parser.parse_args(argv)
    from bench.common import write_results

    figures = serial_overhead(
        args.model, tuple(int(b) for b in args.bauds.split(",")), runs=args.runs
    )
    path = write_results("serial", figures)
    print(f"{figures['model']}, input {figures['input_bytes']} B; {figures['note']}")
    print(
        f"{'baud':>8} {'N':>3} {'DUT p50':>9} {'trip p50':>9} {'overhead p50 (min)':>19} "
        f"{'B out/in':>11} {'wire ms':>8}  per inference, ms"
    )
    for r in figures["rows"]:
        print(
            f"{r['baud']:>8} {r['runs_per_command']:>3} {r['dut_ms']['p50_ms']:>9.4f} "
            f"{r['round_trip_ms']['p50_ms']:>9.4f} "
            f"{r['overhead_per_inference_ms']['p50_ms']:>10.4f} "
            f"({r['overhead_per_inference_ms']['min_ms']:.4f}) "
            f"{r['bytes_out_per_inference']:>5.1f}/{r['bytes_in_per_inference']:<5.1f} "
            f"{r['wire_ms_per_inference']:>8.3f}"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
