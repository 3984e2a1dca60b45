"""`edgeloop tune --executor ray` on a REAL Ray cluster started by the test (`ray start`: a
head and a second node, one CPU each, separate temp folders) against two real local agents.

The cluster's processes get an EDGELOOP_HOME of their own, so a build found in it was made on
the cluster and one in the test's home came back as bytes. Teardown kills only the process
trees of this cluster (found by its temp folders), never every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures_postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from toolkit.transport.local import AgentProcess

pytestmark = pytest.mark.slow
RAY_MEMORY = "100000000"  # object store per node, bytes
TRIALS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdlines() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry.name)] = (ppid, cmd)
    return found


def _tree(roots: set[int], procs: dict[int, tuple[int, str]]) -> set[int]:
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


class RayCluster:
    """A head and one more node on this machine, started with `ray start`."""

    def __init__(self, home: Path) -> None:
        self.folders = [Path(tempfile.mkdtemp(prefix="elray", dir="/tmp")) for _ in range(2)]
        self.home = home
        self.address = f"127.0.0.1:{_free_port()}"
        env = {**os.environ, "EDGELOOP_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
        common = [
            "--num-cpus",
            "1",
            "--object-store-memory",
            RAY_MEMORY,
            "--disable-usage-stats",
            "--node-ip-address",
            "127.0.0.1",
        ]  # loopback only: no token auth here
        self._start(
            [
                "--head",
                "--port",
                self.address.rsplit(":", 1)[1],
                "--include-dashboard=false",
                "--temp-dir",
                str(self.folders[0]),
                *common,
            ],
            env,
        )
        self._start(["--address", self.address, "--temp-dir", str(self.folders[1]), *common], env)

    def _start(self, args: list[str], env: dict[str, str]) -> None:
        ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        done = subprocess.run(
            [ray, "start", *args], env=env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)} failed: {done.stderr[-1500:]}")

    def processes(self) -> dict[int, str]:
        """This cluster's processes (ours by temp folder, and everything they started)."""
        procs = _cmdlines()
        roots = {pid for pid, (_, cmd) in procs.items() if any(str(f) in cmd for f in self.folders)}
        return {pid: procs[pid][1] for pid in _tree(roots, procs) if pid in procs}

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(1.0 if sig == signal.SIGTERM else 0)
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("ray") is None and not Path(sys.executable).with_name("ray").exists():
        pytest.skip("the `ray` command is not installed (pip install 'edgeloop[cluster]')")
    # A loopback test cluster without Ray's token authentication, whatever ~/.ray holds (a
    # `ray.init()` elsewhere on this machine writes a token there, which `ray start --head`
    # would then require); the tune commands and this process inherit the setting.
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray_cluster = RayCluster(tmp_path_factory.mktemp("cluster-home"))
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


@pytest.fixture(scope="module")
def two_agents(tmp_path_factory):
    agents = [
        AgentProcess(tmp_path_factory.mktemp(f"ray-agent{i}"), ("--device-id", f"ray-{i}"))
        for i in range(2)
    ]
    try:
        yield agents
    finally:
        for agent in agents:
            agent.stop()


def _tune(
    cluster: RayCluster, agents, out: Path, model: str, seed: int, space: Path
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "toolkit.cli.main",
        "tune",
        model,
        "--data",
        "digits",
        "--strategy",
        "grid",
        "--trials",
        str(TRIALS),
        "--space",
        str(space),
        "--min-seconds",
        "0.1",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--json",
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
    ]
    for agent in agents:
        args += ["--device", agent.address]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _space(folder: Path) -> Path:
    path = folder / "space.yaml"
    path.write_text(
        "dimensions: {prune_amount: [0.0, 0.25, 0.5]}\nfinetune_epochs: 1\nfinal_epochs: 1\n"
    )
    return path


def _rows_per_model_and_device(run_id: str) -> dict[tuple[str, str], int]:
    from toolkit.results.store import ResultsStore

    rows = ResultsStore().query(run_id=run_id)
    return rows.groupby(["model_sha256", "device_id"]).size().to_dict()


def test_tune_on_ray_builds_on_the_cluster_and_measures_each_artifact_once_per_device(
    cluster, two_agents, tmp_path
):
    model_file = tmp_path / "user_model" / "tiny_net.py"
    model_file.parent.mkdir()
    model_file.write_text(
        "import torch.nn as nn\n\n\n"
        "class TinyNet(nn.Module):  # defined only in this file: it travels with the job\n"
        "    input_shape = (1, 1, 8, 8)\n\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 16, 3, padding=1)\n"
        "        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.conv(x))\n\n\n"
        "def build():\n"
        "    return TinyNet()\n"
    )
    run = _tune(cluster, two_agents, tmp_path / "runs", f"{model_file}:build", 0, _space(tmp_path))
    stdout, stderr = run.communicate(timeout=900)
    assert run.returncode in (0, 3), stderr[-3000:]
    result = json.loads(stdout)

    assert result["trials"] == TRIALS
    counts = _rows_per_model_and_device(result["run_id"])
    assert counts and set(counts.values()) == {1}  # every artifact measured once per device
    assert {device for _, device in counts} == {"ray-0", "ray-1"}
    # Built on the cluster (its own home) and landed here by sha.
    cluster_builds = {
        json.loads(p.read_text())["sha256"] for p in (cluster.home / "builds").glob("*/build.json")
    }
    home = Path(os.environ["EDGELOOP_HOME"])
    landed = {json.loads(p.read_text())["sha256"] for p in (home / "builds").glob("*/build.json")}
    measured = {sha for sha, _ in counts}
    assert measured <= cluster_builds and measured <= landed
    # One actor per device, on the cluster, named by the agent's id and address.
    titles = cluster.processes().values()
    assert sum("ray::DeviceActor" in t for t in titles) >= 2


