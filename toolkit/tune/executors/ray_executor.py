"""Tuning on a Ray cluster: candidate builds are Ray tasks, measurements go through device actors.

* Builds (prune, fine-tune, convert, host accuracy) run as `build_candidate` tasks anywhere in
  the cluster, with `num_gpus=1` when a recipe step asks for `device: cuda`. A worker that dies
  mid-build is replaced and the task run again (`BUILD_RETRIES`); nothing is measured until a
  build has come back, so a retried build is never measured twice.
* The base model and the dataset go to the object store once; the user's model file's folder
  travels as the job's `working_dir` (so a model file's own imports work on every node).
* An artifact comes back as bytes with its sha256, checked, and lands in this host's build
  cache exactly where a local build would, so the run's records look the same either way.
* Each device is measured through one named actor (`device_actor`), shared cluster-wide.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from toolkit.devices.profile import DeviceProfile
from toolkit.errors import ConfigError, ExportError
from toolkit.search.base import Candidate
from toolkit.transport.credentials import AgentCredentials
from toolkit.tune.artifacts import intact, read_json
from toolkit.tune.build import BUILD_FILE, Build, Builder
from toolkit.tune.executors.device_actor import (
    NAMESPACE,
    DeviceActor,
    RayDeviceClient,
    actor_name,
)
from toolkit.tune.measure import Device, check_distinct_ids

BUILD_RETRIES = 3  # a build whose worker died is run again this many times


class RayExecutor:
    """Runs a tuning run's builds on Ray and its measurements through device actors.

    Args:
        address: The cluster ("host:6379", "ray://host:10001"); None: $RAY_ADDRESS, else a
            Ray instance started for this run on this host.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None) -> None:
        self.address = address
        self._refs: tuple[Any, Any] = (None, None)

    def start(self, model_spec: str, data_spec: Optional[str]) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "tune --executor ray: Ray is not installed; pip install 'edgeloop[cluster]'"
            ) from None
        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(
                address=self.address,
                namespace=NAMESPACE,
                runtime_env=job_runtime_env(model_spec),
                log_to_driver=False,
                logging_level="ERROR",
                configure_logging=False,
            )
        except ConnectionError as exc:
            raise ConfigError(
                f"tune --ray-address {self.address}: no Ray cluster there "
                f"({str(exc).splitlines()[0]})"
            ) from None

    @contextmanager
    def open_devices(self, specs: Sequence[str]) -> Iterator[list[Device]]:
        """Opens each device here (to learn its id, resolve its credentials, and keep a local
        agent or tunnel up) and gets its actor, ready; loopback devices' actors are pinned to
        this node."""
        from toolkit.devices.connect import open_device, resolve_profile

        with ExitStack() as stack:
            devices = []
            for spec in specs:
                profile = resolve_profile(spec)
                client = stack.enter_context(open_device(profile))
                facts = client.info()
                target, credentials = actor_target(profile, client)
                address = getattr(client, "address", "") or profile.name
                proxy = open_actor(target, credentials, facts.device_id, address, _pinned(profile))
                stack.callback(proxy.close)
                devices.append(Device(profile.name, profile, proxy, facts.device_id))
            check_distinct_ids(devices)
            yield devices

    def builder(
        self,
        module: Any,
        input_shape: tuple[int, ...],
        data: Any,
        db: Any,
        log: Optional[Callable[[str], None]],
        seed: int,
    ) -> RayBuilder:
        import ray

        self._refs = (ray.put(module), ray.put(data))
        return RayBuilder(
            module,
            input_shape,
            data,
            db,
            log=log,
            seed=seed,
            refs=self._refs,
            user_modules=user_modules(module),
        )

    def prefetch(self, builder: Any, candidates: Sequence[Candidate]) -> None:
        builder.prefetch(candidates)

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


