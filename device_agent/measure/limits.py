"""Resource limits and the user for the children that load models (benchmark and Infer workers).

Defence in depth behind "models are data": even a model that gets a runtime to misbehave can
only use bounded memory, CPU time and file descriptors, and — when the agent runs as root with
``--run-as USER`` — only that user's rights.

The agent sets one `ChildLimits` at start (`configure`); the spawners read it (`current`) and
pass the limits in the child's environment (`ChildLimits.popen_kwargs`). The child sets them on
itself first thing (`apply_own_limits`), and a benchmark child its CPU time once its job, and
so its timeout, is known (`limit_own_cpu`): lowering one's own limits needs no privilege,
unlike prlimit(2) on a child of another user. Not a ``preexec_fn``: the agent is
multi-threaded (gRPC), where running Python between fork and exec can deadlock.
"""

from __future__ import annotations

import math
import os
import pwd
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ChildLimitsError(ValueError):
    """Limits or run-as user that cannot work here (one line, for the agent's start-up)."""


DEFAULT_ADDRESS_SPACE_MB = 8192
"""Address space (virtual memory) of a child, MB, on a CPU-only device.

Virtual, not resident: a torch CPU benchmark reserves ~0.85 GB with 2 threads and ~1.9 GB with
16 (thread stacks and malloc arenas), ONNX Runtime 0.33-1.4 GB, LiteRT 0.17 GB, before the
model's own tensors. 8 GiB leaves room for a large model on a many-core device while a runaway
allocation still fails in the child instead of taking the device's memory.
"""
CUDA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvhost-ctrl")
"""When one exists the default address-space limit is off: the CUDA driver reserves tens of GB
of virtual address space at initialisation (unified addressing), so any useful cap breaks it."""
LIMITS_ENV = "EDGELOOP_CHILD_LIMITS"
"""How a child learns its limits: `as=<bytes>,nofile=<n>` (0 = no limit)."""
DEFAULT_OPEN_FILES = 256
CPU_MARGIN_S = 30.0
"""CPU seconds a benchmark may use beyond its timeout, per core (imports, probes)."""


