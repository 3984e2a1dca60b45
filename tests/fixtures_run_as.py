"""What `--run-as` tests and benchmarks need: a Python that `nobody` can run, and the agent's
children as /proc shows them (Linux, root).

`reachable_by_nobody()` grants traverse (o+x, no read) on exactly the folders that keep
`nobody` from the agent's Python (pyenv under /root, mode 0700) and puts their modes back
after. `children()` and `ChildRecord` read an agent's children from /proc: their uid, whether
they still run the agent's own program (forked, not yet exec'd), and how a zombie ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from device_agent.measure.limits import ChildLimits, ChildLimitsError
from toolkit.measurement import BenchmarkOptions

RUN_AS_USER = "nobody"
SHORT_BENCHMARK = BenchmarkOptions(
    warmup_runs=1, warmup_min_seconds=0.01, min_runs=2, min_seconds=0.01, idle_seconds=0.01,
    power_sensor="none", threads=1, timeout_seconds=120,
)  # fmt: skip
"""A benchmark as short as the agent allows: these checks need its children, not figures."""


class RunAsUnavailable(RuntimeError):
    """`nobody` cannot run this agent's Python here, even with traverse granted."""


@contextmanager
def reachable_by_nobody() -> Iterator[None]:
    """Within the block, `ChildLimits(run_as="nobody")` accepts this Python and package."""
    changed: list[tuple[Path, int]] = []
    try:
        for _ in range(32):  # one blocking folder per round
            try:
                ChildLimits(run_as=RUN_AS_USER)
                break
            except ChildLimitsError as exc:
                folder = Path(str(exc).split(": ", 1)[1].split(" is not searchable")[0])
                if not folder.is_dir() or any(folder == f for f, _ in changed):
                    raise RunAsUnavailable(
                        f"{RUN_AS_USER} cannot run this agent's Python here: {exc}"
                    ) from None
                mode = folder.stat().st_mode & 0o7777
                changed.append((folder, mode))
                folder.chmod(mode | 0o001)
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(mode)


def children(pid: int) -> list[int]:
    """Every child of process `pid` (of any of its threads), as /proc lists them now."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            pass
    return found


@dataclass(frozen=True)
class ChildRecord:
    """One look at a child of the agent."""

    pid: int
    uid: int
    runs_agent_program: bool
    """Its command line is still the agent's: forked, not yet exec'd (it drops root at exec)."""
    zombie: bool
    exit_signal: Optional[int] = None
    """For a zombie: the signal that ended it (None: it exited)."""

    @property
    def died_before_exec_as_root(self) -> bool:
        """Ended while still root, by a signal: it never reached exec (a crash after fork)."""
        return self.zombie and self.uid == 0 and self.exit_signal is not None


def look(pid: int, agent_cmdline: bytes) -> Optional[ChildRecord]:
    """A child's uid, program and state; None when it is gone meanwhile."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        uid = int(next(x for x in status if x.startswith("Uid:")).split()[1])
        zombie = next(x for x in status if x.startswith("State:")).split()[1] == "Z"
        signal_number = None
        if zombie:  # field 52 of stat: the exit code as waitpid would see it
            code = int(Path(f"/proc/{pid}/stat").read_text().rsplit(maxsplit=1)[-1])
            signal_number = (code & 0x7F) or None
    except (OSError, StopIteration, ValueError):
        return None
    return ChildRecord(pid, uid, cmdline == agent_cmdline, zombie, signal_number)
