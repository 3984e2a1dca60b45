"""Starts the agent's gRPC server (grpc.aio): loopback by default; beyond it, TLS and client
authentication (mutual TLS or a bearer token) are required."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from device_agent.cache.model_cache import ModelCache
from device_agent.measure.limits import DEFAULT_OPEN_FILES, ChildLimits
from device_agent.measure.limits import configure as configure_child_limits
from device_agent.server.auth import (  # noqa: F401  (re-exported: the CLI catches them)
    TOKEN_ENV,
    AuthConfigError,
    InsecureBindError,
    TokenInterceptor,
    check_listen_policy,
    is_loopback,
    load_token,
)
from device_agent.server.handlers import add_agent_service
from device_agent.server.heap import keep_freed_buffers
from device_agent.server.idle import ActivityInterceptor, stop_when_idle
from device_agent.server.service import MAX_PUSHES, PUSH_IDLE_S, DeviceAgentService

MAX_MESSAGE_BYTES = 64 * 2**20
READY_PREFIX = "edgeloop-agent listening on "
AUTH_PREFIX = "edgeloop-agent auth: "
KEEPALIVE_OPTIONS = [
    # Ping each client every 5 s and drop it when a ping goes unanswered for 5 s: a dead
    # link is found within ~10 s (the issue asks for 15 s).
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Let clients ping every ~5 s, with or without calls in flight, without a GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 4_000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class ServeConfig:
    """How the agent listens and where it keeps models."""

    host: str = "127.0.0.1"
    port: int = 50051
    cache_dir: Path = Path("~/.cache/edgeloop-agent")
    max_model_mb: int = 512
    quota_mb: int = 4096
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    client_ca: Optional[Path] = None  # set: clients must present a certificate signed by it (mTLS)
    device_id: str = ""
    token_file: Optional[Path] = None  # else $EDGELOOP_AGENT_TOKEN; required beyond loopback
    max_pushes: int = MAX_PUSHES  # pushes in progress at once; more are refused
    push_idle_s: float = PUSH_IDLE_S  # a push silent this long between chunks is cancelled
    run_as: str = ""  # children (benchmark, Infer) run as this user; the agent must be root
    child_memory_mb: Optional[int] = None  # children's address space; 0 = none; None = default
    child_open_files: int = DEFAULT_OPEN_FILES  # children's open-file limit
    idle_exit_s: float = 0.0  # > 0: exit after this long with no call and no benchmark
    serial_duts: tuple[str, ...] = ()  # "PORT[:BAUD]" of DUTs on this gateway's serial ports


async def build_server(config: ServeConfig) -> tuple[grpc.aio.Server, int, DeviceAgentService, str]:
    """Checks the listening policy, creates and starts the server (inside a running loop).

    Returns:
        The server, the bound port, the servicer and the one-line description of the
        authentication in force (never the token).

    Raises:
        AuthConfigError: unsafe or unusable listening/authentication settings (one line).
        OSError: the address cannot be bound.
    """
    secure = config.tls_cert is not None and config.tls_key is not None
    if (config.tls_cert is None) != (config.tls_key is None):
        raise AuthConfigError("--tls-cert and --tls-key go together: pass both")
    if config.client_ca is not None and not secure:
        raise AuthConfigError("--client-ca needs TLS: pass --tls-cert and --tls-key too")
    token = load_token(config.token_file)
    auth = check_listen_policy(config.host, secure, config.client_ca, token)
    cache = ModelCache(
        Path(config.cache_dir).expanduser(),
        max_model_bytes=config.max_model_mb * 2**20,
        quota_bytes=config.quota_mb * 2**20,
    )
    cache.remove_orphans()
    keep_freed_buffers()  # pushes reuse their message buffers' pages (glibc only)
    if config.serial_duts:
        from device_agent.serial_dut import attached

        attached.configure(list(config.serial_duts))  # ValueError: a malformed PORT[:BAUD]
    limits = ChildLimits(
        address_space_mb=config.child_memory_mb,
        open_files=config.child_open_files,
        run_as=config.run_as,
    )
    limits.grant_read(cache.models_dir)
    configure_child_limits(limits)  # before any child starts (the warm-up below)
    service = DeviceAgentService(
        cache,
        device_id=config.device_id,
        max_pushes=config.max_pushes,
        push_idle_s=config.push_idle_s,
    )
    # After the token check: a caller without the token does not keep an idle agent alive.
    service.activity = ActivityInterceptor() if config.idle_exit_s > 0 else None
    interceptors = [TokenInterceptor(token)] if token else []
    server = grpc.aio.server(
        interceptors=interceptors + ([service.activity] if service.activity else []),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *KEEPALIVE_OPTIONS,
        ],
    )
    add_agent_service(service, server)
    address = f"{config.host}:{config.port}"
    if secure:
        root = Path(config.client_ca).read_bytes() if config.client_ca else None
        creds = grpc.ssl_server_credentials(
            [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
            root_certificates=root,
            require_client_auth=root is not None,
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    await server.start()
    from device_agent.measure.runner import hold_benchmarks

    hold_benchmarks()  # until the warm-up's own processes are done (see _warm_up)
    threading.Thread(target=_warm_up, args=(service,), daemon=True).start()
    return server, port, service, auth


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()


def _warm_up(service: DeviceAgentService) -> None:
    """Starts the benchmark spare and the Infer worker and probes the runtimes, in the
    background, so the first requests do not pay for interpreter start-ups and imports."""
    from device_agent.measure.runner import prime_spare_worker, release_benchmarks
    from device_agent.runtimes.registry import runtime_statuses

    try:
        prime_spare_worker()
        service.infer_pool.start()
        runtime_statuses()  # caches the one-off torch CUDA probe GetInfo reports
    finally:
        release_benchmarks()  # nothing of the start-up runs beside a benchmark


def serve(config: ServeConfig, watch_parent: bool = False) -> int:
    """Runs the agent until SIGINT/SIGTERM; prints the authentication in force, then one
    ready line with the bound address.

    Args:
        watch_parent: also stop when the process that started the agent is gone (the host's
            local device: a host killed with -9 must not leave its agent behind).
    """
    return asyncio.run(_serve(config, watch_parent))


async def _serve(config: ServeConfig, watch_parent: bool) -> int:
    server, port, service, auth = await build_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if watch_parent:
        watcher = loop.create_task(_stop_when_orphaned(os.getppid(), stop))
    if service.activity is not None:
        idle = loop.create_task(stop_when_idle(
            config.idle_exit_s, service.activity,
            lambda: service.bench_queue.waiting > 0, stop))
    print(f"{AUTH_PREFIX}{auth}", flush=True)
    print(f"{READY_PREFIX}{config.host}:{port}", flush=True)
    await stop.wait()
    if watch_parent:
        watcher.cancel()
    if service.activity is not None:
        idle.cancel()
    service.bench_queue.close()  # a running child is killed; queued jobs end
    await server.stop(grace=2)
    service.close()
    sys.stdout.flush()
    return 0