@dataclass(frozen=True)
class ChildLimits:
    """Limits for one kind of child process.

    Attributes:
        address_space_mb: RLIMIT_AS in MB; 0 = no limit; None = `default_address_space_mb()`.
        open_files: RLIMIT_NOFILE (soft and hard); 0 = inherit.
        run_as: user name the children run as (the agent must be root); "" = the agent's user.
    """

    address_space_mb: Optional[int] = None
    open_files: int = DEFAULT_OPEN_FILES
    run_as: str = ""
    _user: Optional[pwd.struct_passwd] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.address_space_mb is not None and self.address_space_mb < 0:
            raise ChildLimitsError(
                f"--child-memory-mb: expected >= 0 (0 = no limit), got {self.address_space_mb}"
            )
        if self.open_files < 0:
            raise ChildLimitsError(f"--child-open-files: expected >= 0, got {self.open_files}")
        if self.run_as:
            if os.geteuid() != 0:
                raise ChildLimitsError(
                    f"--run-as {self.run_as}: the agent must run as root to start children as "
                    "another user"
                )
            try:
                object.__setattr__(self, "_user", pwd.getpwnam(self.run_as))
            except KeyError:
                raise ChildLimitsError(f"--run-as {self.run_as}: no such user") from None
            self._check_can_run()

    def _check_can_run(self) -> None:
        """The run-as user must reach the agent's Python and its package, or every child dies
        at exec: refused at start instead, naming the folder in the way."""
        import device_agent

        interpreter = Path(sys.executable)
        package = Path(device_agent.__file__).resolve().parent
        for path in (interpreter, interpreter.resolve(), package):
            folder = _first_closed_folder(path, self._user)
            if folder is not None:
                raise ChildLimitsError(
                    f"--run-as {self.run_as}: {folder} is not searchable by that user, so "
                    f"it cannot run {path}; install the agent where it can (e.g. a venv "
                    "under /opt)"
                )

    @property
    def effective_address_space_mb(self) -> int:
        if self.address_space_mb is None:
            return default_address_space_mb()
        return self.address_space_mb

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen: the limits the child sets on itself at start
        (`LIMITS_ENV`, read by `apply_own_limits`), and the user, group and environment of
        run_as.

        The child lowers its own limits, first thing, before it imports a runtime or sees a
        model: lowering needs no privilege, whereas setting another process's limits
        (prlimit) needs CAP_SYS_RESOURCE once the child runs as another user — which root in
        many containers does not have. No Python runs between fork and exec either way."""
        as_bytes = self.effective_address_space_mb * 2**20
        env = {**os.environ, LIMITS_ENV: f"as={as_bytes},nofile={self.open_files}"}
        kwargs: dict[str, Any] = {"env": env}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
            env.update(HOME=self._user.pw_dir, USER=self._user.pw_name, LOGNAME=self._user.pw_name)
            kwargs["cwd"] = "/"
        return kwargs

    def grant_read(self, models_dir: Path) -> None:
        """Lets the run-as user read the model files: the models folder and its files get o+rx /
        o+r (nothing becomes writable). The folders above it are not changed: when one of them
        does not let the user through, this raises ChildLimitsError naming it."""
        if self._user is None:
            return
        models_dir = Path(models_dir).resolve()
        folder = _first_closed_folder(models_dir, self._user)
        if folder is not None:
            raise ChildLimitsError(
                f"--run-as {self.run_as}: {folder} is not searchable by that user, so it "
                f"cannot read the models in {models_dir}; put --cache-dir under a folder it "
                "can reach (e.g. /var/lib/edgeloop-agent)"
            )
        _add_mode(models_dir, 0o005)
        for item in models_dir.iterdir():
            _add_mode(item, 0o004)


def _first_closed_folder(path: Path, user: pwd.struct_passwd) -> Optional[Path]:
    """The outermost folder above `path` that `user` cannot enter, or None."""
    return next((f for f in reversed(path.parents) if not _searchable_by(f, user)), None)


def _searchable_by(folder: Path, user: pwd.struct_passwd) -> bool:
    st = folder.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _add_mode(path: Path, bits: int) -> None:
    try:
        mode = path.stat().st_mode
        if mode & bits != bits:
            path.chmod((mode | bits) & 0o7777)
    except OSError:
        pass


def default_address_space_mb() -> int:
    """DEFAULT_ADDRESS_SPACE_MB, or 0 (no limit) on a device with a CUDA driver."""
    if any(Path(p).exists() for p in CUDA_DEVICE_FILES):
        return 0
    return DEFAULT_ADDRESS_SPACE_MB


def benchmark_cpu_seconds(timeout_s: float, cores: Optional[int] = None) -> int:
    """RLIMIT_CPU for a benchmark: its wall-clock timeout plus a margin, times the cores
    (CPU time of all threads counts). The watchdog kills at the timeout; this is the backstop."""
    cores = cores or len(os.sched_getaffinity(0)) or 1
    return int(math.ceil((timeout_s + CPU_MARGIN_S) * cores))


def apply_own_limits() -> None:
    """In a child: sets the address-space and open-file limits its parent put in `LIMITS_ENV`
    (soft = hard, so the model's code cannot raise them again). Called before anything else."""
    spec = dict(item.split("=", 1) for item in os.environ.get(LIMITS_ENV, "").split(",") if item)
    if int(spec.get("as", 0)):
        _set_own(resource.RLIMIT_AS, int(spec["as"]))
    if int(spec.get("nofile", 0)):
        _set_own(resource.RLIMIT_NOFILE, int(spec["nofile"]))


def limit_own_cpu(timeout_s: float) -> None:
    """In a benchmark child, once its job is known: RLIMIT_CPU from the job's own timeout
    (SIGXCPU, then SIGKILL, when it is used up)."""
    _set_own(resource.RLIMIT_CPU, benchmark_cpu_seconds(timeout_s))


def _set_own(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)  # never above what this process was given
    resource.setrlimit(which, (value, value))


_current = ChildLimits()


def configure(limits: ChildLimits) -> None:
    """Sets the limits every child started from now on gets (called once at agent start)."""
    global _current
    _current = limits


def current() -> ChildLimits:
    return _current
