"""The wire contract shared by the host and the agent.

`edgeloop.proto` is the source; `edgeloop_pb2*.py` are generated from it by
`python -m device_agent.protocol.generate` and never edited by hand.
"""

PROTOCOL_VERSION = 1
"""Bumped on any change an older peer could not read; checked by the host in GetInfo."""

PACKAGE = "edgeloop.v1"
