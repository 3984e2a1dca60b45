"""Inspects a torch.export `.pt2` archive before torch sees it: models are data, never code.

`torch.export.load` (torch 2.13) can be made to run code by the archive's own contents:

- a weight or tensor constant whose payload config says ``use_pickle: true`` is read with
  ``torch.load(..., weights_only=False)``, i.e. a full unpickle;
- ``opaque_obj_*`` constants go through ``pickle.loads`` and ``custom_obj_*`` (torchbind)
  through torch's own unpickler;
- the sample inputs (``data/sample_inputs/<model>.pt``), legacy weight files and the pre-2.8
  archive layout go through ``deserialize_torch_artifact``, which retries a failed
  ``weights_only=True`` load with ``weights_only=False``;
- symbolic shape expressions (``expr_str``) are parsed with ``sympy.sympify``, which evaluates
  Python; ``guards_code`` is ``exec``-ed when the program is turned into a module;
- a graph node's ``target`` is resolved by ``getattr`` from ``torch``/``math``/``operator``
  and any callable is accepted (``torch.os.system`` is one);
- ``data/aotinductor/`` holds compiled shared libraries that are ``dlopen``-ed.

This module reads the archive with zipfile + json only (no torch import) and accepts exactly the
layout `torch.export.save` writes for a plain program: raw tensor payloads, JSON configs, and a
sample-inputs pickle whose opcodes only rebuild tensors. Anything else raises UnsafeModelError
naming the member and why. The torch runtime also forces ``weights_only`` for every torch.load
it makes (see `torch_pt2.py`), so a pickle this check missed still cannot run code.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import tokenize
import zipfile
from collections.abc import Iterator
from typing import Any

from device_agent.runtimes.base import UnsafeModelError

__all__ = ["UnsafeModelError", "check_pt2"]

MAX_JSON_BYTES = 256 * 2**20
"""Largest JSON member read for inspection (a graph of a very large model is tens of MB)."""

# Members torch.export.save writes outside data/ and models/ (never unpickled).
_PLAIN_MEMBERS = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    ".format_version",
    ".storage_alignment",
}
_RAW_PAYLOAD = re.compile(r"^data/(weights/weight|constants/tensor)_\d+$")
_MODEL_JSON = re.compile(r"^models/(\w+)\.json$")
_WEIGHTS_CONFIG = re.compile(r"^data/weights/(\w+)_weights_config\.json$")
_CONSTANTS_CONFIG = re.compile(r"^data/constants/(\w+)_constants_config\.json$")
_SAMPLE_INPUTS = re.compile(r"^data/sample_inputs/(\w+)\.pt$")
_EXTRA = re.compile(r"^extra/[^/]+$")  # extra files: read by torch as text, never executed

# Graph targets torch resolves to callables. Only operator overloads from these namespaces,
# the higher-order ops a plain export emits and the symbolic-shape helpers are accepted.
_OP_NAMESPACES = ("aten", "prims", "quantized_decomposed")
_DENIED_ATEN = {"from_file"}  # reads a path named in the graph
_HIGHER_ORDER = {
    "cond",
    "while_loop",
    "map_impl",
    "scan",
    "wrap_with_set_grad_enabled",
    "wrap_with_autocast",
    "auto_functionalized",
    "auto_functionalized_v2",
    "invoke_subgraph",
}
_OPERATOR_FUNCS = {
    "getitem", "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub",
    "floordiv", "mod", "pow", "truediv", "and_", "or_", "lshift", "rshift", "not_",
}  # fmt: skip
_MATH_FUNCS = {"trunc", "floor", "ceil", "sqrt"}
_TORCH_FUNCS = {
    "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt",
    "sym_sum", "_assert", "_check", "_check_is_size",
}  # fmt: skip
_OP_NAME = re.compile(r"^torch\.ops\.(\w+)\.(\w+)(?:\.(\w+))?$")

# Names a symbolic expression (sympy) or guard may use: torch's sympy functions, sympy's
# constructors and assumptions. No dots, no dunder names: nothing reaches builtins.
_SYMPY_NAMES = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Symbol", "Integer", "Rational",
    "Float", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "Piecewise", "Pow", "Mul", "Add", "True", "False", "oo", "int_oo", "nan", "zoo", "sqrt",
    "floor", "ceiling", "positive", "negative", "nonnegative", "nonpositive", "integer",
    "real", "finite", "infinite", "zero", "nonzero", "even", "odd", "and", "or", "not",
}  # fmt: skip
_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")  # s0, u3, zuf1: the names torch gives symbols
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "numel"}
_EXPR_OPS = {
    "(", ")", ",", "+", "-", "*", "/", "//", "%", "**", "=", "==", "!=", "<", "<=", ">",
    ">=", "&", "|", "~",
}  # fmt: skip

# What the sample-inputs pickle may name: torch.save of tensors in tuples/dicts.
_STORAGES = {
    f"{t}Storage"
    for t in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    )
}  # fmt: skip
_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "device"),
} | {("torch", s) for s in _STORAGES}
_PICKLE_DENIED_OPS = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"}
_TORCH_ZIP_PLAIN = re.compile(
    r"^(data/\d+|version|byteorder|\.format_version|\.storage_alignment|\.data/version"
    r"|\.data/serialization_id)$"
)


def check_pt2(path: str) -> None:
    """Raises UnsafeModelError unless `path` is a `.pt2` archive that loads without code.

    Args:
        path: the archive on this device.

    Raises:
        UnsafeModelError: names the member and what in it could run code (or was unexpected).
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a .pt2 archive (zip): {exc}") from None
    with archive:
        members = _members(archive, "archive")
        for name, info in members.items():
            _check_member(archive, name, info, members)


