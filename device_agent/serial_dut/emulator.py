"""An EMULATED DUT: a stand-in microcontroller that speaks the MLPerf Tiny DUT protocol on a
pseudo-terminal and runs a .tflite model with TFLite Micro on this machine's CPU.

It proves the protocol path (handshake, chunked input upload, infer, results, the DUT's own
timer, faults), not a microcontroller's speed: its timings are this CPU's. ::

    python -m device_agent.serial_dut.emulator --model m.tflite
    # prints: emulated-dut listening on /dev/pts/7

The input buffer holds the model inputs' own bytes, in order (int8 for an int8 model, float32
little-endian for a float model). Faults for tests: ``--garble-once COMMAND`` (noise on one
line of that command's first reply), ``--silent-after N`` (answers N commands, then reads and
never answers), ``--other-protocol`` (answers like an AT modem, never ``m-ready``).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
import tty
from typing import Optional

import numpy as np

from device_agent.serial_dut.model_io import tflite_io

READY_PREFIX = "emulated-dut listening on "
VENDOR = "edgeloop-emulator"
FIRMWARE = "edgeloop emulated DUT 1 (MLPerf Tiny DUT protocol, TFLite Micro on the host CPU)"
MAX_COMMAND_CHARS = 80  # as the reference firmware: a longer command is cut
MAX_BUFFER_BYTES = 1 << 20
GARBLED_LINE = {
    "name": "m-name",
    "profile": "m-profile",
    "infer": "m-lap-us",
    "results": "m-results",
    "db": "m-",
}  # --garble-once: the line that gets noise


class EmulatedDut:
    """The firmware's command loop, on the master side of a pty.

    Args:
        model_path: the .tflite the "firmware" runs (TFLite Micro).
        arena_bytes: TFLite Micro arena.
        garble_once: a command name whose first reply gets one line of noise ("" = none).
        silent_after: answer this many commands, then none (-1: always answer).
        other_protocol: answer every command like an AT modem instead.
    """

    def __init__(
        self,
        model_path: str,
        arena_bytes: int = 1 << 20,
        garble_once: str = "",
        silent_after: int = -1,
        other_protocol: bool = False,
    ) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self.model_path = model_path
        self.interp = runtime.Interpreter.from_file(model_path, arena_size=arena_bytes)
        ins, outs = tflite_io(model_path)
        self.inputs = [self.interp.get_input_details(i) for i in range(len(ins))]
        self.outputs = [self.interp.get_output_details(i) for i in range(len(outs))]
        self.input_bytes = sum(_nbytes(d) for d in self.inputs)
        self.buffer = bytearray()
        self.expected = 0
        self.garble_once = garble_once
        self.silent_after = silent_after
        self.other_protocol = other_protocol
        self.answered = 0
        self.garble_now = ""
        self.arrays: list[np.ndarray] = []
        self.t0 = time.perf_counter_ns()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no newline translation: a plain byte pipe
        self.slave_path = os.ttyname(self.slave)

    # -- output --------------------------------------------------------------
    def _write(self, text: str) -> None:
        data = text.encode("ascii")
        while data:
            _, ready, _ = select.select([], [self.master], [], 1.0)
            if ready:
                data = data[os.write(self.master, data) :]

    def _line(self, text: str) -> None:
        if self.garble_now and text.startswith(self.garble_now):
            self.garble_now = ""
            self._write_raw(b"m-\xff\xfe" + text[2:].encode("ascii")[::-1] + b"\r\n")
            return
        self._write(text + "\r\n")

    def _write_raw(self, data: bytes) -> None:
        while data:
            _, ready, _ = select.select([], [self.master], [], 1.0)
            if ready:
                data = data[os.write(self.master, data) :]

    def _lap(self) -> None:
        """The DUT's own timer: microseconds since start, as an unsigned 32-bit counter."""
        self._line(f"m-lap-us-{((time.perf_counter_ns() - self.t0) // 1000) % 2**32}")

    # -- commands --------------------------------------------------------------
    def handle(self, command: str) -> None:
        words = command.split()
        if self.silent_after >= 0 and self.answered >= self.silent_after:
            return
        self.answered += 1
        if self.other_protocol:
            self._write("\r\nERROR\r\n")
            return
        self.garble_now = ""
        if words and words[0] == self.garble_once:  # noise on the line that carries the data
            self.garble_now, self.garble_once = GARBLED_LINE.get(words[0], "m-"), ""
        if not words:
            self._line("e-[Unknown command: ]")
        elif words[0] == "name":
            self._line(f"m-name-dut-[{VENDOR}]")
        elif words[0] == "profile":
            self._line(f"m-profile-[{FIRMWARE}]")
            self._line(f"m-model-[{os.path.basename(self.model_path)}]")
        elif words[0] == "db":
            self._db(words[1:])
        elif words[0] == "infer":
            self._infer(words[1:])
        elif words[0] == "results":
            self._results()
        else:
            self._line(f"e-[Unknown command: {words[0]}]")
        self.garble_now = ""
        self._write("m-ready\r\n")

    def _db(self, args: list[str]) -> None:
        if not args:
            self._line("e-[Command 'db' requires a subcommand]")
        elif args[0] == "load":
            if len(args) < 2 or not args[1].isdigit() or int(args[1]) == 0:
                self._line("e-[Command 'db load' must be >0 bytes]")
            elif int(args[1]) > MAX_BUFFER_BYTES:
                self._line(f"e-[Buffer of {args[1]} bytes exceeds {MAX_BUFFER_BYTES}]")
            else:
                self.expected = int(args[1])
                self.buffer = bytearray()
                self._line(f"m-[Expecting {self.expected} bytes]")
        else:
            digits = args[0]
            if len(digits) % 2:
                self._line("e-[Insufficent number of hex digits]")
                return
            try:
                data = bytes.fromhex(digits)
            except ValueError:
                self._line("e-[Invalid hex digit]")
                return
            room = self.expected - len(self.buffer)
            self.buffer += data[: max(room, 0)]
            if self.expected and len(self.buffer) == self.expected and room > 0:
                self._line("m-load-done")

    def _load_tensors(self) -> None:
        """th_load_tensor(): the db buffer as the model's input arrays."""
        self.arrays = []
        if len(self.buffer) != self.input_bytes:
            # as the reference firmware: say so, and run on what the tensors hold
            self._write(f"Input db has {len(self.buffer)} bytes, expected {self.input_bytes}\r\n")
            return
        offset = 0
        for d in self.inputs:
            n = _nbytes(d)
            array = np.frombuffer(bytes(self.buffer[offset : offset + n]), dtype=d["dtype"])
            self.arrays.append(array.reshape(tuple(d["shape"])))
            offset += n

    def _invoke(self) -> None:
        """One run. The input is copied in before each: TFLite Micro's planner may reuse the
        input's memory for later tensors, so a second invoke would see a clobbered input."""
        for i, array in enumerate(self.arrays):
            self.interp.set_input(array, i)
        self.interp.invoke()

    def _infer(self, args: list[str]) -> None:
        try:
            runs = int(args[0]) if args else 1
            warmups = int(args[1]) if len(args) > 1 else 10
        except ValueError:
            self._line("e-[Inference iterations must be >0]")
            return
        if runs <= 0 or warmups < 0:
            self._line("e-[Inference iterations must be >0]")
            return
        self._load_tensors()
        self._line(f"m-warmup-start-{warmups}")
        for _ in range(warmups):
            self._invoke()
        self._line("m-warmup-done")
        self._line(f"m-infer-start-{runs}")
        self._lap()
        for _ in range(runs):
            self._invoke()
        self._lap()
        self._line("m-infer-done")
        self._results()

    def _results(self) -> None:
        values = []
        for i, d in enumerate(self.outputs):
            out = np.asarray(self.interp.get_output(i)).astype(np.float64).ravel()
            scale, zero = _quant(d)
            values.extend((out - zero) * scale if scale else out)
        self._line("m-results-[" + ",".join(f"{v:.6g}" for v in values) + "]")

    # -- the loop --------------------------------------------------------------
    def serve(self) -> None:
        """Reads commands until SIGTERM/SIGINT; a command ends at '%'."""
        self.garble_now = ""
        self._write("m-init-done\r\nm-timestamp-mode-performance\r\n")
        self._lap()
        self._write("m-ready\r\n")
        print(f"{READY_PREFIX}{self.slave_path}", flush=True)
        pending = bytearray()
        while True:
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                time.sleep(0.05)
                continue
            for byte in data:
                if byte == ord("%"):
                    text = pending.decode("ascii", "replace").strip("\r\n\0 ")
                    pending.clear()
                    self.handle(text)
                elif byte not in (10, 13, 0) and len(pending) < MAX_COMMAND_CHARS:
                    pending.append(byte)


