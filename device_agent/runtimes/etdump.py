"""A small reader of ExecuTorch's ETDump (profiling) flatbuffers: the profile events only.

executorch's own reader (`executorch.devtools.etdump.serialize`) shells out to `flatc` and
imports the exporter stack (several seconds, a compiler binary on the device); the agent needs
only the profile events' names and times, read here straight from the buffer following
`executorch/devtools/etdump/etdump_schema_flatcc.fbs` (file identifier ``ED00``):

    ETDump { version: uint; run_data: [RunData] }
    RunData { name; bundled_input_index; allocators; events: [Event] }
    Event { profile_event: ProfileEvent; allocation_event; debug_event }
    ProfileEvent { name: string; chain_index: int; instruction_id: int = -1;
                   delegate_debug_id_int: int = -1; delegate_debug_id_str: string;
                   delegate_debug_metadata: [ubyte]; start_time: ulong; end_time: ulong }
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from device_agent.runtimes.flatbuf import FlatBuffer

FILE_IDENTIFIER = b"ED00"


class ETDumpError(ValueError):
    """The buffer is not an ETDump this reader understands."""


@dataclass(frozen=True)
class ProfileEvent:
    """One profiled span: an operator, a delegate call, or a delegate's own op.

    `start`/`end` are in the runtime's ticks (nanoseconds on Linux's default platform layer).
    """

    name: str
    chain_index: int
    instruction_id: int
    delegate_debug_id_int: int
    delegate_debug_id_str: str
    start: int
    end: int

    @property
    def in_delegate(self) -> bool:
        """Whether the event was logged by a delegate (XNNPACK) for one of its own ops."""
        return bool(self.delegate_debug_id_str) or self.delegate_debug_id_int >= 0


def profile_events(data: bytes) -> list[ProfileEvent]:
    """The profile events of every run in an ETDump buffer (size-prefixed or not), in order.

    Raises:
        ETDumpError: no ``ED00`` identifier where a (size-prefixed) ETDump has it, or the
            offsets point outside the buffer.
    """
    base = _root_base(data)
    if base is None:
        raise ETDumpError("not an ETDump buffer (no ED00 file identifier)")
    buf = FlatBuffer(data[base:])
    try:
        root = buf.deref(0)
        events = []
        for run in buf.vector(root, 1):
            for event in buf.vector(run, 3):
                pe = buf.table(event, 0)
                if pe:
                    events.append(_profile_event(buf, pe))
        return events
    except (struct.error, IndexError) as exc:
        raise ETDumpError(f"malformed ETDump: {exc}") from None


def _root_base(data: bytes) -> Optional[int]:
    if len(data) >= 12 and data[8:12] == FILE_IDENTIFIER:
        return 4  # size-prefixed (what the runtime writes)
    if len(data) >= 8 and data[4:8] == FILE_IDENTIFIER:
        return 0
    return None


def _profile_event(buf: FlatBuffer, pe: int) -> ProfileEvent:
    return ProfileEvent(
        name=buf.string(pe, 0),
        chain_index=buf.scalar(pe, 1, "<i", 0),
        instruction_id=buf.scalar(pe, 2, "<i", -1),
        delegate_debug_id_int=buf.scalar(pe, 3, "<i", -1),
        delegate_debug_id_str=buf.string(pe, 4),
        start=buf.scalar(pe, 6, "<Q", 0),
        end=buf.scalar(pe, 7, "<Q", 0),
    )
