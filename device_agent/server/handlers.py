"""Registers the agent's RPCs on a gRPC server.

As the generated `add_DeviceAgentServicer_to_server` does, with one change: PushModel's
chunks are parsed by `device_agent.protocol.chunks.parse_chunk`, whose `data` is a view of
the received message rather than a copy of it (`ModelChunk.FromString` copies the data into
protobuf's arena and `.data` copies it out again: two passes over every pushed byte, each
into freshly faulted memory).
"""

from __future__ import annotations

import grpc

from device_agent.protocol import edgeloop_pb2 as pb
from device_agent.protocol import edgeloop_pb2_grpc as rpc
from device_agent.protocol.chunks import parse_chunk

SERVICE = pb.DESCRIPTOR.services_by_name["DeviceAgent"].full_name


class _Recorder:
    """Stands in for a server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers.update(handlers)


def add_agent_service(service, server) -> None:
    """Registers `service` (a DeviceAgentServicer) on `server`."""
    recorder = _Recorder()
    rpc.add_DeviceAgentServicer_to_server(service, recorder)
    handlers = dict(recorder.handlers)
    handlers["PushModel"] = grpc.stream_unary_rpc_method_handler(
        service.PushModel,
        request_deserializer=parse_chunk,
        response_serializer=handlers["PushModel"].response_serializer,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
