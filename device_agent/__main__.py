"""`python -m device_agent serve|bench|info`: the agent's own command line (no click, few deps)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device_agent import __version__

GRPC_FORK_SUPPORT_ENV = "GRPC_ENABLE_FORK_SUPPORT"


def _serve(args: argparse.Namespace) -> int:
    import os

    # Off before gRPC is imported. The agent forks only to exec a child, and under --run-as
    # Python forks with fork(), not vfork(), so gRPC's fork handlers ran in each new child and
    # crashed some (SIGSEGV) before they could drop root or exec (bench/bench_run_as.py).
    os.environ[GRPC_FORK_SUPPORT_ENV] = "0"
    from device_agent.server.app import AuthConfigError, ServeConfig, serve

    if args.power_command:
        os.environ["EDGELOOP_POWER_COMMAND"] = args.power_command
    config = ServeConfig(
        host=args.host,
        port=args.port,
        cache_dir=Path(args.cache_dir),
        max_model_mb=args.max_model_mb,
        quota_mb=args.quota_mb,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        device_id=args.device_id,
        token_file=args.token_file,
        max_pushes=args.max_pushes,
        push_idle_s=args.push_idle_s,
        run_as=args.run_as,
        child_memory_mb=args.child_memory_mb,
        child_open_files=args.child_open_files,
        idle_exit_s=args.idle_exit_s,
        serial_duts=tuple(args.serial_dut),
    )
    from device_agent.measure.limits import ChildLimitsError

    try:
        return serve(config, watch_parent=args.exit_with_parent)
    except (AuthConfigError, ChildLimitsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _bench(args: argparse.Namespace) -> int:
    """One-shot benchmark of a model file, for the SSH transport: prints the BenchmarkResult."""
    from google.protobuf import json_format

    from device_agent.measure.runner import benchmark_in_child
    from device_agent.protocol import edgeloop_pb2 as pb
    from device_agent.protocol.formats import detect_format

    path = Path(args.model)
    if not path.is_file():
        print(f"error: {path}: no such model file", file=sys.stderr)
        return 2
    with path.open("rb") as f:
        fmt = detect_format(f.read(16))
    if args.options_json:
        try:
            options = json_format.Parse(args.options_json, pb.BenchmarkOptions())
        except json_format.ParseError as exc:
            print(f"error: --options-json: {exc}", file=sys.stderr)
            return 2
    else:
        options = pb.BenchmarkOptions(
            runtime=args.runtime,
            threads=args.threads,
            warmup_runs=args.warmup,
            min_runs=args.runs,
            min_seconds=args.min_seconds,
            timeout_seconds=args.timeout,
            power_sensor=args.power_sensor,
            find_tflm_arena=args.find_arena,
            cooldown_s=args.cooldown_s,
            max_start_temp_c=args.max_start_temp_c,
            start_temp_timeout_s=args.start_temp_timeout_s,
            cpu_affinity=args.cpu_affinity,
        )
    if args.power_command:
        import os

        os.environ["EDGELOOP_POWER_COMMAND"] = args.power_command

    def progress(p: pb.Progress) -> None:
        if not args.json:
            print(f"{p.phase} {p.done}/{p.total}", file=sys.stderr)

    result = benchmark_in_child(str(path), fmt, options, on_progress=progress)
    import hashlib

    result.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    if args.json:
        print(json_format.MessageToJson(result, indent=None))
    else:
        print(result)
    return 0 if result.error_kind == pb.ERROR_KIND_NONE else 1


def _cpu_list(text: str) -> list[int]:
    """`--cpu-affinity`: taskset -c syntax, parsed by `device_state.parse_cpu_list`."""
    from device_agent.measure.device_state import parse_cpu_list

    try:
        return list(parse_cpu_list(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_spec(text: str) -> str:
    """`--serial-dut PORT[:BAUD]`, checked by `serial_dut.link.parse_port_spec`."""
    from device_agent.serial_dut.link import parse_port_spec

    try:
        parse_port_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _info(args: argparse.Namespace) -> int:
    from device_agent.runtimes.registry import runtime_statuses
    from device_agent.sensors.registry import sensor_infos

    if args.json:
        from google.protobuf import json_format

        from device_agent.cache.model_cache import ModelCache
        from device_agent.server.info import build_device_info

        cache = ModelCache(Path(args.cache_dir).expanduser())
        print(json_format.MessageToJson(build_device_info(cache, args.device_id), indent=None))
        return 0

    print(
        json.dumps(
            {
                "agent_version": __version__,
                "runtimes": [
                    s.__dict__ | {"accelerators": list(s.accelerators)} for s in runtime_statuses()
                ],
                "sensors": [s.__dict__ for s in sensor_infos()],
            },
            indent=2,
            default=str,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_agent", description="edgeloop device agent"
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the gRPC protocol")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=50051, help="port (0: any free port)")
    s.add_argument("--cache-dir", default="~/.cache/edgeloop-agent", help="model cache folder")
    s.add_argument("--max-model-mb", type=int, default=512, help="largest model accepted (MB)")
    s.add_argument("--quota-mb", type=int, default=4096, help="cache quota (MB)")
    s.add_argument(
        "--tls-cert", type=Path, help="server certificate (PEM); required beyond loopback"
    )
    s.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    s.add_argument(
        "--client-ca", type=Path, help="CA that client certificates must chain to (mTLS)"
    )
    s.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token clients must send (read once; not readable by "
        "other users); default: $EDGELOOP_AGENT_TOKEN. Beyond loopback: this or --client-ca",
    )
    s.add_argument(
        "--max-pushes", type=int, default=4, help="model pushes in progress at once (default 4)"
    )
    s.add_argument(
        "--push-idle-s",
        type=float,
        default=20.0,
        help="cancel a push that sends no chunk for this many seconds (default 20)",
    )
    s.add_argument(
        "--run-as",
        default="",
        metavar="USER",
        help="start benchmark and Infer children as this unprivileged user (agent must be root)",
    )
    s.add_argument(
        "--child-memory-mb",
        type=int,
        default=None,
        help="address-space limit of each child in MB (0: none; default 8192, none when a CUDA "
        "driver is present: CUDA reserves tens of GB of virtual memory)",
    )
    s.add_argument(
        "--child-open-files", type=int, default=256, help="open-file limit of each child"
    )
    s.add_argument(
        "--device-id", default="", help="device id to report (default: hostname + machine id)"
    )
    s.add_argument(
        "--power-command", default="", help="command printing watts, for the 'command' sensor"
    )
    s.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started the agent exits (local device)",
    )
    s.add_argument(
        "--idle-exit-s",
        type=float,
        default=0.0,
        help="exit after this many seconds with no call and no benchmark (default 0: never)",
    )
    s.add_argument(
        "--serial-dut",
        action="append",
        default=[],
        type=_port_spec,
        metavar="PORT[:BAUD]",
        help="a microcontroller on this serial port speaking the MLPerf Tiny DUT protocol "
        "(default baud 115200); repeatable. GetInfo lists it as attached device serial:PORT",
    )
    s.set_defaults(func=_serve)

    b = sub.add_parser("bench", help="benchmark one model file once and print the result")
    b.add_argument("model")
    b.add_argument("--runtime", default="")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--warmup", type=int, default=0)
    b.add_argument("--runs", type=int, default=0)
    b.add_argument("--min-seconds", type=float, default=0.0)
    b.add_argument("--timeout", type=float, default=0.0)
    b.add_argument("--power-sensor", default="")
    b.add_argument(
        "--power-command", default="", help="command printing watts, for the 'command' sensor"
    )
    b.add_argument("--find-arena", action="store_true")
    b.add_argument(
        "--cooldown-s", type=float, default=0.0, help="idle this long before loading the model"
    )
    b.add_argument(
        "--max-start-temp-c",
        type=float,
        default=0.0,
        help="first wait until the device is at or below this temperature (0: no wait)",
    )
    b.add_argument(
        "--start-temp-timeout-s",
        type=float,
        default=0.0,
        help="stop waiting for --max-start-temp-c after this long and measure anyway, "
        "with a warning (0: the default)",
    )
    b.add_argument(
        "--cpu-affinity",
        type=_cpu_list,
        default=[],
        metavar="CPUS",
        help="pin the benchmark process to these CPUs, e.g. 0,2-3 (default: no pinning)",
    )
    b.add_argument(
        "--options-json", default="", help="BenchmarkOptions as JSON (overrides the flags)"
    )
    b.add_argument("--json", action="store_true", help="print the result as one JSON line")
    b.set_defaults(func=_bench)

    i = sub.add_parser("info", help="print runtimes and sensors available here")
    i.add_argument("--json", action="store_true", help="print the full GetInfo record as JSON")
    i.add_argument("--cache-dir", default="~/.cache/edgeloop-agent", help="model cache folder")
    i.add_argument("--device-id", default="", help="device id to report")
    i.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
