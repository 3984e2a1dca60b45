"""`edgeloop tune --executor ray` on a REAL Ray cluster started by the test (`ray start`: a
head and a second node, one CPU each, separate temp folders) against two real local agents;
and README's tune on the default device (`--device local`, the CLI's long-lived agent with its
token) with a Ray that the run starts for itself.

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
from tests.fixtures_tls import self_signed_cert
from toolkit.errors import AgentError, AgentUnreachableError
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


def _rows_per_measurement(run_id: str) -> dict[tuple[str, str, str], int]:
    """Rows per (artifact, device, benchmark options): a search may measure one artifact with
    several thread counts, each once."""
    from toolkit.results.store import ResultsStore

    rows = ResultsStore().query(run_id=run_id)
    return rows.groupby(["model_sha256", "device_id", "options_json"]).size().to_dict()


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


def _kill_trees_under(folder: Path) -> None:
    """Kills the processes whose command line names `folder` (a Ray the test's command started
    there) and everything they started; no other process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = _cmdlines()
        roots = {pid for pid, (_, cmd) in procs.items() if str(folder) in cmd}
        for pid in _tree(roots, procs):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0 if sig == signal.SIGTERM else 0)


def _readme_tune(out: Path, device: str, *more: str) -> list[str]:
    """README's tune command (`edgeloop tune digits-mlp --data digits --device local
    --budget-ratio latency_p90=0.7 --max-accuracy-drop 1.5 --strategy pareto --trials 12 --out
    runs`) with `--executor ray`, TRIALS trials and a JSON result."""
    return [
        sys.executable, "-m", "toolkit.cli.main", "tune", "digits-mlp", "--data", "digits",
        "--device", device, "--budget-ratio", "latency_p90=0.7", "--max-accuracy-drop", "1.5",
        "--strategy", "pareto", "--trials", str(TRIALS), "--out", str(out),
        "--executor", "ray", "--json", *more,
    ]  # fmt: skip