def test_a_build_worker_killed_mid_trial_is_retried_and_nothing_is_measured_twice(
    cluster, two_agents, tmp_path
):
    run = _tune(cluster, two_agents, tmp_path / "runs", "digits-cnn", 7, _space(tmp_path))
    killed, deadline = [], time.monotonic() + 600
    while not killed and run.poll() is None and time.monotonic() < deadline:
        for pid, title in cluster.processes().items():
            if title.startswith("ray::build_candidate"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=900)

    assert killed, "no build task was seen running on the cluster"
    assert run.returncode in (0, 3), stderr[-3000:]
    result = json.loads(stdout)
    assert result["trials"] == TRIALS  # the killed build came back (Ray ran it again)
    counts = _rows_per_model_and_device(result["run_id"])
    assert counts and set(counts.values()) == {1}
    assert result["new_measurements"] == len(counts)


def test_the_pareto_study_lives_beside_the_results_database_and_resume_rebuilds_it(tmp_path):
    from dataclasses import replace

    import optuna

    from toolkit.db.engine import resolve_url
    from toolkit.search.pareto import OPTUNA_SQLITE_FILE, study_storage
    from toolkit.search.space import Dimension, SearchSpace
    from toolkit.tune.config import TuneConfig
    from toolkit.tune.live import LiveView
    from toolkit.tune.runner import run_tune

    space = SearchSpace(
        (Dimension("prune_amount", (0.0, 0.25, 0.5, 0.75)),), finetune_epochs=1, final_epochs=1
    )
    config = TuneConfig(strategy="pareto", space=space, trials=2, out_dir=tmp_path)
    config = replace(config, bench=replace(config.bench, min_seconds=0.1))
    run_tune(config, live=LiveView(0, enabled=False))

    url = resolve_url()
    if url.startswith("sqlite:"):
        assert (Path(url.split(":///", 1)[1]).parent / OPTUNA_SQLITE_FILE).is_file()
    storage = study_storage(url)
    study = optuna.load_study(study_name=f"edgeloop-{config.run_id}", storage=storage)
    first = [t.params for t in study.trials if t.state.name == "COMPLETE"]
    assert len(first) == 2

    more = run_tune(replace(config, trials=3), live=LiveView(0, enabled=False))
    study = optuna.load_study(study_name=f"edgeloop-{config.run_id}", storage=storage)
    again = [t.params for t in study.trials if t.state.name == "COMPLETE"]
    assert more.trials == 3 and again[:2] == first  # replayed in order, then one more


def test_every_driver_naming_a_device_gets_its_one_actor(cluster, two_agents):
    import ray

    from toolkit.tune.executors.ray_executor import RayExecutor

    agent = two_agents[0]
    ray.init(
        address=cluster.address, namespace="edgeloop", log_to_driver=False, logging_level="ERROR"
    )
    try:
        first, second = RayExecutor(cluster.address), RayExecutor(cluster.address)
        with first.open_devices([agent.address]) as a, second.open_devices([agent.address]) as b:
            assert a[0].client.actor._actor_id == b[0].client.actor._actor_id
            assert a[0].device_id == "ray-0"
            info = ray.get(a[0].client.actor.info.remote())
            assert info.device_id == "ray-0"
    finally:
        ray.shutdown()


def test_a_pareto_study_in_postgresql_keeps_to_its_own_schema(postgres_url):  # noqa: F811
    import optuna
    from sqlalchemy import create_engine, text

    from toolkit.db.upgrade import current_revision, head_revision
    from toolkit.results.store import ResultsStore
    from toolkit.search.pareto import OPTUNA_SCHEMA, study_storage

    store = ResultsStore(postgres_url)  # edgeloop's schema first, at its head revision
    study = optuna.create_study(
        storage=study_storage(postgres_url), study_name="edgeloop-x", directions=["maximize"]
    )
    study.tell(study.ask(), 1.0)

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_name IN ('trials', 'studies', 'alembic_version')"
                )
            ).all()
            revisions = conn.execute(text("SELECT version_num FROM public.alembic_version")).all()
        assert ("public", "trials") in tables and (OPTUNA_SCHEMA, "trials") in tables
        assert (OPTUNA_SCHEMA, "studies") in tables and ("public", "studies") not in tables
        assert [r[0] for r in revisions] == [head_revision()]  # ours, untouched by Optuna's
        assert current_revision(store.engine) == head_revision()
        loaded = optuna.load_study(study_name="edgeloop-x", storage=study_storage(postgres_url))
        assert [t.values for t in loaded.trials] == [[1.0]]
    finally:
        engine.dispose()
