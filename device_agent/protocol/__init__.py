"""The wire contract shared by the host and the agent.

`edgeloop.proto` is the source; `edgeloop_pb2*.py` are generated from it by
`python -m device_agent.protocol.generate` and never edited by hand.
"""

PROTOCOL_VERSION = 1
"""Bumped on any change an older peer could not read; checked by the host in GetInfo."""

PACKAGE = "edgeloop.v1"

ERROR_KIND_METADATA = "edgeloop-error-kind"
"""Trailing-metadata key of a failed call: the `ErrorKind` name the agent diagnosed (e.g.
``ERROR_KIND_UNSAFE_MODEL``), so the host ranks failures by kind, never by message text."""