def _files_holding(folder: Path, secret: bytes) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def test_readme_tune_on_ray_measures_the_local_device_through_its_actor_with_the_agents_token(
    tmp_path,
):
    """No cluster named: Ray starts for the run on this host. `--device local` is the CLI's
    long-lived agent, whose token lives in a 0600 file only the driver reads; the device actor
    gets the token from the driver as data, and it is written nowhere else (Ray's folder)."""
    from toolkit.transport.long_lived import read_state

    ray_tmp = Path(tempfile.mkdtemp(prefix="elrl", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDGELOOP_LOCAL_AGENT", "RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(HOME=str(tmp_path / "user"), RAY_TMPDIR=str(ray_tmp))  # Ray's files go there
    try:
        done = subprocess.run(_readme_tune(tmp_path / "runs", "local"), env=env,
                              capture_output=True, text=True, timeout=900)
        state = read_state()
        assert done.returncode in (0, 3), done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert state is not None, "the run used no long-lived local agent"
        token_file = Path(state["token_file"])
        assert token_file.stat().st_mode & 0o077 == 0  # only the driver's user can read it
        token = token_file.read_text().strip().encode()

        assert result["trials"] == TRIALS
        counts = _rows_per_measurement(result["run_id"])
        assert counts and set(counts.values()) == {1}
        assert {device for _, device, _ in counts} == {state["device_id"]}
        assert _files_holding(ray_tmp, b"DeviceActor"), "no device actor ran in this Ray"
        assert not _files_holding(ray_tmp, token)
        assert token.decode() not in done.stdout + done.stderr
        assert not _files_holding(tmp_path / "runs", token)
    finally:
        _kill_trees_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_tune_on_ray_reaches_an_mtls_agent_with_a_token_from_the_drivers_profile(
    cluster, tmp_path
):
    """A profile whose agent wants a client certificate and a token: its files are under the
    driver's home (`~/...`) and its token in the driver's environment; the cluster's actors
    have neither, so they measure only with what the driver hands them."""
    user = tmp_path / "user"
    (user / "certs").mkdir(parents=True)
    server_cert, server_key = self_signed_cert(tmp_path, [])
    client_folder = tmp_path / "client"
    client_folder.mkdir()
    client_cert, client_key = self_signed_cert(client_folder, [])
    shutil.copy(server_cert, user / "certs" / "agent-ca.pem")
    shutil.copy(client_cert, user / "certs" / "me.pem")
    shutil.copy(client_key, user / "certs" / "me.key")
    agent = AgentProcess(
        tmp_path / "cache",
        ("--device-id", "ray-mtls", "--tls-cert", str(server_cert), "--tls-key",
         str(server_key), "--client-ca", str(client_cert)),
        env={"EDGELOOP_AGENT_TOKEN": "mtls-s3cret"},
    )  # fmt: skip
    profile = tmp_path / "lab-board.yaml"
    profile.write_text(
        f"name: lab-board\naddress: {agent.address}\n"
        "tls: {ca_file: ~/certs/agent-ca.pem, cert_file: ~/certs/me.pem, "
        "key_file: ~/certs/me.key, token_env: LAB_BOARD_TOKEN}\n"
    )
    env = {**os.environ, "HOME": str(user), "LAB_BOARD_TOKEN": "mtls-s3cret"}
    try:
        done = subprocess.run(
            _readme_tune(tmp_path / "runs", str(profile), "--ray-address", cluster.address),
            env=env, capture_output=True, text=True, timeout=900,
        )
        assert done.returncode in (0, 3), done.stderr[-3000:]
        result = json.loads(done.stdout)
    finally:
        agent.stop()
    assert result["trials"] == TRIALS
    counts = _rows_per_measurement(result["run_id"])
    assert counts and set(counts.values()) == {1}
    assert {device for _, device, _ in counts} == {"ray-mtls"}
    assert "mtls-s3cret" not in done.stdout + done.stderr


def test_a_serial_dut_on_this_host_is_refused_before_ray_opens_its_port_twice():
    from toolkit.devices.profile import DeviceProfile, SerialConfig
    from toolkit.errors import ConfigError
    from toolkit.tune.executors.ray_executor import actor_target

    dut = DeviceProfile(name="dut-1", transport="serial", serial=SerialConfig("/dev/ttyACM0"))
    with pytest.raises(ConfigError, match="device dut-1 is a serial DUT on this host"):
        actor_target(dut, client=None)


@pytest.fixture()
def token_agent(tmp_path):
    agent = AgentProcess(tmp_path / "cache", ("--device-id", "ray-token"),
                         env={"EDGELOOP_AGENT_TOKEN": "right-token"})
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture()
def ray_driver(cluster):
    import ray

    ray.init(address=cluster.address, namespace="edgeloop", log_to_driver=False,
             logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


def test_an_actor_that_cannot_open_its_device_shows_the_agents_error(ray_driver, token_agent):
    from toolkit.devices.profile import DeviceProfile
    from toolkit.transport.credentials import AgentCredentials
    from toolkit.tune.executors.ray_executor import open_actor

    target = DeviceProfile(name="token-box", address=token_agent.address)
    with pytest.raises(AgentError, match="missing or wrong agent token") as caught:
        open_actor(target, AgentCredentials(token="wrong-token"), "ray-token", token_agent.address)
    assert "Ray actor is gone" not in str(caught.value)

    proxy = open_actor(
        target, AgentCredentials(token="right-token"), "ray-token", token_agent.address
    )
    try:
        assert proxy.info(refresh=True).device_id == "ray-token"
    finally:
        proxy.close()


def test_an_actor_whose_process_dies_says_how_it_died(ray_driver, token_agent):
    from toolkit.devices.profile import DeviceProfile
    from toolkit.transport.credentials import AgentCredentials
    from toolkit.tune.executors.ray_executor import open_actor

    target = DeviceProfile(name="token-box", address=token_agent.address)
    proxy = open_actor(target, AgentCredentials(token="right-token"), "ray-token-2",
                       token_agent.address)
    try:
        pid = ray_driver.get(proxy.actor.__ray_call__.remote(lambda actor: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(AgentUnreachableError, match="its Ray actor is gone: ") as caught:
            proxy.info(refresh=True)
    finally:
        proxy.close()
    assert "worker process has died" in str(caught.value)  # Ray's reason, not only "gone"