def _members(archive: zipfile.ZipFile, what: str) -> dict[str, zipfile.ZipInfo]:
    """Member name (under the one root folder) -> ZipInfo; refuses odd layouts."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UnsafeModelError(f"{dup}: duplicated member in the {what} (readers may disagree)")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise UnsafeModelError(f"{what} members are not under one root folder: {sorted(roots)}")
    out = {}
    for info in infos:
        rel = info.filename.split("/", 1)[1]
        if ".." in rel.split("/") or rel.startswith("/") or "\\" in rel:
            raise UnsafeModelError(f"{info.filename}: member path escapes the {what}")
        out[rel] = info
    return out


def _check_member(
    archive: zipfile.ZipFile, name: str, info: zipfile.ZipInfo, members: dict
) -> None:
    if name in _PLAIN_MEMBERS or _RAW_PAYLOAD.match(name) or _EXTRA.match(name):
        return
    if m := _MODEL_JSON.match(name):
        _check_program(name, _read_json(archive, info, name))
        for config in (
            f"data/weights/{m.group(1)}_weights_config.json",
            f"data/constants/{m.group(1)}_constants_config.json",
        ):
            if config not in members:
                raise UnsafeModelError(f"{config}: missing (a legacy pickled layout?)")
        return
    if _WEIGHTS_CONFIG.match(name) or _CONSTANTS_CONFIG.match(name):
        _check_payload_config(name, _read_json(archive, info, name))
        return
    if _SAMPLE_INPUTS.match(name):
        _check_torch_zip(name, archive.read(info))
        return
    raise UnsafeModelError(
        f"{name}: unexpected member (only the plain torch.export.save layout is accepted; "
        "compiled AOTInductor libraries, pickled legacy files and custom objects are refused)"
    )


def _read_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Any:
    if info.file_size > MAX_JSON_BYTES:
        raise UnsafeModelError(f"{name}: {info.file_size} bytes of JSON is more than accepted")
    try:
        return json.loads(archive.read(info))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsafeModelError(f"{name}: not valid JSON ({exc})") from None


def _check_payload_config(name: str, config: Any) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeModelError(f"{name}: expected {{'config': {{...}}}}")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise UnsafeModelError(f"{name}: entry {fqn!r} is not an object")
        if meta.get("use_pickle"):
            raise UnsafeModelError(
                f"{name}: {fqn!r} is marked use_pickle (its payload "
                f"{meta.get('path_name')!r} would be unpickled, which can run code)"
            )
        path_name = str(meta.get("path_name", ""))
        if not re.fullmatch(r"(weight|tensor)_\d+", path_name):
            raise UnsafeModelError(
                f"{name}: {fqn!r} points at payload {path_name!r}, not a raw tensor "
                "(custom and opaque objects are unpickled)"
            )


def _check_program(name: str, program: Any) -> None:
    if not isinstance(program, dict):
        raise UnsafeModelError(f"{name}: expected a JSON object")
    guards = program.get("guards_code") or []
    if not isinstance(guards, list):
        raise UnsafeModelError(f"{name}: guards_code is not a list")
    for guard in guards:
        _check_expression(name, "guards_code", guard, guard=True)
    for key, value in _walk(program):
        if key == "expr_str":
            _check_expression(name, key, value, guard=False)
        elif key in ("target", "as_operator") and isinstance(value, str):
            if not _allowed_target(value):
                raise UnsafeModelError(
                    f"{name}: graph calls {value!r}, which is not a torch operator this agent "
                    f"runs (allowed: torch.ops.{{{','.join(_OP_NAMESPACES)}}}.*, "
                    "standard higher-order ops and symbolic-shape helpers)"
                )


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                yield k, v
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _allowed_target(target: str) -> bool:
    if m := _OP_NAME.match(target):
        namespace, op = m.group(1), m.group(2)
        if namespace == "higher_order":
            return op in _HIGHER_ORDER and m.group(3) is None
        return namespace in _OP_NAMESPACES and not (
            namespace == "aten" and op.lstrip("_") in _DENIED_ATEN
        )
    module, _, func = target.partition(".")
    return (
        (module == "_operator" and func in _OPERATOR_FUNCS)
        or (module == "math" and func in _MATH_FUNCS)
        or (module == "torch" and func in _TORCH_FUNCS)
    )


def _check_expression(name: str, key: str, text: Any, guard: bool) -> None:
    """Symbolic expressions are eval-ed by sympy and guards exec-ed by torch: accept only
    literals, operators, symbol names and a fixed set of function names."""
    if not isinstance(text, str) or len(text) > 10_000 or "\n" in text:
        raise UnsafeModelError(f"{name}: {key} value is not a one-line expression")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise UnsafeModelError(f"{name}: {key} {text[:80]!r} does not parse ({exc})") from None
    previous = None
    for tok in tokens:
        kind, value = tok.type, tok.string
        ok = kind in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
        if kind == tokenize.NAME:
            ok = value in _SYMPY_NAMES or bool(_SYMBOL.match(value))
            if guard:
                ok = ok or value == "L" or (previous == "." and value in _GUARD_ATTRS)
        elif kind == tokenize.STRING:
            ok = bool(re.fullmatch(r"'[A-Za-z_]\w{0,63}'", value))
        elif kind == tokenize.OP:
            ok = value in _EXPR_OPS or (guard and value in ("[", "]", "."))
        if not ok:
            raise UnsafeModelError(
                f"{name}: {key} {text[:80]!r} contains {value!r}, which a shape expression "
                "never holds (torch evaluates these strings as Python)"
            )
        previous = value


def _check_torch_zip(name: str, data: bytes) -> None:
    """A torch.save archive nested in the .pt2: its one pickle may only rebuild tensors."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UnsafeModelError(
            f"{name}: not a torch zip archive (a bare pickle would be unpickled)"
        ) from None
    with inner:
        members = _members(inner, name)
        if "data.pkl" not in members:
            raise UnsafeModelError(f"{name}: no data.pkl in the nested torch archive")
        for rel in members:
            if rel != "data.pkl" and not _TORCH_ZIP_PLAIN.match(rel):
                raise UnsafeModelError(f"{name}: unexpected member {rel!r} in the torch archive")
        _check_pickle(f"{name}/data.pkl", inner.read(members["data.pkl"]))


def _check_pickle(name: str, data: bytes) -> None:
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _PICKLE_DENIED_OPS:
                raise UnsafeModelError(f"{name}: pickle opcode {op.name} (can build any object)")
            if op.name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in _PICKLE_GLOBALS:
                    raise UnsafeModelError(
                        f"{name}: pickle names {module}.{attr}, which is not a tensor rebuild "
                        "function (unpickling it could run code)"
                    )
    except UnsafeModelError:
        raise
    except Exception as exc:  # pickletools raises ValueError and others on malformed input
        raise UnsafeModelError(f"{name}: unreadable pickle ({exc})") from None