def _nbytes(detail: dict) -> int:
    return int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize


def _quant(detail: dict) -> tuple[Optional[float], int]:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is None or not len(scales) or np.dtype(detail["dtype"]).kind == "f":
        return None, 0
    return float(scales[0]), int(params["zero_points"][0])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m device_agent.serial_dut.emulator",
        description="An EMULATED MLPerf Tiny DUT on a pseudo-terminal (TFLite Micro on this CPU)",
    )
    parser.add_argument("--model", required=True, help="the .tflite the emulated firmware runs")
    parser.add_argument("--arena-bytes", type=int, default=1 << 20, help="TFLite Micro arena")
    parser.add_argument(
        "--garble-once",
        default="",
        metavar="COMMAND",
        help="put noise on one line of COMMAND's first reply (e.g. infer)",
    )
    parser.add_argument(
        "--silent-after",
        type=int,
        default=-1,
        metavar="N",
        help="answer N commands, then go silent",
    )
    parser.add_argument(
        "--other-protocol",
        action="store_true",
        help="answer like an AT modem ('ERROR'), never m-ready",
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"error: {args.model}: no such model file", file=sys.stderr)
        return 2
    dut = EmulatedDut(
        args.model, args.arena_bytes, args.garble_once, args.silent_after, args.other_protocol
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        dut.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
