"""Reading flatbuffers without generated code: tables, vectors, strings and scalars by field
index, for the two small schemas the agent reads (ExecuTorch programs and ETDump)."""

from __future__ import annotations

import struct


class FlatBuffer:
    """Field access on a little-endian flatbuffer; positions are absolute offsets."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def field(self, table: int, index: int) -> int:
        """Absolute position of a table's field `index`, or 0 when absent."""
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        vt_size = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_size:
            return 0
        offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + offset if offset else 0

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def table(self, table: int, index: int) -> int:
        pos = self.field(table, index)
        return self.deref(pos) if pos else 0

    def vector(self, table: int, index: int) -> list[int]:
        """Positions of the tables a vector-of-tables field points at."""
        pos = self.field(table, index)
        if not pos:
            return []
        vec = self.deref(pos)
        return [self.deref(vec + 4 + 4 * i) for i in range(self.u32(vec))]

    def string(self, table: int, index: int) -> str:
        pos = self.field(table, index)
        if not pos:
            return ""
        s = self.deref(pos)
        return self.data[s + 4 : s + 4 + self.u32(s)].decode("utf-8", "replace")

    def scalar(self, table: int, index: int, fmt: str, default: int) -> int:
        pos = self.field(table, index)
        return struct.unpack_from(fmt, self.data, pos)[0] if pos else default
