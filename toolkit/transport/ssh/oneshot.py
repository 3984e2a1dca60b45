"""Transport `ssh`: profile without a long-running agent, for devices that only allow SSH.

The model goes to the device by SFTP (skipped when a file with its sha256 is already there),
then `python -m device_agent bench MODEL --json` runs over SSH and prints the same
BenchmarkResult that gRPC returns; it becomes the same `Measurement`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

from google.protobuf import json_format

from device_agent.protocol import PROTOCOL_VERSION
from device_agent.protocol import edgeloop_pb2 as pb
from toolkit.devices.info import DeviceInfo
from toolkit.devices.profile import DeviceProfile, SshConfig
from toolkit.errors import AgentError, ConfigError, ModelFileError, ProtocolMismatchError
from toolkit.measurement import BenchmarkOptions, Measurement
from toolkit.transport.model_file import file_sha256, model_format
from toolkit.transport.ssh.connection import SshConnection, connect

SHA_SCRIPT = (
    "import hashlib, os, sys; p = sys.argv[1]; h = hashlib.sha256()\n"
    "if os.path.isfile(p):\n"
    "    with open(p, 'rb') as f:\n"
    "        [h.update(b) for b in iter(lambda: f.read(1 << 20), b'')]\n"
    "    print(h.hexdigest())"
)
class SshOneShotClient:
    """The `ssh` transport: the subset of DeviceClient that needs no running agent.

    Args:
        config: The profile's `ssh` section; models go to `agent_dir/oneshot/`.
        name: How the device is called in messages (profile name).
        accept_new_host_key: Record an unknown host key instead of failing.
    """

    def __init__(self, config: SshConfig, name: str = "",
                 accept_new_host_key: bool = False) -> None:
        self.conn: SshConnection = connect(config, accept_new_host_key=accept_new_host_key)
        self.name = name or config.host
        self.address = f"ssh://{self.conn.endpoint}"
        try:
            self.agent_dir = self.conn.remote_path(config.agent_dir)
            venv = f"{self.agent_dir}/venv/bin/python"
            found = self.conn.run(f"test -x {shlex.quote(venv)} && echo yes || true").stdout
            self.python = venv if found.strip() == "yes" else config.python
            self.models_dir = f"{self.agent_dir}/oneshot"
            self._info: Optional[DeviceInfo] = None
            self.info()
        except BaseException:
            self.conn.close()
            raise

    def _python(self, args: str, timeout_s: float = 120.0, check: bool = True):  # noqa: ANN202
        return self.conn.run(f"{shlex.quote(self.python)} {args}", timeout_s=timeout_s,
                             check=check)

    def info(self, refresh: bool = False) -> DeviceInfo:
        """The device's GetInfo record, built by the agent's code on the device."""
        if self._info is None or refresh:
            cache = shlex.quote(self.agent_dir + "/cache")
            out = self._python(f"-m device_agent info --json --cache-dir {cache}").stdout
            msg = json_format.Parse(_last_json_line(out, self.name), pb.DeviceInfo())
            if msg.protocol_version != PROTOCOL_VERSION:
                raise ProtocolMismatchError(
                    f"device {self.name} ({self.address}) has agent protocol "
                    f"v{msg.protocol_version}, this host speaks v{PROTOCOL_VERSION}: "
                    "bootstrap it again to upgrade"
                )
            self._info = DeviceInfo.from_proto(msg, self.address)
        return self._info

    def _remote_sha(self, remote: str) -> str:
        out = self._python(f"-c {shlex.quote(SHA_SCRIPT)} {shlex.quote(remote)}").stdout
        return out.strip()

    def has_model(self, sha256: str) -> bool:
        """True when the device holds a file with this sha256 in its one-shot folder."""
        return self._remote_sha(f"{self.models_dir}/{sha256}") == sha256

    def push(self, path: Union[str, Path], name: Optional[str] = None) -> str:
        """Copies a model by SFTP unless the device holds its sha256; returns the sha256."""
        path = Path(path)
        model_format(path)  # ModelFileError on a missing or foreign file
        sha = file_sha256(path)
        if self.has_model(sha):
            return sha
        remote = f"{self.models_dir}/{sha}"
        self.conn.run(f"mkdir -p {shlex.quote(self.models_dir)}")
        self.conn.sftp.put(str(path), remote + ".partial")
        self.conn.sftp.posix_rename(remote + ".partial", remote)
        return sha

    def benchmark(self, model: Union[str, Path], options: Optional[BenchmarkOptions] = None,
                  on_progress: Optional[Callable[[pb.Progress], None]] = None,
                  name: str = "") -> Measurement:
        """Benchmarks a model file (pushed if needed) with the agent's one-shot command.

        A failure on the device comes back as a Measurement with ok=False, as over gRPC.
        `on_progress` is accepted for symmetry; the one-shot command reports no progress.
        """
        text = str(model)
        if Path(text).is_file():
            sha, display = self.push(Path(text)), Path(text).name
        elif len(text) == 64 and self.has_model(text):
            sha, display = text, text[:12]
        else:
            raise ModelFileError(f"{model}: no such model file (nor a sha256 held by {self.name})")
        options = options or BenchmarkOptions()
        args = f"-m device_agent bench {shlex.quote(f'{self.models_dir}/{sha}')} --json "
        wire = json_format.MessageToJson(options.to_proto(), indent=None)
        args += f"--options-json {shlex.quote(wire)}"
        timeout = (options.timeout_seconds or 300.0) + 120.0
        result = self._python(args, timeout_s=timeout, check=False)
        if result.exit_status not in (0, 1):  # 1: the device reports a failed benchmark
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-2:]
            raise AgentError(f"device {self.name}: bench exited {result.exit_status}: "
                             f"{' | '.join(tail)}")
        msg = json_format.Parse(_last_json_line(result.stdout, self.name), pb.BenchmarkResult())
        if msg.sha256 and msg.sha256 != sha:
            raise AgentError(f"device {self.name}: benchmarked sha {msg.sha256[:12]}, "
                             f"expected {sha[:12]} (file changed on the device?)")
        return Measurement.from_proto(msg, self.info(), model_name=name or display,
                                      requested=options)

    def infer(self, *_args: Any, **_kwargs: Any) -> list:
        """Not available: Infer needs a running agent."""
        raise AgentError(
            f"device {self.name}: transport ssh runs one-shot benchmarks only; Infer needs the "
            "agent (bootstrap it and use `tunnel: ssh`)"
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SshOneShotClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_json_line(stdout: str, device: str) -> str:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                json.loads(line)
            except ValueError:
                break
            return line
    raise AgentError(f"device {device}: the agent printed no JSON record: {stdout[-200:]!r}")


@contextlib.contextmanager
def open_oneshot_client(profile: DeviceProfile,
                        accept_new_host_key: bool = False) -> Iterator[SshOneShotClient]:
    """Yields the `ssh` transport's client for a profile with an `ssh` section."""
    if profile.ssh is None:
        raise ConfigError(
            f"{profile.source or profile.name}: ssh: transport ssh needs an ssh section")
    with SshOneShotClient(profile.ssh, name=profile.name,
                          accept_new_host_key=accept_new_host_key) as client:
        yield client
