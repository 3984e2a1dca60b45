"""`load_dataset(spec)`: the bundled `digits`, a `.npz` with `x`/`y`, or `module:function`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from toolkit.data.dataset import Dataset
from toolkit.errors import ConfigError, SetupError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_dataset(spec: Union[str, Path, Dataset]) -> Dataset:
    """Loads a dataset by name, file or callable.

    Args:
        spec: `digits` (scikit-learn's 8x8 digits, scaled to [0, 1], shape 1x8x8, a fixed
            seeded 80/20 split); `digits-32` (the same images and split, bilinearly upsampled
            to 1x32x32, the input size of a mobile CNN); `digits-32-rgb` (`digits-32` with its
            one channel replicated to three: 3x32x32, the input of the zoo's image CNNs);
            a `.npz` file with `x` and `y`
            (and optionally `x_test`, `y_test`; otherwise split 80/20 with seed 0); `y` may
            be integer labels of any shape (classes, N x H x W masks, N x T token ids) or
            float targets (regression, denoising: kept float32);
            `file.py:function` or `module:function` returning a DataLoader (split 80/20), a
            pair of DataLoaders (train, test) or a `Dataset`; or a `Dataset`, returned unchanged.

    Raises:
        ConfigError: unknown name, missing file or key, or a callable returning something else.
    """
    if isinstance(spec, Dataset):
        return spec
    text = str(spec)
    if text == "digits":
        return _digits()
    if text == "digits-32":
        return _digits_32()
    if text == "digits-32-rgb":
        return _digits_32_rgb()
    if text.endswith(".npz"):
        return _npz(Path(text).expanduser())
    if ":" in text:
        return _from_callable(text)
    raise ConfigError(
        f"dataset {text!r}: expected 'digits', 'digits-32', 'digits-32-rgb', a .npz file with x "
        "and y, or 'module:function'"
    )


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", x, bunch.target.astype(np.int64))


def _digits_32() -> Dataset:
    """`digits` upsampled 8x8 → 32x32 (bilinear, half-pixel centres); same samples, same split."""
    small = _digits()
    data = [
        torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        for x in (small.train_x, small.test_x)
    ]
    return Dataset(name="digits-32", train_x=data[0].contiguous(), train_y=small.train_y,
                   test_x=data[1].contiguous(), test_y=small.test_y,
                   num_classes=small.num_classes, input_shape=(1, 32, 32))


def _digits_32_rgb() -> Dataset:
    """`digits-32` with the grey channel replicated to three (3x32x32); same split."""
    grey = _digits_32()
    return Dataset(name="digits-32-rgb", train_x=grey.train_x.repeat(1, 3, 1, 1),
                   train_y=grey.train_y, test_x=grey.test_x.repeat(1, 3, 1, 1),
                   test_y=grey.test_y, num_classes=grey.num_classes, input_shape=(3, 32, 32))


def _npz(path: Path) -> Dataset:
    if not path.is_file():
        raise ConfigError(f"dataset {path}: file does not exist")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key in ("x", "y"):
        if key not in arrays:
            raise ConfigError(
                f"dataset {path}: missing array {key!r} (has {sorted(arrays)}); "
                "expected x (inputs) and y (integer labels)"
            )
    x, y = arrays["x"].astype(np.float32), _targets(arrays["y"])
    if len(x) != len(y):
        raise ConfigError(f"dataset {path}: x has {len(x)} samples but y has {len(y)}")
    if "x_test" in arrays and "y_test" in arrays:
        return _make(str(path), x, y, arrays["x_test"].astype(np.float32),
                     _targets(arrays["y_test"]))
    return _split(str(path), x, y)


def _targets(values: np.ndarray) -> np.ndarray:
    """Float targets (regression, denoising) stay float32; anything else is int64 labels."""
    values = np.asarray(values)
    return values.astype(np.float32 if np.issubdtype(values.dtype, np.floating) else np.int64)


def _from_callable(spec: str) -> Dataset:
    from toolkit.models.user import resolve_callable

    try:
        fn = resolve_callable(spec, "dataset")
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        result: Any = fn()
    except Exception as exc:  # noqa: BLE001 - the user's function failed
        from toolkit.models.checks import raised

        raise SetupError(f"dataset {spec!r}: {spec} raised {raised(exc)}") from None
    if isinstance(result, Dataset):
        return result
    if isinstance(result, DataLoader):
        x, y = _drain(result)
        return _split(spec, x, y)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        (x, y), (tx, ty) = _drain(result[0]), _drain(result[1])
        return _make(spec, x, y, tx, ty)
    raise ConfigError(
        f"dataset {spec!r}: expected the function to return a DataLoader, "
        f"a (train, test) pair of DataLoaders or a Dataset, got {type(result).__name__}"
    )


def _drain(loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for batch in loader:
        xs.append(torch.as_tensor(batch[0]).float().numpy())
        ys.append(_targets(torch.as_tensor(batch[1]).numpy()))
    return np.concatenate(xs), np.concatenate(ys)


def _split(name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = max(1, int(round(len(x) * TEST_FRACTION)))
    test, train = order[:n_test], order[n_test:]
    return _make(name, x[train], y[train], x[test], y[test])


def _make(name: str, x: np.ndarray, y: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> Dataset:
    labels = not np.issubdtype(y.dtype, np.floating)
    num_classes = int(max(y.max(initial=0), ty.max(initial=0))) + 1 if labels else 0
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(x)),
        train_y=torch.from_numpy(np.ascontiguousarray(y)),
        test_x=torch.from_numpy(np.ascontiguousarray(tx)),
        test_y=torch.from_numpy(np.ascontiguousarray(ty)),
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
    )
