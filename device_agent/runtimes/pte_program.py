"""What an ExecuTorch program (.pte) calls, read from its flatbuffer (`schema/program.fbs`):
the instructions of each chain, each a kernel call (an operator by name) or a delegate call
(a backend payload by id, e.g. ``XnnpackBackend``)."""

from __future__ import annotations

import struct
from collections import Counter

from device_agent.runtimes.flatbuf import FlatBuffer

# Program: version 0, execution_plan 1; ExecutionPlan: chains 5, operators 6, delegates 7;
# Chain: instructions 2; Instruction: instr_args_type 0 (union tag), instr_args 1;
# KernelCall / DelegateCall: op_index / delegate_index 0; Operator: name 0, overload 1;
# BackendDelegate: id 0.
_KERNEL_CALL, _DELEGATE_CALL = 1, 2


class ProgramError(ValueError):
    """The bytes are not an ExecuTorch program this reader understands."""


def program_calls(data: bytes) -> dict[str, int]:
    """Call name -> count over every instruction of every method: ``aten::convolution.out``
    for a kernel, ``delegate:XnnpackBackend`` for a delegate call.

    Raises:
        ProgramError: no ``ET`` file identifier, or offsets outside the buffer.
    """
    if len(data) < 8 or data[4:6] != b"ET":
        raise ProgramError("not an ExecuTorch program (no ET file identifier)")
    buf = FlatBuffer(data)
    counts: Counter = Counter()
    try:
        root = buf.deref(0)
        for plan in buf.vector(root, 1):
            operators = [_operator_name(buf, op) for op in buf.vector(plan, 6)]
            delegates = [buf.string(d, 0) for d in buf.vector(plan, 7)]
            for chain in buf.vector(plan, 5):
                for instruction in buf.vector(chain, 2):
                    kind = buf.scalar(instruction, 0, "<B", 0)
                    args = buf.table(instruction, 1)
                    index = buf.scalar(args, 0, "<i", 0) if args else -1  # 0 is the default: absent
                    if kind == _KERNEL_CALL and 0 <= index < len(operators):
                        counts[operators[index]] += 1
                    elif kind == _DELEGATE_CALL and 0 <= index < len(delegates):
                        counts[f"delegate:{delegates[index]}"] += 1
    except (struct.error, IndexError) as exc:
        raise ProgramError(f"malformed ExecuTorch program: {exc}") from None
    return dict(counts)


def _operator_name(buf: FlatBuffer, op: int) -> str:
    name, overload = buf.string(op, 0), buf.string(op, 1)
    return f"{name}.{overload}" if overload else name
