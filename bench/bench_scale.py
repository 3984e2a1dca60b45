"""A lab's scale, side by side in one run: builds on Ray vs locally, Ray's overhead per trial,
database writes (from bench_db_writes), and validating on 32 agents vs 1.

    python bench/bench_scale.py [--builds 4] [--agents 32]

1. Candidate builds per minute: the same `--builds` recipes of the digits CNN (structured
   prune + 1 fine-tune epoch + TFLite + host accuracy), each configuration with an empty build
   cache, built (a) one after another by `Builder` in this process (`--executor local`), and
   by `RayBuilder` (every build submitted at once, then collected) on a Ray instance on this
   machine with (b) 1 and (c) 2 worker CPUs (`ray.init(num_cpus=k)`). Each configuration
   first builds the bare export (imports, converter, and for Ray the workers' model and data)
   outside the clock; local uses torch's default thread count (recorded), Ray 1 per worker.
2. Ray's overhead per trial at 1 worker, against one digits-mobilenet trial (prune 0.25 + 1
   fine-tune epoch + TFLite + host accuracy, then a benchmark on a local agent), target
   <= 10%. Overhead = a build round trip that does no building (the worker's cache holds it,
   this host's does not: task, artifact bytes back, sha check, landing) + (benchmark through
   the device actor - the same benchmark through a direct client), medians over repeats. The
   once-per-run costs (a worker's first task, an actor starting) are recorded apart.
3. Rows per second written by 4 concurrent writers, PostgreSQL vs SQLite: copied from
   bench/results/bench_db_writes.json (helper A's bench) with that file's commit, if present.
4. `validate` (connect, push, benchmark with short options, a size budget) on `--agents`
   real agents at --max-parallel 32 vs on 1 agent; wall times and their ratio.

Everything runs on this one machine, whose cores other work shares: the JSON records the
core count and load average. Prints a table and writes bench/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, print_table, write_results  # noqa: E402
from toolkit.measurement import BenchmarkOptions  # noqa: E402

SHORT = BenchmarkOptions(
    warmup_runs=3, warmup_min_seconds=0.01, min_runs=20, min_seconds=0.2, power_sensor="none"
)
OVERHEAD_TARGET = 0.10
ORIGINAL_HOME = os.environ.get("EDGELOOP_HOME")
DATASETS = {"digits-cnn": "digits", "digits-mobilenet": "digits-32"}


def _candidates(n: int, epochs: int = 1) -> list[Any]:
    from toolkit.search.space import Dimension, SearchSpace

    amounts = [round(0.1 + 0.6 * i / max(1, n - 1), 3) for i in range(n)]
    space = SearchSpace((Dimension("prune_amount", tuple(amounts)),), finetune_epochs=epochs)
    return [space.candidate({"prune_amount": a}, note="bench") for a in amounts]


class _NoDB:
    def build(self, key: str) -> None:
        return None

    def put_build(self, key: str, record: dict) -> None:
        return None


def _fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="bench-scale-home-"))
    os.environ["EDGELOOP_HOME"] = str(home)
    return home


def _load(model: str) -> tuple[Any, Any]:
    """The model and its data, from the user's edgeloop home (reference models are trained
    there once), whatever home the bench is using at the moment."""
    from toolkit.data import load_dataset
    from toolkit.models import load_model

    current = os.environ.get("EDGELOOP_HOME")
    _restore_home()
    try:
        return load_model(model), load_dataset(DATASETS[model])
    finally:
        if current is not None:
            os.environ["EDGELOOP_HOME"] = current


def _restore_home() -> None:
    if ORIGINAL_HOME is None:
        os.environ.pop("EDGELOOP_HOME", None)
    else:
        os.environ["EDGELOOP_HOME"] = ORIGINAL_HOME


def _ray_init(cpus: int) -> None:
    """A private local Ray instance with `cpus` worker CPUs (small object store, no dashboard)."""
    import ray

    ray.init(
        num_cpus=cpus,
        namespace="edgeloop",
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=100_000_000,
        include_dashboard=False,
    )


def builds_per_minute(n: int, ray_workers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    import ray

    from toolkit.tune.build import Builder
    from toolkit.tune.executors.ray_executor import RayExecutor

    loaded, data = _load("digits-cnn")
    candidates = _candidates(n)
    out: dict[str, Any] = {"builds": n, "model": "digits-cnn", "recipe": candidates[0].recipe}
    import torch

    out["local_torch_threads"] = torch.get_num_threads()
    _fresh_home()
    builder = Builder(loaded.module, loaded.input_shape, data, _NoDB())
    builder.build(replace(candidates[0], recipe=[]))  # imports and converter warm, as for Ray
    started = time.perf_counter()
    for c in candidates:
        builder.build(c)
    out["local_s"] = time.perf_counter() - started
    for workers in ray_workers:
        _fresh_home()  # empty caches here and on the workers (they inherit this home)
        _ray_init(workers)
        try:
            ray_builder = RayExecutor().builder(
                loaded.module, loaded.input_shape, data, _NoDB(), None, 0
            )
            # Start the worker processes (imports, model and data) before the clock.
            ray_builder.prefetch([replace(candidates[0], recipe=[])] * workers)
            ray_builder.build(replace(candidates[0], recipe=[]))
            started = time.perf_counter()
            ray_builder.prefetch(candidates)
            for c in candidates:
                ray_builder.build(c)
            out[f"ray_{workers}_s"] = time.perf_counter() - started
        finally:
            ray.shutdown()
    for key in ("local", *(f"ray_{w}" for w in ray_workers)):
        out[f"{key}_builds_per_min"] = 60.0 * n / out[f"{key}_s"]
    return out


def ray_overhead(repeats: int) -> dict[str, Any]:
    import ray

    from toolkit.transport.grpc_client import DeviceClient
    from toolkit.transport.local import AgentProcess
    from toolkit.tune.build import Builder
    from toolkit.tune.executors.ray_executor import RayExecutor

    loaded, data = _load("digits-mobilenet")
    candidate = _candidates(1)[0]
    candidate = replace(
        candidate,
        recipe=[
            {"prune": {"amount": 0.25, "method": "l1-structured"}},
            {"finetune": {"epochs": 1}},
        ],
    )
    home = _fresh_home()
    agent = AgentProcess(home / "agent-cache")
    try:
        # One digits-mobilenet trial, locally: build + benchmark.
        started = time.perf_counter()
        built = Builder(loaded.module, loaded.input_shape, data, _NoDB()).build(candidate)
        build_s = time.perf_counter() - started
        with DeviceClient(agent.address) as client:
            t0 = time.perf_counter()
            client.benchmark(built.artifact, SHORT)
            trial_s = build_s + time.perf_counter() - t0
            direct = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                client.benchmark(built.artifact, SHORT)
                direct.append(time.perf_counter() - t0)
        _ray_init(1)
        try:
            executor = RayExecutor()
            ray_builder = executor.builder(
                loaded.module, loaded.input_shape, data, _NoDB(), None, 0
            )
            ray_builder.cache_root = home / "driver-cache-first"
            t0 = time.perf_counter()
            ray_builder.build(candidate)  # the worker's first task: imports, model, data
            first_round_trip = time.perf_counter() - t0
            round_trips = []
            for i in range(repeats):
                # This host forgets the build, the worker still has it: a round trip only.
                ray_builder.cache_root = home / f"driver-cache-{i}"
                ray_builder._models.clear()
                t0 = time.perf_counter()
                ray_builder.build(candidate)
                round_trips.append(time.perf_counter() - t0)
            with executor.open_devices([agent.address]) as devices:
                t0 = time.perf_counter()
                devices[0].client.benchmark(built.artifact, SHORT)  # the actor starting
                first_via_actor = time.perf_counter() - t0
                via_actor = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    devices[0].client.benchmark(built.artifact, SHORT)
                    via_actor.append(time.perf_counter() - t0)
        finally:
            ray.shutdown()
    finally:
        agent.stop()
    build_rt = statistics.median(round_trips)
    actor_extra = statistics.median(via_actor) - statistics.median(direct)
    overhead = build_rt + max(0.0, actor_extra)
    return {
        "model": "digits-mobilenet",
        "recipe": candidate.recipe,
        "repeats": repeats,
        "trial_s": trial_s,
        "trial_build_s": build_s,
        "build_round_trip_s": build_rt,
        "round_trips_s": round_trips,
        "first_round_trip_s": first_round_trip,
        "first_benchmark_via_actor_s": first_via_actor,
        "benchmark_direct_s": statistics.median(direct),
        "benchmark_via_actor_s": statistics.median(via_actor),
        "actor_extra_s": actor_extra,
        "overhead_s": overhead,
        "overhead_fraction": overhead / trial_s,
        "target_fraction": OVERHEAD_TARGET,
        "met": overhead / trial_s <= OVERHEAD_TARGET,
    }


def db_writes() -> dict[str, Any]:
    path = RESULTS / "bench_db_writes.json"
    if not path.is_file():
        return {"source": None, "note": "bench/results/bench_db_writes.json not found"}
    data = json.loads(path.read_text())
    return {
        "source": str(path.relative_to(RESULTS.parent.parent)),
        "commit": data.get("provenance", {}).get("git", {}).get("sha"),
        "method": data.get("method"),
        "sqlite_rows_per_s": data.get("sqlite", {}).get("rows_per_s"),
        "postgresql_rows_per_s": data.get("postgresql", {}).get("rows_per_s"),
    }


def validate_fan_out(n: int) -> dict[str, Any]:
    import torch

    from tests.model_files import build_tflite, tiny_cnn
    from toolkit.devices.fleet import Fleet
    from toolkit.devices.profile import Budgets, DeviceProfile
    from toolkit.transport.local import AgentProcess
    from toolkit.validate import GateConfig, run_gate

    home = _fresh_home()
    torch.set_num_threads(1)
    agents: list[Any] = []
    try:
        started = time.perf_counter()
        for i in range(n):
            agents.append(AgentProcess(home / f"cache{i}"))
        start_s = time.perf_counter() - started
        profiles = [
            DeviceProfile(name=f"a{i}", address=a.address, budgets=Budgets(size_kb=1024.0))
            for i, a in enumerate(agents)
        ]
        config = GateConfig(options=SHORT, max_workers=32, store=False)
        walls = {}
        for label, chosen in (("one", profiles[:1]), ("all", profiles)):
            model = build_tflite(tiny_cnn(), home / f"{label}.tflite")  # a fresh push each
            t0 = time.perf_counter()
            report = run_gate(model, Fleet(label, tuple(chosen)), config)
            walls[label] = (
                time.perf_counter() - t0,
                report.passed,
                sum(d.passed for d in report.devices),
            )
    finally:
        for agent in agents:
            agent.stop()
    return {
        "agents": n,
        "max_parallel": 32,
        "agents_start_s": start_s,
        "options": {
            "warmup_runs": SHORT.warmup_runs,
            "min_runs": SHORT.min_runs,
            "min_seconds": SHORT.min_seconds,
        },
        "one_s": walls["one"][0],
        "all_s": walls["all"][0],
        "ratio": walls["all"][0] / walls["one"][0],
        "all_passed": walls["all"][1],
        "devices_passed": walls["all"][2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=4)
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ray-workers",
        default="1,2",
        help="Worker CPUs of the Ray instances to build on, comma-separated.",
    )
    args = parser.parse_args()
    ray_workers = tuple(int(w) for w in args.ray_workers.split(","))
    results: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        results["builds"] = builds_per_minute(args.builds, ray_workers)
        results["ray_overhead"] = ray_overhead(args.repeats)
        results["db_writes"] = db_writes()
        results["validate"] = validate_fan_out(args.agents)
    finally:
        _restore_home()
    b, o, v, d = (results[k] for k in ("builds", "ray_overhead", "validate", "db_writes"))
    rows = [
        ("builds/min, local (1 process)", f"{b['local_builds_per_min']:.1f}"),
        *(
            (f"builds/min, Ray {w} worker(s)", f"{b[f'ray_{w}_builds_per_min']:.1f}")
            for w in ray_workers
        ),
        ("digits-mobilenet trial (s)", f"{o['trial_s']:.2f}"),
        ("Ray overhead per trial (s)", f"{o['overhead_s']:.3f}"),
        (
            "  of a trial (target <= 10%)",
            f"{100 * o['overhead_fraction']:.1f}% ({'met' if o['met'] else 'MISSED'})",
        ),
        ("rows/s, 4 writers, SQLite", str(d.get("sqlite_rows_per_s"))),
        ("rows/s, 4 writers, PostgreSQL", str(d.get("postgresql_rows_per_s"))),
        ("validate, 1 agent (s)", f"{v['one_s']:.2f}"),
        (f"validate, {v['agents']} agents (s)", f"{v['all_s']:.2f} (x{v['ratio']:.1f})"),
    ]
    print(f"this machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print_table(rows, ("figure", "value"))
    print(f"wrote {write_results('bench_scale', results)}")


if __name__ == "__main__":
    main()
