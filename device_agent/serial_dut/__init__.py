"""Microcontrollers over a serial line: the MLPerf Tiny / EEMBC EnergyRunner DUT protocol.

`protocol` (commands, replies, errors) sits under `link` (the pyserial port) and `session` (one
conversation with a DUT); `bench` makes one BenchmarkResult from a session; `scan` finds ports
and DUTs; `attached` is the agent's view (`serve --serial-dut PORT`); `emulator` is an EMULATED
DUT on a pseudo-terminal for tests and benchmarks. pyserial and tflite-micro are imported only
when used, so the agent starts without them.
"""