class RayBuilder(Builder):
    """A `Builder` whose missing builds are made by `build_candidate` tasks on the cluster.

    Args:
        refs: Object refs of the base module and the dataset (put once).
        user_modules: The user's model files a worker imports first (`user_modules()`).
        (the rest as `Builder`)
    """

    def __init__(
        self, *args: Any, refs: tuple[Any, Any], user_modules: list[tuple[str, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.refs = refs
        self.user_modules = user_modules
        self._pending: dict[str, Any] = {}

    def prefetch(self, candidates: Sequence[Candidate]) -> None:
        """Submits every candidate not built yet; `build` collects them in any order."""
        for candidate in candidates:
            key = candidate.recipe_key
            if key in self._pending:
                continue
            stored = self.db.build(key)
            cached = read_json(self._folder(candidate.recipe) / BUILD_FILE)
            if (stored and intact(stored)) or (cached and intact(cached)):
                continue
            self._pending[key] = self._submit(candidate)

    def _submit(self, candidate: Candidate) -> Any:
        import ray

        task = ray.remote(build_candidate).options(
            num_cpus=1,
            num_gpus=gpus_for(candidate.recipe),
            max_retries=BUILD_RETRIES,
            retry_exceptions=False,
            name="build_candidate",
        )
        return task.remote(
            list(self.refs), self.user_modules, self.input_shape, self.seed, candidate
        )

    def _make(self, candidate: Candidate, folder: Path) -> Build:
        import ray

        ref = self._pending.pop(candidate.recipe_key, None) or self._submit(candidate)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (
                cause if isinstance(cause, Exception) else ExportError(str(exc).splitlines()[0])
            ) from None
        return _land(reply, folder)


def _land(reply: dict[str, Any], folder: Path) -> Build:
    """Checks the artifact's bytes against its sha256 and writes the build into `folder`
    atomically (as `Builder._make` does); a build already there is kept."""
    record, blob = dict(reply["build"]), reply["blob"]
    got = hashlib.sha256(blob).hexdigest()
    if got != record["sha256"]:
        raise ExportError(
            f"artifact {reply['name']} from {reply['host']}: received sha256 "
            f"{got[:12]}, the build says {record['sha256'][:12]}"
        )
    theirs = read_json(folder / BUILD_FILE)
    if theirs is not None and intact(theirs):  # e.g. the worker shares this host's cache
        return Build(**theirs)
    scratch = folder.with_name(f".{folder.name}.{os.getpid()}.ray.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / reply["name"]).write_bytes(blob)
    record["artifact"] = str(folder / reply["name"])
    (scratch / BUILD_FILE).write_text(json.dumps(record, indent=2))
    try:
        os.replace(scratch, folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        theirs = read_json(folder / BUILD_FILE)
        if theirs is not None and intact(theirs):
            return Build(**theirs)
        raise
    return Build(**record)


class _NoRunDB:
    """What a worker's Builder records builds in: nothing (the driver records them)."""

    def build(self, recipe_key: str) -> None:
        return None

    def put_build(self, recipe_key: str, record: dict[str, Any]) -> None:
        return None


_WORKER_BUILDERS: dict[str, Builder] = {}  # per worker process: keeps continuable models


def build_candidate(
    refs: list[Any],
    modules: list[tuple[str, str]],
    input_shape: tuple[int, ...],
    seed: int,
    candidate: Candidate,
) -> dict[str, Any]:
    """A Ray task: builds one candidate on this worker (its own build cache) and returns the
    build record, the artifact's name and its bytes."""
    import ray

    key = refs[0].hex()
    builder = _WORKER_BUILDERS.get(key)
    if builder is None:
        import torch

        torch.set_num_threads(
            max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        )
        _import_user_modules(modules)  # before the model that needs them is unpickled
        module, data = ray.get(refs)
        builder = Builder(module, tuple(input_shape), data, _NoRunDB(), seed=seed)
        _WORKER_BUILDERS.clear()
        _WORKER_BUILDERS[key] = builder
    built = builder.build(candidate)
    path = Path(built.artifact)
    return {
        "build": asdict(built),
        "name": path.name,
        "blob": path.read_bytes(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def gpus_for(recipe: list[dict[str, Any]]) -> int:
    """1 when a step asks for CUDA (`finetune: {device: cuda}`), else 0."""
    for step in recipe:
        for params in step.values():
            if isinstance(params, dict) and str(params.get("device", "")).startswith("cuda"):
                return 1
    return 0


def job_runtime_env(model_spec: str) -> dict[str, Any]:
    """The job's runtime environment: the folder of a `file.py:function` model travels as the
    working directory; a built-in or installed model needs nothing."""
    target = model_spec.rpartition(":")[0]
    if target.endswith(".py") and Path(target).expanduser().is_file():
        folder = Path(target).expanduser().resolve().parent
        return {"working_dir": str(folder), "excludes": [".git", "__pycache__"]}
    return {}


def user_modules(module: Any) -> list[tuple[str, str]]:
    """(module name, file relative to the model's folder) of the user's model files whose
    classes the model uses (`toolkit.models.folder.recorded_modules`).

    `file.py:function` models are imported under a package name only this process has
    (`edgeloop_user_*`); a worker imports the same files, which travel as the job's working
    directory, under the same names before it unpickles the model.
    """
    from toolkit.models.folder import recorded_modules

    return recorded_modules(module)


def _import_user_modules(modules: list[tuple[str, str]]) -> None:
    """In a worker: imports each user file from the job's working directory (the cwd)."""
    from toolkit.models.folder import import_recorded

    import_recorded(modules, Path.cwd())


def actor_target(
    profile: DeviceProfile, client: Any
) -> tuple[DeviceProfile, Optional[AgentCredentials]]:
    """What a device's actor opens, from the driver's open client: the agent the driver
    reached (its address, an attached `target`) with the credentials the driver's client
    presented, as data; an SSH one-shot device (no agent to reach) by its profile.

    Raises:
        ConfigError: a serial DUT on this host (its actor would open the port a second time,
            beside the driver's open client, and the two would talk over each other).
    """
    from toolkit.transport.grpc_client import DeviceClient
    from toolkit.transport.serial_dut import GatewayTargetClient

    if profile.transport == "serial":
        raise ConfigError(
            f"tune --executor ray: device {profile.name} is a serial DUT on this host; measure "
            "it with --executor local, or through an agent on its gateway (profile `target`)"
        )

    agent = client.client if isinstance(client, GatewayTargetClient) else client
    if not isinstance(agent, DeviceClient):
        return profile, None
    reached = DeviceProfile(name=profile.name, address=agent.address, target=profile.target)
    return reached, agent.credentials


def open_actor(
    target: DeviceProfile,
    credentials: Optional[AgentCredentials],
    device_id: str,
    address: str,
    pin: bool = False,
) -> RayDeviceClient:
    """The device's actor (created, or the one another driver made), once it has opened the
    device; named by the agent's id and `address`, on this node when `pin` or the device is
    on loopback.

    Raises:
        The actor's own error when it cannot open the device (the agent's words: a wrong
        token, a refused certificate), after ending that actor so its name is free again.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {
        "name": actor_name(device_id, address),
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
        "num_cpus": 0,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if pin or _is_loopback(address):
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
    actor = ray.remote(DeviceActor).options(**options).remote(target, credentials)
    proxy = RayDeviceClient(actor, target.name, address, None)
    try:
        proxy.info(refresh=True)
    except BaseException:
        proxy.close()
        ray.kill(actor, no_restart=True)
        raise
    return proxy


def _pinned(profile: DeviceProfile) -> bool:
    """Whether the actor must live on this node: the device is reached through something
    this process holds open (a local agent, an SSH tunnel, an SSH one-shot session)."""
    return not (profile.transport == "grpc" and profile.tunnel is None)


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
