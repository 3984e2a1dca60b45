"""Children lost under `--run-as`: agents whose child died of a signal after fork, still root.

    python bench/bench_run_as.py [--agents 20]          (root; Linux)
    python bench/repeat.py bench/bench_run_as.py --runs 3 --against 58e59e6 -- --agents 20

Each agent starts cold as root with `--run-as nobody` and runs what a first user does: the
start-up (zygote, Infer worker, the one-off torch CUDA probe), one benchmark and one Infer of
the tests' small .tflite; a request that fails is recorded with what the user saw. Meanwhile a
sampler reads the agent's children from /proc as fast as it can. A child seen as a zombie that
is still root and was ended by a signal crashed between fork and exec (it drops root just
before exec). Before 64a5c50, gRPC's fork handlers ran in such children and crashed some of
them. Target: no agent loses a child.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, write_results  # noqa: E402
from tests.fixtures_run_as import (  # noqa: E402
    RUN_AS_USER,
    SHORT_BENCHMARK,
    ChildRecord,
    RunAsUnavailable,
    children,
    look,
    reachable_by_nobody,
)
from tests.model_files import build_all  # noqa: E402
from toolkit.errors import AgentError  # noqa: E402
from toolkit.transport.grpc_client import DeviceClient  # noqa: E402
from toolkit.transport.local import AgentProcess  # noqa: E402


class ChildSampler:
    """Reads an agent's children from /proc on a thread of its own until stopped."""

    def __init__(self, agent_pid: int) -> None:
        self._pid = agent_pid
        self._cmdline = Path(f"/proc/{agent_pid}/cmdline").read_bytes()
        self._stop = threading.Event()
        self.crashed: dict[int, ChildRecord] = {}
        self.children_seen: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="child-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pids = children(self._pid)
            except OSError:  # the agent is gone
                return
            for pid in pids:
                self.children_seen.add(pid)
                record = look(pid, self._cmdline)
                if record is not None and record.died_before_exec_as_root:
                    self.crashed[pid] = record

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def one_agent(model: Path, folder: Path) -> dict[str, Any]:
    """Starts an agent with --run-as, benchmarks and infers once, and says what it lost."""
    folder.mkdir(mode=0o755)
    agent = AgentProcess(folder / "cache", ("--run-as", RUN_AS_USER))
    sampler = ChildSampler(agent.pid)
    failed = ""  # the first request that failed, as the user saw it
    try:
        with DeviceClient(agent.address) as client:
            client.info()  # waits for the start-up's CUDA probe
            measurement = client.benchmark(model, SHORT_BENCHMARK)
            if not measurement.ok:
                failed = f"Benchmark: {measurement.error_message}"
            client.infer(model, [np.zeros((1, 1, 8, 8), np.float32)])
    except AgentError as exc:  # e.g. the Infer worker crashed before it could start
        failed = failed or str(exc)
    finally:
        sampler.stop()
        agent.stop()
    return {
        "request_failed": failed,
        "children_seen": len(sampler.children_seen),
        "crashed_children": [{"pid": r.pid, "signal": r.exit_signal}
                             for r in sampler.crashed.values()],
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20, help="agents started (default 20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_run_as: --run-as needs the agent to be root; run this as root",
              file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-run-as-") as tmp:
        os.chmod(tmp, 0o755)
        model = build_all(Path(tmp) / "models").tflite
        try:
            with reachable_by_nobody():
                agents = []
                started = time.monotonic()
                for i in range(args.agents):
                    agents.append(one_agent(model, Path(tmp) / f"agent{i}"))
                    print(f"\ragent {i + 1}/{args.agents}", end="", file=sys.stderr, flush=True)
                print(file=sys.stderr)
        except RunAsUnavailable as exc:
            print(f"bench_run_as: {exc}", file=sys.stderr)
            return 2
    lost = sum(1 for a in agents if a["crashed_children"])
    figures = {"agents": args.agents, "agents_losing_a_child": lost,
               "agents_with_a_failed_request": sum(1 for a in agents if a["request_failed"])}
    met = lost == 0
    path = write_results("run_as", {
        "figures": figures, "met": {"agents_losing_a_child": met},
        "targets": {"agents_losing_a_child": {"bound": 0, "kind": "max"}},
        "wall_s": round(time.monotonic() - started, 1), "agents": agents,
    })  # fmt: skip
    print_table(
        [("agents that lost a child (crashed after fork, still root)",
          f"{lost} of {args.agents}", "0: " + ("met" if met else "MISSED")),
         ("agents whose Benchmark or Infer failed",
          f"{figures['agents_with_a_failed_request']} of {args.agents}", "(reported)")],
        ("benchmark", "measured", "target"),
    )  # fmt: skip
    print(f"wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
