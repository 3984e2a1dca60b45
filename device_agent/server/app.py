"""Starts the agent's gRPC server: loopback by default, TLS required beyond it."""

from __future__ import annotations

import hmac
import ipaddress
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from device_agent.cache.model_cache import ModelCache
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.server.service import DeviceAgentService

MAX_MESSAGE_BYTES = 64 * 2**20
READY_PREFIX = "edgeloop-agent listening on "
TOKEN_ENV = "EDGELOOP_AGENT_TOKEN"


class InsecureBindError(ValueError):
    """Asked to listen beyond loopback without TLS."""


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
    workers: int = 8


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls whose `authorization: Bearer <token>` metadata does not match."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong agent token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        if hmac.compare_digest(metadata.get("authorization", ""), self._expected):
            return continuation(handler_call_details)
        return self._deny


def build_server(config: ServeConfig) -> tuple[grpc.Server, int, DeviceAgentService]:
    """Creates and starts the server; returns it, the bound port and the servicer."""
    secure = config.tls_cert is not None and config.tls_key is not None
    if not is_loopback(config.host) and not secure:
        raise InsecureBindError(
            f"refusing to listen on {config.host} without TLS: pass --tls-cert and --tls-key "
            "(and --client-ca for mutual TLS), or listen on 127.0.0.1 and reach it through SSH"
        )
    cache = ModelCache(
        Path(config.cache_dir).expanduser(),
        max_model_bytes=config.max_model_mb * 2**20,
        quota_bytes=config.quota_mb * 2**20,
    )
    service = DeviceAgentService(cache, device_id=config.device_id)
    interceptors = []
    token = os.environ.get(TOKEN_ENV)
    if token:
        interceptors.append(_TokenInterceptor(token))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    rpc.add_DeviceAgentServicer_to_server(service, server)
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
    server.start()
    threading.Thread(target=_warm_up, args=(service,), daemon=True).start()
    return server, port, service


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def _warm_up(service: DeviceAgentService) -> None:
    """Starts the benchmark spare and the Infer worker and probes the runtimes, in the
    background, so the first requests do not pay for interpreter start-ups and imports."""
    from device_agent.measure.runner import prime_spare_worker
    from device_agent.runtimes.registry import runtime_statuses

    prime_spare_worker()
    service.infer_pool.start()
    runtime_statuses()  # caches the one-off torch CUDA probe GetInfo reports


def serve(config: ServeConfig, watch_parent: bool = False) -> int:
    """Runs the agent until SIGINT/SIGTERM; prints one ready line with the bound address.

    Args:
        watch_parent: also stop when the process that started the agent is gone (the host's
            local device: a host killed with -9 must not leave its agent behind).
    """
    server, port, service = build_server(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if watch_parent:
        threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), stop), daemon=True).start()
    print(f"{READY_PREFIX}{config.host}:{port}", flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    service.close()
    sys.stdout.flush()
    return 0
