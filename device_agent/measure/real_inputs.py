"""Real inputs for the timed loop: a pushed `.npz` of samples, loaded as data and checked.

The file is an `.npz` whose arrays are named after the model's inputs (a one-input model may
also name its array `x`), samples stacked along axis 0: an input of shape (B, d1, d2, ...)
takes arrays of shape (N, d1, d2, ...), N >= B, cut into N // B batches of B. It is loaded with
`allow_pickle=False` (object arrays are refused), its arrays' total size is bounded before any
is read, and each array's dtype and shape are checked against the model's input before the
timed loop; a mismatch is one line naming the input, expected vs given.
"""

from __future__ import annotations

import zipfile

import numpy as np

from device_agent.measure.inputs import concrete_shape, to_model_input
from device_agent.runtimes.base import TensorInfo

MAX_SAMPLES_BYTES = 256 * 1024 * 1024
"""Uncompressed bytes of all arrays together, at most (checked before any array is read)."""


class SamplesError(ValueError):
    """The samples file does not fit the model's inputs (or is not a plain-data .npz)."""


def load_samples(path: str, specs: list[TensorInfo]) -> list[list[np.ndarray]]:
    """Returns one list of input arrays per batch, in the model's input order and dtypes.

    Raises:
        SamplesError: not an .npz of plain arrays, too large, an input missing, or an array
            whose dtype or shape does not fit its input (named).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise SamplesError(f"inputs file: not an .npz archive: {exc}") from None
    if total > MAX_SAMPLES_BYTES:
        raise SamplesError(f"inputs file: {total} bytes of arrays, more than the "
                           f"{MAX_SAMPLES_BYTES} allowed")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise SamplesError(f"inputs file: only plain arrays are read ({exc})") from None
    per_input = [_array_for(spec, arrays, len(specs)) for spec in specs]
    batches = min(n for _, n in per_input)
    return [[to_model_input(array[i * batch:(i + 1) * batch], spec)
             for spec, (array, _), batch in zip(specs, per_input,
                                                (concrete_shape(s)[0] for s in specs))]
            for i in range(batches)]


def _array_for(spec: TensorInfo, arrays: dict, n_inputs: int) -> tuple[np.ndarray, int]:
    """The array for one input and how many batches it holds; SamplesError when it does not fit."""
    name = spec.name
    array = arrays.get(name)
    if array is None and n_inputs == 1 and len(arrays) == 1:
        array = next(iter(arrays.values()))
    elif array is None and n_inputs == 1:
        array = arrays.get("x")
    shape = concrete_shape(spec)
    expected = f"{np.dtype(spec.dtype).name} (N, {', '.join(_dim(d) for d in spec.shape[1:])})"
    if array is None:
        raise SamplesError(f"inputs file: input {name!r}: expected an array named {name!r} of "
                           f"{expected}, the file has {', '.join(sorted(arrays)) or 'none'}")
    dtype = np.dtype(spec.dtype)
    dtype_ok = array.dtype == dtype or (spec.quantized and array.dtype.kind == "f")
    dims_ok = array.ndim == len(shape) and all(
        d < 0 or d == g for d, g in zip(spec.shape[1:], array.shape[1:]))
    if not (dtype_ok and dims_ok and len(array) >= shape[0]):
        raise SamplesError(f"inputs file: input {name!r}: expected {expected}, given "
                           f"{array.dtype.name} {tuple(array.shape)}")
    return array, len(array) // shape[0]


def _dim(d: int) -> str:
    return "?" if d < 0 else str(d)
