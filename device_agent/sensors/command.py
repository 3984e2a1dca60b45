"""Power from an external meter, read by a user-configured shell command.

The command is the environment variable `EDGELOOP_POWER_COMMAND` (the agent's
`--power-command` sets it). Each read runs it through the shell; it must print the power in
watts as one number on stdout and exit 0 within the timeout (`EDGELOOP_POWER_COMMAND_TIMEOUT_S`,
default 5 s). A command that hangs is killed together with its children.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from typing import Optional

from device_agent.sensors.base import Availability, PowerSensor, SensorError

POWER_COMMAND_ENV = "EDGELOOP_POWER_COMMAND"
TIMEOUT_ENV = "EDGELOOP_POWER_COMMAND_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 5.0


def _timeout_from_env() -> float:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise SensorError(f"command: {TIMEOUT_ENV}={text!r}: expected seconds > 0")
    return value


def run_power_command(command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Runs `command` through the shell and returns the watts it printed.

    Args:
        command: shell command line that prints one number (watts) on stdout.
        timeout_s: seconds to wait before killing the command and its children (default 5).

    Raises:
        SensorError: the command fails, times out, or prints anything but one finite number
            >= 0; the message names the command.
    """
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise SensorError(f"command: cannot run power command {command!r}: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:  # the session this Popen started: the shell and its children
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise SensorError(
            f"command: power command {command!r} did not finish within {timeout_s:g} s"
        ) from None
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1:] or ["no stderr"]
        raise SensorError(
            f"command: power command {command!r} exited with {proc.returncode}: {tail[0][:200]}"
        )
    text = out.strip()
    try:
        watts = float(text)
    except ValueError:
        raise SensorError(
            f"command: power command {command!r} printed {text[:80]!r}; expected watts as "
            "one number"
        ) from None
    if not math.isfinite(watts) or watts < 0:
        raise SensorError(
            f"command: power command {command!r} printed {text!r}; expected finite watts >= 0"
        )
    return watts


class CommandSensor(PowerSensor):
    """Power in watts printed by an external command (an external meter's reader)."""

    name = "command"
    default_rate_hz = 5.0

    def __init__(self, command: Optional[str] = None, timeout_s: Optional[float] = None) -> None:
        """Sets the command to run.

        Args:
            command: shell command line; default: `EDGELOOP_POWER_COMMAND`.
            timeout_s: seconds per run; default: `EDGELOOP_POWER_COMMAND_TIMEOUT_S`, else 5.
        """
        self.command = command if command is not None else os.environ.get(POWER_COMMAND_ENV, "")
        self.timeout_s = timeout_s if timeout_s is not None else _timeout_from_env()

    @classmethod
    def availability(cls) -> Availability:
        """Available when `EDGELOOP_POWER_COMMAND` is set and one run of it succeeds."""
        command = os.environ.get(POWER_COMMAND_ENV, "").strip()
        if not command:
            return Availability(
                False, f"{POWER_COMMAND_ENV} is not set (agent option --power-command)"
            )
        try:
            run_power_command(command, _timeout_from_env())
        except SensorError as exc:
            return Availability(False, str(exc))
        return Availability(True, detail=f"command: {command}")

    def read_watts(self) -> float:
        """Runs the command once and returns the watts it printed.

        Raises:
            SensorError: no command is configured, or the run fails (see `run_power_command`).
        """
        if not self.command.strip():
            raise SensorError(f"command: no power command ({POWER_COMMAND_ENV} is not set)")
        return run_power_command(self.command, self.timeout_s)
